package gtkclient

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp/syntax"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/inert"
	"github.com/bastion-fw/bastion/internal/rules"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// The rule dialog's fields that can be wrong, as the dialog labels them.
const (
	fieldProgram = "Program"
	fieldCmdline = "Command line"
	fieldHost    = "Host name"
	fieldAddress = "Address"
	fieldPort    = "Port"
	fieldNote    = "Note"
)

// ruleFields are the rule dialog's text fields, trimmed, and its protocol.
type ruleFields struct {
	exe, cmdline, host, dst, ports, note string
	proto                                flow.Proto
}

// anywhere reports whether the fields name no program and no destination:
// the rule would decide every connection of the user.
func (f ruleFields) anywhere() bool {
	return f.exe == "" && f.cmdline == "" && f.host == "" && f.dst == "" && f.ports == "" && f.proto == 0
}

// problems checks every field on its own and says in words what is wrong
// with each, by field; empty when all are fine. The rules package checks
// the whole rule again before it is saved.
func (f ruleFields) problems() map[string]string {
	out := map[string]string{}
	add := func(field, problem string) {
		if problem != "" {
			out[field] = problem
		}
	}
	add(fieldProgram, exeProblem(f.exe))
	add(fieldCmdline, cmdlineProblem(f.cmdline))
	add(fieldHost, hostProblem(f.host))
	add(fieldAddress, addressProblem(f.dst))
	add(fieldPort, portsProblem(f.ports, f.proto))
	if len(f.note) > 4096 || !utf8.ValidString(f.note) {
		add(fieldNote, "The note is too long: keep it under 4,000 characters.")
	}
	return out
}

// checkAlone validates a rule that has only the given operands set.
func checkAlone(set func(r *rulesv1.Rule)) error {
	r := &rulesv1.Rule{Action: rulesv1.Action_ACTION_ALLOW, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}
	set(r)
	_, err := rules.FromProto(r)
	return err
}

func exeProblem(exe string) string {
	switch {
	case exe == "":
		return ""
	case !utf8.ValidString(exe) || strings.ContainsRune(exe, 0):
		return "The path holds characters that are not text."
	case !strings.HasPrefix(exe, "/"):
		return "Write the program's full path, starting with /, such as /usr/bin/curl."
	case len(exe) > 4096:
		return "The path is too long (at most 4,096 characters)."
	}
	if checkAlone(func(r *rulesv1.Rule) { r.Exe = exe }) != nil {
		return "This pattern is not valid: every [ needs a closing ], and a \\ must be followed by a character. " +
			"Use * for any name in one folder and ** for any folders."
	}
	return ""
}

func cmdlineProblem(expr string) string {
	if expr == "" {
		return ""
	}
	if len(expr) > 4096 || !utf8.ValidString(expr) {
		return "The expression is too long (at most 4,096 characters)."
	}
	if _, err := syntax.Parse(expr, syntax.Perl); err != nil {
		var se *syntax.Error
		if errors.As(err, &se) {
			return fmt.Sprintf("Not a valid regular expression: %s in “%s”. Write \\. for a dot, \\( for a parenthesis.",
				se.Code.String(), inert.Elide(se.Expr, 40))
		}
		return "Not a valid regular expression."
	}
	if checkAlone(func(r *rulesv1.Rule) { r.Cmdline = expr }) != nil {
		return "This expression is too complex to match quickly on every connection: " +
			"avoid repeated variable-length parts such as (.*){5} or (a|aa)+."
	}
	return ""
}

func hostProblem(h string) string {
	if h == "" {
		return ""
	}
	name := strings.TrimPrefix(h, "*.")
	switch {
	case strings.Contains(h, "://") || strings.Contains(h, "/"):
		return "Write the host name alone, such as example.com: no https:// and no path."
	case strings.Contains(name, "*"):
		return "A * may only stand for the whole first part of a name, as in *.example.com."
	case strings.ContainsAny(h, " \t"):
		return "A host name has no spaces."
	case h != strings.ToLower(h):
		return "Write the host name in lower case: " + inert.String(strings.ToLower(h)) + "."
	}
	if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		return "This is an address, not a host name: put it under Address."
	}
	if strings.Contains(name, ":") {
		return "Write the port under Port, not after the host name."
	}
	if name == "" || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, "..") {
		return "A host name has no empty parts: check for a dot at the start or end, or two dots in a row."
	}
	if checkAlone(func(r *rulesv1.Rule) { r.Host = h }) != nil {
		return "A host name has only letters, digits, - and _, in parts of at most 63 characters separated by dots " +
			"(at most 253 characters in all)."
	}
	return ""
}

func addressProblem(dst string) string {
	if dst == "" {
		return ""
	}
	if strings.Contains(dst, "%") {
		return "Zones such as %eth0 are not supported: write the address alone."
	}
	if p, err := netip.ParsePrefix(dst); err == nil && p.Masked() != p {
		return fmt.Sprintf("%s has bits set past the /%d: did you mean %s?", p.Addr(), p.Bits(), p.Masked())
	}
	if err := checkAlone(func(r *rulesv1.Rule) { r.Dst = dst }); err != nil {
		if a, perr := netip.ParseAddr(dst); perr == nil && a.Is4In6() {
			return "Write this IPv4 address as " + a.Unmap().String() + "."
		}
		if strings.Contains(dst, "/") {
			return "Write a network as an address and a prefix length, such as 10.0.0.0/8 or 2001:db8::/32."
		}
		return "Write an address such as 192.0.2.1 or 2001:db8::1, or a network such as 10.0.0.0/8. " +
			"A host name goes under Host name."
	}
	return ""
}

// parsePorts reads "443" or "8000-8999"; ok is false when the text is not
// one of those forms with numbers from 1 to 65535, low to high.
func parsePorts(s string) (lo, hi uint16, problem string) {
	l, h, isRange := strings.Cut(s, "-")
	num := func(t string) (uint16, bool) {
		n, err := strconv.ParseUint(strings.TrimSpace(t), 10, 16)
		return uint16(n), err == nil && n != 0
	}
	var ok bool
	if lo, ok = num(l); !ok {
		return 0, 0, fmt.Sprintf("“%s” is not a port: write a number from 1 to 65535, or a range such as 8000-8999.", inert.Elide(l, 20))
	}
	hi = lo
	if isRange {
		if hi, ok = num(h); !ok {
			return 0, 0, fmt.Sprintf("“%s” is not a port: write a number from 1 to 65535, or a range such as 8000-8999.", inert.Elide(h, 20))
		}
		if lo > hi {
			return 0, 0, fmt.Sprintf("The range starts above its end: write %d-%d.", hi, lo)
		}
	}
	return lo, hi, ""
}

func portsProblem(ports string, p flow.Proto) string {
	if ports == "" {
		return ""
	}
	if _, _, problem := parsePorts(ports); problem != "" {
		return problem
	}
	if p != 0 && !p.HasPorts() {
		return displayProto(p) + " has no ports: leave Port empty, or choose TCP, UDP, UDP-Lite, SCTP or DCCP as the protocol."
	}
	return ""
}
