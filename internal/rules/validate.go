package rules

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp/syntax"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Limits on operand sizes. Rule files are untrusted, and a rule is compiled
// into every Matcher; these bound what one rule can cost.
const (
	maxIDLen      = 128
	maxPathLen    = 4096
	maxCmdlineLen = 4096
	maxNoteLen    = 4096
	maxHostLen    = 253
)

// Validate reports the first thing wrong with r, naming the field. A rule
// that validates compiles into a Matcher.
func (r Rule) Validate() error {
	_, err := r.validate()
	return err
}

// validate is Validate, returning also what r costs once compiled.
func (r Rule) validate() (Cost, error) {
	var prog *syntax.Prog
	var width int
	if err := r.validateFields(&prog, &width); err != nil {
		return Cost{}, err
	}
	return costOf(r, prog, width), nil
}

// validateFields checks every field; it leaves the compiled Cmdline program
// and its width in prog and width.
func (r Rule) validateFields(prog **syntax.Prog, width *int) error {
	for _, f := range []struct{ name, v string }{
		{"id", r.ID}, {"exe", r.Exe}, {"cmdline", r.Cmdline}, {"host", r.Host}, {"note", r.Note},
	} {
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("%s: not valid UTF-8", f.name)
		}
	}
	if len(r.ID) > maxIDLen {
		return fmt.Errorf("id: longer than %d bytes", maxIDLen)
	}
	if i := strings.IndexFunc(r.ID, func(c rune) bool { return !unicode.IsPrint(c) || c == ' ' }); i >= 0 {
		return fmt.Errorf("id %q: unprintable or space character at byte %d", r.ID, i)
	}
	switch r.Action {
	case flow.ActionAllow, flow.ActionDeny, flow.ActionReject:
	default:
		return fmt.Errorf("action: unknown action %d (want allow, deny or reject)", r.Action)
	}
	switch r.Lifetime {
	case Once, Session, Forever:
		if !r.Expires.IsZero() {
			return fmt.Errorf("expires: set, but lifetime is %s (only a duration rule expires)", r.Lifetime)
		}
	case Duration:
		if r.Expires.IsZero() {
			return errors.New("expires: a duration rule needs an expiry time")
		}
	default:
		return fmt.Errorf("lifetime: unknown lifetime %d (want once, duration, session or forever)", r.Lifetime)
	}
	if err := validateExe(r.Exe); err != nil {
		return fmt.Errorf("exe: %w", err)
	}
	if r.AnyMountNS {
		if _, literal := globLiteral(r.Exe); r.Exe == "" || !literal {
			return errors.New("any_mount_ns: needs an exact exe path (a file on the host), not a glob")
		}
	}
	if len(r.Cmdline) > maxCmdlineLen {
		return fmt.Errorf("cmdline: longer than %d bytes", maxCmdlineLen)
	}
	if r.Cmdline != "" {
		// SECURITY: the expression's size and matching work are bounded
		// (cost.go): the agent that matches it is shared by every user.
		p, w, err := cmdlineProg(r.Cmdline)
		if err != nil {
			return err
		}
		*prog, *width = p, w
	}
	if r.ExeSHA256 != "" && !isSHA256(r.ExeSHA256) {
		return fmt.Errorf("exe_sha256 %q: not 64 lower-case hex digits", r.ExeSHA256)
	}
	if err := validateDst(r.Dst); err != nil {
		return fmt.Errorf("dst: %w", err)
	}
	if r.PortMin > r.PortMax {
		return fmt.Errorf("ports: minimum %d is above maximum %d", r.PortMin, r.PortMax)
	}
	if r.PortMin == 0 && r.PortMax != 0 {
		return fmt.Errorf("ports: range 0-%d starts at 0 (ports run 1-65535; 0-0 means any)", r.PortMax)
	}
	if r.Proto != 0 && !r.Proto.HasPorts() && r.PortMax != 0 {
		return fmt.Errorf("ports: set, but %s has no ports (only tcp, udp, udplite, sctp and dccp have)", r.Proto)
	}
	if r.Host != "" {
		if err := validateHostPattern(r.Host); err != nil {
			return fmt.Errorf("host: %w", err)
		}
	}
	if len(r.Note) > maxNoteLen {
		return fmt.Errorf("note: longer than %d bytes", maxNoteLen)
	}
	// TOML and SQLite integers are signed 64-bit.
	if r.Hits > math.MaxInt64 {
		return fmt.Errorf("hits: %d is above %d", r.Hits, int64(math.MaxInt64))
	}
	return nil
}

func validateExe(exe string) error {
	if exe == "" {
		return nil
	}
	if len(exe) > maxPathLen {
		return fmt.Errorf("longer than %d bytes", maxPathLen)
	}
	if strings.IndexByte(exe, 0) >= 0 {
		return errors.New("contains a NUL byte")
	}
	if exe[0] != '/' {
		return fmt.Errorf("%q is not an absolute path", exe)
	}
	if _, ok := globLiteral(exe); ok {
		return nil
	}
	if _, err := compileGlob(exe); err != nil {
		return err
	}
	return nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func validateDst(p netip.Prefix) error {
	if p == (netip.Prefix{}) {
		return nil
	}
	if !p.IsValid() {
		return fmt.Errorf("invalid prefix %s", p)
	}
	if p.Addr().Zone() != "" {
		return fmt.Errorf("%s: zones are not supported", p)
	}
	if p.Addr().Is4In6() {
		return fmt.Errorf("%s: write IPv4-mapped addresses in IPv4 form", p)
	}
	if p.Masked() != p {
		return fmt.Errorf("%s has bits set beyond the prefix length (did you mean %s?)", p, p.Masked())
	}
	return nil
}

// validateHostPattern checks a host name or a `*.domain` wildcard: lower
// case letters, digits, `-` and `_`, dot-separated labels of 1..63 bytes,
// at most 253 bytes, and not an IP address (that is what Dst is for).
func validateHostPattern(h string) error {
	name := strings.TrimPrefix(h, "*.")
	if strings.Contains(name, "*") {
		return fmt.Errorf("%q: a wildcard must be a whole leading label, as in *.example.com", h)
	}
	if err := validHostName(name); err != nil {
		return fmt.Errorf("%q: %w", h, err)
	}
	return nil
}

func validHostName(name string) error {
	if name == "" {
		return errors.New("empty host name")
	}
	if len(name) > maxHostLen {
		return fmt.Errorf("longer than %d bytes", maxHostLen)
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return errors.New("an IP address, not a host name (use dst)")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return errors.New("empty label (leading, trailing or doubled dot)")
		}
		if len(label) > 63 {
			return fmt.Errorf("label %q is longer than 63 bytes", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
				if c >= 'A' && c <= 'Z' {
					return errors.New("must be lower case")
				}
				return fmt.Errorf("character %q not allowed in a host name", c)
			}
		}
	}
	return nil
}

func (l Lifetime) String() string {
	switch l {
	case Once:
		return "once"
	case Duration:
		return "duration"
	case Session:
		return "session"
	case Forever:
		return "forever"
	}
	return fmt.Sprintf("lifetime-%d", uint8(l))
}

// ParseLifetime is the inverse of Lifetime.String.
func ParseLifetime(s string) (Lifetime, error) {
	switch s {
	case "once":
		return Once, nil
	case "duration":
		return Duration, nil
	case "session":
		return Session, nil
	case "forever":
		return Forever, nil
	}
	return 0, fmt.Errorf("unknown lifetime %q (want once, duration, session or forever)", s)
}
