package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Format is a rule file format.
type Format int

// The rule file formats. Both carry the same fields; see fileRule.
const (
	FormatJSON Format = iota + 1
	FormatTOML
)

func (f Format) String() string {
	switch f {
	case FormatJSON:
		return "json"
	case FormatTOML:
		return "toml"
	}
	return "format-" + strconv.Itoa(int(f))
}

// fileVersion is the version of the rule file format written by Export.
const fileVersion = 1

// maxImportSize bounds what Import reads; rule files are untrusted.
const maxImportSize = 64 << 20

// fileRule is one rule as written in a rule file. Every field but action
// is optional; an absent operand matches anything.
//
//	id         rule ID (the rules service assigns one when empty)
//	enabled    true or false (default true)
//	action     "allow", "deny" or "reject"
//	exe        executable: absolute path or glob
//	any_mount_ns true: exe (an exact host path) also matches processes in
//	           other mount namespaces (containers, Flatpak, Snap) that run
//	           that very file (same device and inode)
//	exe_sha256 lower-case hex SHA-256 of the executable
//	cmdline    RE2 expression matching the whole command line
//	dst        address "192.0.2.1" or prefix "192.0.2.0/24"
//	ports      "443" or "8000-8999"
//	protocol   "tcp", "udp", "icmp" or "icmpv6"
//	host       "example.com" or "*.example.com"
//	lifetime   "forever" (default), "session", "once" or "duration"
//	expires    RFC 3339 time, for lifetime "duration"
//	created    RFC 3339 time
//	hits       how many connections the rule decided
//	last_hit   RFC 3339 time
//	note       free text
type fileRule struct {
	ID         string  `json:"id,omitempty" toml:"id,omitempty"`
	Enabled    *bool   `json:"enabled,omitempty" toml:"enabled,omitempty"`
	Action     string  `json:"action" toml:"action"`
	Exe        string  `json:"exe,omitempty" toml:"exe,omitempty"`
	AnyMountNS bool    `json:"any_mount_ns,omitempty" toml:"any_mount_ns,omitempty"`
	ExeSHA256  string  `json:"exe_sha256,omitempty" toml:"exe_sha256,omitempty"`
	Cmdline    string  `json:"cmdline,omitempty" toml:"cmdline,omitempty"`
	Dst        string  `json:"dst,omitempty" toml:"dst,omitempty"`
	Ports      string  `json:"ports,omitempty" toml:"ports,omitempty"`
	Protocol   string  `json:"protocol,omitempty" toml:"protocol,omitempty"`
	Host       string  `json:"host,omitempty" toml:"host,omitempty"`
	Lifetime   string  `json:"lifetime,omitempty" toml:"lifetime,omitempty"`
	Expires    string  `json:"expires,omitempty" toml:"expires,omitempty"`
	Created    string  `json:"created,omitempty" toml:"created,omitempty"`
	Hits       *uint64 `json:"hits,omitempty" toml:"hits,omitempty"`
	LastHit    string  `json:"last_hit,omitempty" toml:"last_hit,omitempty"`
	Note       string  `json:"note,omitempty" toml:"note,omitempty"`
}

type jsonFile struct {
	Version int        `json:"version"`
	Rules   []fileRule `json:"rules"`
}

type tomlFile struct {
	Version int        `toml:"version"`
	Rules   []fileRule `toml:"rule"`
}

// Export writes rs as a rule file. Times are written in UTC with
// nanoseconds, so Import(Export(rs)) returns rs exactly when rs's times are
// UTC without a monotonic reading. Every rule must validate.
func Export(rs []Rule, f Format) ([]byte, error) {
	frs := make([]fileRule, len(rs))
	for i, r := range rs {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("export rule %d (id %q): %w", i, r.ID, err)
		}
		frs[i] = toFile(r)
	}
	switch f {
	case FormatJSON:
		b, err := json.MarshalIndent(jsonFile{Version: fileVersion, Rules: frs}, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("export json: %w", err)
		}
		return append(b, '\n'), nil
	case FormatTOML:
		var buf bytes.Buffer
		buf.WriteString("# Bastion rules\n")
		enc := toml.NewEncoder(&buf)
		enc.Indent = ""
		if err := enc.Encode(tomlFile{Version: fileVersion, Rules: frs}); err != nil {
			return nil, fmt.Errorf("export toml: %w", err)
		}
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("export: unknown format %d", int(f))
}

func toFile(r Rule) fileRule {
	enabled := r.Enabled
	fr := fileRule{
		ID:         r.ID,
		Enabled:    &enabled,
		Action:     r.Action.String(),
		Exe:        r.Exe,
		ExeSHA256:  r.ExeSHA256,
		AnyMountNS: r.AnyMountNS,
		Cmdline:    r.Cmdline,
		Dst:        formatDst(r.Dst),
		Ports:      formatPorts(r.PortMin, r.PortMax),
		Host:       r.Host,
		Lifetime:   r.Lifetime.String(),
		Expires:    formatTime(r.Expires),
		Created:    formatTime(r.Created),
		LastHit:    formatTime(r.LastHit),
		Note:       r.Note,
	}
	if r.Proto != 0 {
		fr.Protocol = r.Proto.String()
	}
	if r.Hits != 0 {
		h := r.Hits
		fr.Hits = &h
	}
	return fr
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func formatPorts(lo, hi uint16) string {
	switch {
	case lo == 0 && hi == 0:
		return ""
	case lo == hi:
		return strconv.Itoa(int(lo))
	}
	return strconv.Itoa(int(lo)) + "-" + strconv.Itoa(int(hi))
}

// Import reads a rule file written by Export or by hand. The file is
// untrusted: unknown fields, a wrong version, a rule that does not
// validate or a duplicate ID fail the whole import with an error naming
// the position or the rule and field.
func Import(data []byte, f Format) ([]Rule, error) {
	if len(data) > maxImportSize {
		return nil, fmt.Errorf("import: file is larger than %d bytes", maxImportSize)
	}
	var version int
	var frs []fileRule
	switch f {
	case FormatJSON:
		var jf jsonFile
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&jf); err != nil {
			return nil, fmt.Errorf("import json: %w", jsonPosError(data, dec.InputOffset(), err))
		}
		if _, err := dec.Token(); err == nil {
			return nil, fmt.Errorf("import json: %s: data after the top-level object", offsetPos(data, dec.InputOffset()))
		}
		version, frs = jf.Version, jf.Rules
	case FormatTOML:
		var tf tomlFile
		md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&tf)
		if err != nil {
			return nil, fmt.Errorf("import toml: %w", err)
		}
		if und := md.Undecoded(); len(und) > 0 {
			keys := make([]string, len(und))
			for i, k := range und {
				keys[i] = k.String()
			}
			return nil, fmt.Errorf("import toml: unknown keys: %s", strings.Join(keys, ", "))
		}
		version, frs = tf.Version, tf.Rules
	default:
		return nil, fmt.Errorf("import: unknown format %d", int(f))
	}
	if version != fileVersion {
		return nil, fmt.Errorf("import %s: version %d, want %d", f, version, fileVersion)
	}
	rs := make([]Rule, 0, len(frs))
	ids := make(map[string]int)
	for i, fr := range frs {
		r, err := fromFile(fr)
		if err != nil {
			return nil, fmt.Errorf("import %s: rule %d (id %q): %w", f, i+1, fr.ID, err)
		}
		if r.ID != "" {
			if j, dup := ids[r.ID]; dup {
				return nil, fmt.Errorf("import %s: rule %d: id %q is also rule %d's", f, i+1, r.ID, j)
			}
			ids[r.ID] = i + 1
		}
		rs = append(rs, r)
	}
	return rs, nil
}

func fromFile(fr fileRule) (Rule, error) {
	r := Rule{
		ID:         fr.ID,
		Enabled:    fr.Enabled == nil || *fr.Enabled,
		Exe:        fr.Exe,
		ExeSHA256:  fr.ExeSHA256,
		AnyMountNS: fr.AnyMountNS,
		Cmdline:    fr.Cmdline,
		Host:       fr.Host,
		Lifetime:   Forever,
		Note:       fr.Note,
	}
	var err error
	if fr.Action == "" {
		return Rule{}, errors.New("action: missing (want allow, deny or reject)")
	}
	if r.Action, err = flow.ParseAction(fr.Action); err != nil {
		return Rule{}, fmt.Errorf("action: %w", err)
	}
	if fr.Lifetime != "" {
		if r.Lifetime, err = ParseLifetime(fr.Lifetime); err != nil {
			return Rule{}, fmt.Errorf("lifetime: %w", err)
		}
	}
	if r.Dst, err = parseDst(fr.Dst); err != nil {
		return Rule{}, fmt.Errorf("dst: %w", err)
	}
	if r.PortMin, r.PortMax, err = parsePorts(fr.Ports); err != nil {
		return Rule{}, fmt.Errorf("ports: %w", err)
	}
	if fr.Protocol != "" {
		if r.Proto, err = flow.ParseProto(fr.Protocol); err != nil {
			return Rule{}, fmt.Errorf("protocol: %w", err)
		}
	}
	if fr.Hits != nil {
		r.Hits = *fr.Hits
	}
	for _, t := range []struct {
		name string
		s    string
		dst  *time.Time
	}{{"expires", fr.Expires, &r.Expires}, {"created", fr.Created, &r.Created}, {"last_hit", fr.LastHit, &r.LastHit}} {
		if t.s == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339Nano, t.s)
		if err != nil {
			return Rule{}, fmt.Errorf("%s: %w", t.name, err)
		}
		*t.dst = v.UTC()
	}
	if err := r.Validate(); err != nil {
		return Rule{}, err
	}
	return r, nil
}

// parsePorts parses "", "443" or "8000-8999".
func parsePorts(s string) (lo, hi uint16, err error) {
	if s == "" {
		return 0, 0, nil
	}
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = parsePort(a); err != nil {
		return 0, 0, err
	}
	if !isRange {
		return lo, lo, nil
	}
	if hi, err = parsePort(b); err != nil {
		return 0, 0, err
	}
	if lo > hi {
		return 0, 0, fmt.Errorf("%q: range runs backwards", s)
	}
	return lo, hi, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q: want a number 1-65535", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("port %q: want a number 1-65535", s)
	}
	return uint16(n), nil
}

// jsonPosError adds a line and column to a decoding error; off is where
// the decoder stopped, or -1 when unknown.
func jsonPosError(data []byte, off int64, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		// Offset counts the offending byte as read.
		return fmt.Errorf("%s: %w", offsetPos(data, se.Offset-1), err)
	case errors.As(err, &te):
		return fmt.Errorf("%s: field %q: %w", offsetPos(data, te.Offset), te.Field, err)
	}
	if off < 0 {
		return err
	}
	return fmt.Errorf("%s: %w", offsetPos(data, off), err)
}

func offsetPos(data []byte, off int64) string {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return fmt.Sprintf("line %d, column %d", line, col)
}
