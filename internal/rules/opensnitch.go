package rules

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"regexp/syntax"
	"strings"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// OpenSnitch's rule file (one rule per file in /etc/opensnitchd/rules).
type osRule struct {
	Created     string     `json:"created"`
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Enabled     bool       `json:"enabled"`
	Precedence  bool       `json:"precedence"`
	Action      string     `json:"action"`
	Duration    string     `json:"duration"`
	Operator    osOperator `json:"operator"`
}

type osOperator struct {
	Type      string       `json:"type"`
	Operand   string       `json:"operand"`
	Sensitive bool         `json:"sensitive"`
	Data      string       `json:"data"`
	List      []osOperator `json:"list"`
}

// maxOSDepth bounds how deeply list operators may nest.
const maxOSDepth = 4

// ImportOpenSnitch converts OpenSnitch rules: one rule object, or an array
// of them. The input is untrusted. err is set only when the input is not
// OpenSnitch rule JSON at all; each rule that cannot be converted without
// becoming broader than the original is skipped, with a line in problems
// saying which rule and which field. Lines that start with "imported
// narrower" name rules that were imported but match less than the original.
func ImportOpenSnitch(data []byte) (rs []Rule, problems []string, err error) {
	if len(data) > maxImportSize {
		return nil, nil, fmt.Errorf("import opensnitch: file is larger than %d bytes", maxImportSize)
	}
	var in []osRule
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '[' {
		err = json.Unmarshal(data, &in)
	} else {
		var one osRule
		err = json.Unmarshal(data, &one)
		in = []osRule{one}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("import opensnitch: %w", jsonPosError(data, -1, err))
	}
	for i, or := range in {
		name := or.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		c := osConverter{name: name}
		r, ok := c.convert(or)
		problems = append(problems, c.problems...)
		if ok {
			rs = append(rs, r)
		}
	}
	return rs, problems, nil
}

type osConverter struct {
	name     string
	problems []string
	// family is 4 or 6 when the protocol operand restricts the IP version
	// (OpenSnitch's "tcp" is TCP over IPv4, "tcp6" TCP over IPv6).
	family int
}

// skip records why the rule is skipped; convert then drops it.
type skipError struct{ msg string }

func (e *skipError) Error() string { return e.msg }

func (c *osConverter) skipf(format string, args ...any) error {
	return &skipError{msg: fmt.Sprintf(format, args...)}
}

func (c *osConverter) narrower(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf("rule %q: imported narrower: ", c.name)+fmt.Sprintf(format, args...))
}

func (c *osConverter) convert(or osRule) (Rule, bool) {
	r, err := c.rule(or)
	if err != nil {
		c.problems = append(c.problems, fmt.Sprintf("rule %q: skipped: %v", c.name, err))
		return Rule{}, false
	}
	return r, true
}

func (c *osConverter) rule(or osRule) (Rule, error) {
	r := Rule{Enabled: or.Enabled, Note: "OpenSnitch: " + c.name}
	if or.Description != "" {
		r.Note += ": " + or.Description
	}
	if len(r.Note) > maxNoteLen {
		r.Note = strings.ToValidUTF8(r.Note[:maxNoteLen], "")
	}
	switch or.Action {
	case "allow":
		r.Action = flow.ActionAllow
	case "deny":
		r.Action = flow.ActionDeny
	case "reject":
		r.Action = flow.ActionReject
	default:
		return Rule{}, c.skipf("action %q: want allow, deny or reject", or.Action)
	}
	if or.Created != "" {
		if t, err := time.Parse(time.RFC3339Nano, or.Created); err == nil {
			r.Created = t.UTC()
		}
	}
	switch or.Duration {
	case "always":
		r.Lifetime = Forever
	case "until restart", "restart":
		r.Lifetime = Session
	case "once", "":
		return Rule{}, c.skipf("duration %q: a rule for one connection cannot be imported", or.Duration)
	default:
		d, err := time.ParseDuration(or.Duration)
		if err != nil || d <= 0 {
			return Rule{}, c.skipf("duration %q: not always, until restart or a duration such as 5m", or.Duration)
		}
		if r.Created.IsZero() {
			return Rule{}, c.skipf("duration %q: without a valid created time the expiry is unknown", or.Duration)
		}
		r.Lifetime, r.Expires = Duration, r.Created.Add(d)
	}
	if or.Precedence {
		c.problems = append(c.problems, fmt.Sprintf("rule %q: precedence: Bastion has no priority flag; "+
			"the rule was imported and ranks by specificity like every rule", c.name))
	}
	if err := c.operator(or.Operator, &r, 0); err != nil {
		return Rule{}, err
	}
	switch {
	case c.family == 4 && !r.Dst.IsValid():
		r.Dst = netip.MustParsePrefix("0.0.0.0/0")
	case c.family == 6 && !r.Dst.IsValid():
		r.Dst = netip.MustParsePrefix("::/0")
	case c.family == 4 && !r.Dst.Addr().Is4(), c.family == 6 && r.Dst.Addr().Is4():
		return Rule{}, c.skipf("protocol: its IP version differs from dest's %s, so the rule never matches", r.Dst)
	}
	if err := r.Validate(); err != nil {
		return Rule{}, c.skipf("converted rule is invalid: %v", err)
	}
	return r, nil
}

// operator narrows r by one OpenSnitch operator. A list is the AND of its
// operators, which is what setting several operands of one Rule means.
func (c *osConverter) operator(op osOperator, r *Rule, depth int) error {
	field := "operator " + op.Operand
	switch op.Type {
	case "list":
		if depth >= maxOSDepth {
			return c.skipf("operator: lists nested deeper than %d", maxOSDepth)
		}
		list := op.List
		if len(list) == 0 && op.Data != "" {
			// Older OpenSnitch versions kept the list as JSON in data.
			if err := json.Unmarshal([]byte(op.Data), &list); err != nil {
				return c.skipf("operator list: data is not a list of operators: %v", err)
			}
		}
		if len(list) == 0 {
			return c.skipf("operator list: empty list")
		}
		for _, sub := range list {
			if err := c.operator(sub, r, depth+1); err != nil {
				return err
			}
		}
		return nil
	case "simple", "regexp", "network", "range":
	case "lists":
		return c.skipf("%s: lists read from files (%q) are not supported", field, op.Data)
	default:
		return c.skipf("%s: unknown operator type %q", field, op.Type)
	}
	switch op.Operand {
	case "true":
		if op.Type != "simple" {
			return c.skipf("%s: type %q", field, op.Type)
		}
		return nil
	case "process.path":
		exe, err := c.exe(op)
		if err != nil {
			return err
		}
		return setOnce(c, "process.path", &r.Exe, exe)
	case "process.command":
		var expr string
		switch op.Type {
		case "simple":
			expr = regexp.QuoteMeta(op.Data)
		case "regexp":
			// OpenSnitch searches; a Bastion Cmdline must match the whole
			// command line, so the search is spelled out.
			expr = `(?s:.*)(?:` + op.Data + `)(?s:.*)`
		default:
			return c.skipf("%s: type %q", field, op.Type)
		}
		if !op.Sensitive {
			expr = `(?i:` + expr + `)`
		}
		if _, err := compileCmdline(expr); err != nil {
			return c.skipf("%s: %v", field, err)
		}
		return setOnce(c, "process.command", &r.Cmdline, expr)
	case "dest.ip", "dest.network":
		var p netip.Prefix
		switch {
		case op.Type == "network" || (op.Type == "simple" && strings.Contains(op.Data, "/")):
			pp, err := netip.ParsePrefix(strings.TrimSpace(op.Data))
			if err != nil {
				return c.skipf("%s: %v", field, err)
			}
			p = pp.Masked()
		case op.Type == "simple":
			a, err := netip.ParseAddr(strings.TrimSpace(op.Data))
			if err != nil {
				return c.skipf("%s: %v", field, err)
			}
			a = a.Unmap()
			p = netip.PrefixFrom(a, a.BitLen())
		default:
			return c.skipf("%s: type %q: only an address or a network can be imported", field, op.Type)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		if err := validateDst(p); err != nil {
			return c.skipf("%s: %v", field, err)
		}
		if r.Dst.IsValid() && r.Dst != p {
			return c.skipf("%s: a second, different destination (%s and %s)", field, r.Dst, p)
		}
		r.Dst = p
		return nil
	case "dest.host":
		if op.Sensitive {
			return c.skipf("%s: sensitive (case-sensitive) host names cannot be imported: Bastion compares names ignoring case", field)
		}
		host, err := c.host(op)
		if err != nil {
			return err
		}
		return setOnce(c, "dest.host", &r.Host, host)
	case "dest.port":
		var lo, hi uint16
		var err error
		switch op.Type {
		case "simple", "range":
			lo, hi, err = parsePorts(strings.TrimSpace(op.Data))
		default:
			err = fmt.Errorf("type %q: only a port or a range can be imported", op.Type)
		}
		if err != nil {
			return c.skipf("%s: %v", field, err)
		}
		if (r.PortMin != 0 || r.PortMax != 0) && (r.PortMin != lo || r.PortMax != hi) {
			return c.skipf("%s: a second, different port", field)
		}
		r.PortMin, r.PortMax = lo, hi
		return nil
	case "protocol":
		if op.Type != "simple" {
			return c.skipf("%s: type %q", field, op.Type)
		}
		var p flow.Proto
		family := 0
		switch strings.ToLower(strings.TrimSpace(op.Data)) {
		case "tcp":
			p, family = flow.TCP, 4
		case "udp":
			p, family = flow.UDP, 4
		case "tcp6":
			p, family = flow.TCP, 6
		case "udp6":
			p, family = flow.UDP, 6
		case "icmp":
			p = flow.ICMP
		case "icmp6", "icmpv6", "ipv6-icmp":
			p = flow.ICMPv6
		default:
			return c.skipf("%s: protocol %q is not one of tcp, udp, tcp6, udp6, icmp, icmp6", field, op.Data)
		}
		if (r.Proto != 0 && r.Proto != p) || (c.family != 0 && family != 0 && c.family != family) {
			return c.skipf("%s: a second, different protocol", field)
		}
		r.Proto = p
		if family != 0 {
			c.family = family
		}
		return nil
	}
	return c.skipf("%s: Bastion has no operand for %q", field, op.Operand)
}

func setOnce(c *osConverter, field string, dst *string, v string) error {
	if *dst != "" && *dst != v {
		return c.skipf("operator %s: a second, different value (%q and %q)", field, *dst, v)
	}
	*dst = v
	return nil
}

// exe converts a process.path operator: a path, or a regular expression
// of the forms `^/literal/path$` and `^/literal/dir/.*`.
func (c *osConverter) exe(op osOperator) (string, error) {
	field := "operator process.path"
	switch op.Type {
	case "simple":
		if !strings.HasPrefix(op.Data, "/") {
			return "", c.skipf("%s: %q is not an absolute path", field, op.Data)
		}
		return escapeGlob(op.Data), nil
	case "regexp":
	default:
		return "", c.skipf("%s: type %q", field, op.Type)
	}
	lit, begin, end, star, ok := simpleRegexp(op.Data)
	if !ok || !strings.HasPrefix(lit, "/") {
		return "", c.skipf("%s: regular expression %q has no glob equivalent "+
			"(only ^/literal/path$ and ^/literal/dir/.* are translated)", field, op.Data)
	}
	if !begin {
		c.narrower("%s: %q matched anywhere in the path; imported as matching from its start", field, op.Data)
	}
	switch {
	case !star:
		if !end {
			c.narrower("%s: %q also matched longer paths; imported as the exact path", field, op.Data)
		}
		return escapeGlob(lit), nil
	case strings.HasSuffix(lit, "/"):
		return escapeGlob(lit) + "**", nil
	default:
		c.narrower("%s: %q: `.*` after a partial name is imported as `*`, which stays within one path element", field, op.Data)
		return escapeGlob(lit) + "*", nil
	}
}

// simpleRegexp recognises `^?literal(.*)?$?` and returns the literal.
func simpleRegexp(expr string) (lit string, begin, end, star, ok bool) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return "", false, false, false, false
	}
	subs := []*syntax.Regexp{re}
	if re.Op == syntax.OpConcat {
		subs = re.Sub
	}
	if len(subs) > 0 && subs[0].Op == syntax.OpBeginText {
		begin, subs = true, subs[1:]
	}
	if n := len(subs); n > 0 && subs[n-1].Op == syntax.OpEndText {
		end, subs = true, subs[:n-1]
	}
	if n := len(subs); n > 0 && subs[n-1].Op == syntax.OpStar && subs[n-1].Sub[0].Op == syntax.OpAnyCharNotNL {
		star, subs = true, subs[:n-1]
	}
	if len(subs) != 1 || subs[0].Op != syntax.OpLiteral {
		return "", false, false, false, false
	}
	// A case-folded literal (OpenSnitch's default, sensitive=false) also
	// matches other spellings; the exact path is a subset of those.
	return string(subs[0].Rune), begin, end, star, true
}

// wildcardPrefixes are how OpenSnitch's UI writes "this domain and every
// name under it".
var wildcardPrefixes = []string{`(|.*\.)`, `(.*\.)?`, `(?:.*\.)?`, `(|.+\.)`, `(.+\.)?`}

// host converts a dest.host operator: a name, or a regular expression that
// is exactly a name or a name and everything under it.
func (c *osConverter) host(op osOperator) (string, error) {
	field := "operator dest.host"
	switch op.Type {
	case "simple":
		h := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(op.Data)), ".")
		if err := validHostName(h); err != nil {
			return "", c.skipf("%s: %q: %v", field, op.Data, err)
		}
		return h, nil
	case "regexp":
	default:
		return "", c.skipf("%s: type %q", field, op.Type)
	}
	expr := op.Data
	begin := strings.HasPrefix(expr, "^")
	expr = strings.TrimPrefix(expr, "^")
	end := strings.HasSuffix(expr, "$") && !strings.HasSuffix(expr, `\$`)
	expr = strings.TrimSuffix(expr, "$")
	wild := false
	for _, p := range wildcardPrefixes {
		if rest, ok := strings.CutPrefix(expr, p); ok {
			expr, wild = rest, true
			break
		}
	}
	name, loose, ok := unescapeHost(expr)
	if !ok || validHostName(name) != nil {
		return "", c.skipf("%s: regular expression %q is not a host name or a domain and its subdomains", field, op.Data)
	}
	if !begin || !end {
		c.narrower("%s: %q was not anchored at both ends; imported as the exact name or domain", field, op.Data)
	}
	if loose {
		c.narrower("%s: %q has an unescaped `.`, which matched any character; imported as a dot", field, op.Data)
	}
	if wild {
		return "*." + name, nil
	}
	return name, nil
}

// unescapeHost turns `www\.example\.com` into www.example.com; any regexp
// syntax but `\.` and `\-` makes it fail. An unescaped `.`, which matches
// any character, is taken as a dot and reported through loose.
func unescapeHost(expr string) (name string, loose, ok bool) {
	var b strings.Builder
	for i := 0; i < len(expr); i++ {
		ch := expr[i]
		switch {
		case ch == '.':
			loose = true
			b.WriteByte('.')
		case ch == '\\' && i+1 < len(expr) && (expr[i+1] == '.' || expr[i+1] == '-'):
			b.WriteByte(expr[i+1])
			i++
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9', ch == '-', ch == '_':
			b.WriteByte(ch | 0x20*byte(boolInt(ch >= 'A' && ch <= 'Z')))
		default:
			return "", false, false
		}
	}
	return b.String(), loose, b.Len() > 0
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
