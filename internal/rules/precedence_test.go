package rules

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// precedenceRules are listed most specific first; each Note says why it
// ranks where it does.
func precedenceRules() []Rule {
	allow, deny, reject := flow.ActionAllow, flow.ActionDeny, flow.ActionReject
	r := func(note string, a flow.Action, mod func(*Rule)) Rule {
		x := Rule{ID: fmt.Sprintf("r%02d", 0), Enabled: true, Action: a, Lifetime: Forever, Note: note, Created: t0}
		mod(&x)
		return x
	}
	rs := []Rule{
		r("exact exe + sha256 + cmdline", allow, func(x *Rule) { x.Exe, x.ExeSHA256, x.Cmdline = "/usr/bin/curl", sha, "curl .*" }),
		r("exact exe + sha256", allow, func(x *Rule) { x.Exe, x.ExeSHA256 = "/usr/bin/curl", sha }),
		r("exact exe + cmdline", allow, func(x *Rule) { x.Exe, x.Cmdline = "/usr/bin/curl", "curl .*" }),
		r("exact exe + host + addr", allow, func(x *Rule) { x.Exe, x.Host, x.Dst = "/usr/bin/curl", "example.com", pfx("192.0.2.1") }),
		r("exact exe + host", allow, func(x *Rule) { x.Exe, x.Host = "/usr/bin/curl", "example.com" }),
		r("exact exe + address + port", allow, func(x *Rule) { x.Exe, x.Dst, x.PortMin, x.PortMax = "/usr/bin/curl", pfx("192.0.2.1"), 443, 443 }),
		r("exact exe + address + port range", allow, func(x *Rule) { x.Exe, x.Dst, x.PortMin, x.PortMax = "/usr/bin/curl", pfx("192.0.2.1"), 443, 444 }),
		r("exact exe + address + proto, deny", deny, func(x *Rule) { x.Exe, x.Dst, x.Proto = "/usr/bin/curl", pfx("192.0.2.1"), flow.TCP }),
		r("exact exe + address + proto, reject", reject, func(x *Rule) { x.Exe, x.Dst, x.Proto = "/usr/bin/curl", pfx("192.0.2.1"), flow.TCP }),
		r("exact exe + address + proto, allow, older", allow, func(x *Rule) {
			x.Exe, x.Dst, x.Proto, x.Created = "/usr/bin/curl", pfx("192.0.2.1"), flow.TCP, t0.Add(-time.Hour)
		}),
		r("exact exe + address + proto, allow", allow, func(x *Rule) { x.Exe, x.Dst, x.Proto = "/usr/bin/curl", pfx("192.0.2.1"), flow.TCP }),
		r("exact exe + address + proto, allow, higher id", allow, func(x *Rule) {
			x.Exe, x.Dst, x.Proto, x.ID = "/usr/bin/curl", pfx("192.0.2.1"), flow.TCP, "r99"
		}),
		r("exact exe + /24", allow, func(x *Rule) { x.Exe, x.Dst = "/usr/bin/curl", pfx("192.0.2.0/24") }),
		r("exact exe + /8 (24 host bits)", allow, func(x *Rule) { x.Exe, x.Dst = "/usr/bin/curl", pfx("10.0.0.0/8") }),
		r("exact exe + /64 (64 host bits)", allow, func(x *Rule) { x.Exe, x.Dst = "/usr/bin/curl", pfx("2001:db8::/64") }),
		r("exact exe + *.a.example.com", allow, func(x *Rule) { x.Exe, x.Host = "/usr/bin/curl", "*.a.example.com" }),
		r("exact exe + *.example.com", allow, func(x *Rule) { x.Exe, x.Host = "/usr/bin/curl", "*.example.com" }),
		r("exact exe + port", allow, func(x *Rule) { x.Exe, x.PortMin, x.PortMax = "/usr/bin/curl", 53, 53 }),
		r("exact exe + all ports", allow, func(x *Rule) { x.Exe, x.PortMin, x.PortMax = "/usr/bin/curl", 1, 65535 }),
		r("exact exe + proto", allow, func(x *Rule) { x.Exe, x.Proto = "/usr/bin/curl", flow.UDP }),
		r("exact exe (escaped glob characters)", deny, func(x *Rule) { x.Exe = `/tmp/a\*` }),
		r("exact exe", allow, func(x *Rule) { x.Exe = "/usr/bin/curl" }),
		r("glob, longer literal prefix", allow, func(x *Rule) { x.Exe = "/usr/lib/firefox/**" }),
		r("glob + sha256", allow, func(x *Rule) { x.Exe, x.ExeSHA256 = "/usr/bin/*", sha }),
		r("glob + address", allow, func(x *Rule) { x.Exe, x.Dst = "/usr/bin/*", pfx("192.0.2.1") }),
		r("glob", allow, func(x *Rule) { x.Exe = "/usr/bin/*" }),
		r("glob, short prefix", allow, func(x *Rule) { x.Exe = "/**/curl" }),
		r("any exe + sha256", allow, func(x *Rule) { x.ExeSHA256 = sha }),
		r("any exe + cmdline", allow, func(x *Rule) { x.Cmdline = ".*--insecure.*" }),
		r("any exe + address", deny, func(x *Rule) { x.Dst = pfx("192.0.2.1") }),
		r("any exe + port", allow, func(x *Rule) { x.PortMin, x.PortMax = 443, 443 }),
		r("anything, deny", deny, func(*Rule) {}),
		r("anything, allow", allow, func(*Rule) {}),
	}
	for i := range rs {
		if rs[i].ID == "r00" {
			rs[i].ID = fmt.Sprintf("r%02d", i)
		}
	}
	return rs
}

func TestPrecedenceOrder(t *testing.T) {
	want := precedenceRules()
	for i := range want {
		if err := want[i].Validate(); err != nil {
			t.Fatalf("%s: %v", want[i].Note, err)
		}
	}
	// Every adjacent pair, in both directions, and antisymmetry.
	for i := 0; i+1 < len(want); i++ {
		if c := Compare(want[i], want[i+1]); c >= 0 {
			t.Errorf("Compare(%q, %q) = %d, want < 0", want[i].Note, want[i+1].Note, c)
		}
		if c := Compare(want[i+1], want[i]); c <= 0 {
			t.Errorf("Compare(%q, %q) = %d, want > 0", want[i+1].Note, want[i].Note, c)
		}
	}
	// Sorting any shuffle gives the same order: the order is total.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		got := slices.Clone(want)
		rng.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
		slices.SortFunc(got, Compare)
		for i := range got {
			if got[i].Note != want[i].Note {
				t.Fatalf("sorted position %d: %q, want %q", i, got[i].Note, want[i].Note)
			}
		}
	}
	var b strings.Builder
	for i, r := range want {
		fmt.Fprintf(&b, "%2d. %-45s %s\n", i+1, r.Note, describe(r))
	}
	golden(t, "precedence.golden", []byte(b.String()))
}

// describe is a one-line summary of a rule's operands.
func describe(r Rule) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("exe", r.Exe)
	if r.ExeSHA256 != "" {
		add("sha256", r.ExeSHA256[:8]+"…")
	}
	add("cmdline", r.Cmdline)
	add("host", r.Host)
	add("dst", formatDst(r.Dst))
	add("ports", formatPorts(r.PortMin, r.PortMax))
	if r.Proto != 0 {
		add("proto", r.Proto.String())
	}
	add("action", r.Action.String())
	add("id", r.ID)
	return strings.Join(parts, " ")
}

func TestPrecedenceMatchPicksTheMostSpecific(t *testing.T) {
	// A connection every rule in precedenceRules could match, save the
	// ones that need another operand value; the Matcher must pick the
	// highest-ranked that does.
	rs := precedenceRules()
	m, err := NewMatcher(rs)
	if err != nil {
		t.Fatal(err)
	}
	c := Conn{Exe: "/usr/bin/curl", Args: []string{"curl", "https://example.com"}, Host: "example.com",
		Tuple:  flow.Tuple{Proto: flow.TCP, Dst: pfx("192.0.2.1").Addr(), DstPort: 443},
		SHA256: func() (string, error) { return sha, nil }}
	got, ok := m.Match(c, t0)
	if !ok || got.Note != "exact exe + sha256 + cmdline" {
		t.Fatalf("Match = %v %v", got, ok)
	}
	// Without a known hash, rules that need it cannot match.
	c.SHA256 = nil
	if got, _ = m.Match(c, t0); got.Note != "exact exe + cmdline" {
		t.Errorf("no hash: Match = %q", got.Note)
	}
	c.Args = nil
	if got, _ = m.Match(c, t0); got.Note != "exact exe + host + addr" {
		t.Errorf("no args: Match = %q", got.Note)
	}
	c.Host = ""
	if got, _ = m.Match(c, t0); got.Note != "exact exe + address + port" {
		t.Errorf("no host: Match = %q", got.Note)
	}
	c.Tuple.DstPort = 80
	if got, _ = m.Match(c, t0); got.Note != "exact exe + address + proto, deny" {
		t.Errorf("port 80: Match = %q", got.Note)
	}
	c.Exe = "/usr/bin/wget"
	if got, _ = m.Match(c, t0); got.Note != "glob + address" {
		t.Errorf("wget: Match = %q", got.Note)
	}
	c.Exe = "/usr/lib/firefox/firefox"
	if got, _ = m.Match(c, t0); got.Note != "glob, longer literal prefix" {
		t.Errorf("firefox: Match = %q", got.Note)
	}
	c.Exe = "/bin/true"
	if got, _ = m.Match(c, t0); got.Note != "any exe + address" {
		t.Errorf("true: Match = %q", got.Note)
	}
	c.Tuple.Dst = pfx("203.0.113.9").Addr()
	if got, _ = m.Match(c, t0); got.Note != "anything, deny" {
		t.Errorf("elsewhere: Match = %q", got.Note)
	}
}
