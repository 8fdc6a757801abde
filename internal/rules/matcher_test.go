package rules

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// bruteForce is the specification Match is checked against: of the rules
// that are enabled, unexpired and cover c, the first in Compare order
// (then input position).
func bruteForce(rs []Rule, crs []*crule, c Conn, now time.Time) int {
	best := -1
	for i, r := range rs {
		st := newMatchState(c, now, true)
		if !r.Enabled || !st.matches(crs[i]) {
			continue
		}
		if best < 0 || Compare(r, rs[best]) < 0 {
			best = i
		}
	}
	return best
}

// randomRules draws rules from small pools so that they overlap a lot.
func randomRules(rng *rand.Rand, n int) []Rule {
	exes := []string{"", "", "/usr/bin/curl", "/usr/bin/wget", "/usr/bin/*", "/usr/**", "/**/curl", `/usr/bin/cu?l`}
	hosts := []string{"", "", "", "example.com", "www.example.com", "*.example.com", "*.www.example.com", "other.org"}
	dsts := []string{"", "", "192.0.2.1", "192.0.2.0/24", "192.0.0.0/16", "2001:db8::1", "2001:db8::/32", "0.0.0.0/0"}
	ports := [][2]uint16{{0, 0}, {0, 0}, {443, 443}, {80, 80}, {1, 1024}, {400, 500}}
	protos := []flow.Proto{0, 0, flow.TCP, flow.UDP}
	cmds := []string{"", "", "", "curl .*", `curl https://example\.com`}
	actions := []flow.Action{flow.ActionAllow, flow.ActionDeny, flow.ActionReject}
	rs := make([]Rule, n)
	for i := range rs {
		p := ports[rng.IntN(len(ports))]
		r := Rule{
			ID: fmt.Sprintf("%04d", rng.IntN(10000)), Enabled: rng.IntN(10) != 0, Action: actions[rng.IntN(3)],
			Exe: exes[rng.IntN(len(exes))], Host: hosts[rng.IntN(len(hosts))], Dst: pfx(dsts[rng.IntN(len(dsts))]),
			PortMin: p[0], PortMax: p[1], Proto: protos[rng.IntN(len(protos))], Cmdline: cmds[rng.IntN(len(cmds))],
			Lifetime: Forever, Created: t0.Add(time.Duration(rng.IntN(3)) * time.Hour),
		}
		if rng.IntN(8) == 0 {
			r.ExeSHA256 = sha
		}
		if rng.IntN(6) == 0 {
			r.Lifetime, r.Expires = Duration, t0.Add(time.Duration(rng.IntN(3)-1)*time.Minute)
		}
		rs[i] = r
	}
	return rs
}

func randomConn(rng *rand.Rand) Conn {
	exes := []string{"", "/usr/bin/curl", "/usr/bin/wget", "/usr/lib/x/curl", "/opt/curl"}
	hosts := []string{"", "example.com", "WWW.Example.com.", "a.www.example.com", "other.org", "example.org"}
	dsts := []string{"192.0.2.1", "192.0.2.9", "192.0.77.1", "2001:db8::1", "2001:db8::2", "::ffff:192.0.2.1", "203.0.113.1"}
	argss := [][]string{nil, {"curl", "https://example.com"}, {"curl", "-x"}, {"wget"}}
	c := Conn{
		Exe: exes[rng.IntN(len(exes))], Host: hosts[rng.IntN(len(hosts))], Args: argss[rng.IntN(len(argss))],
		Tuple: flow.Tuple{Proto: []flow.Proto{flow.TCP, flow.UDP}[rng.IntN(2)], Dst: netip.MustParseAddr(dsts[rng.IntN(len(dsts))]),
			DstPort: []uint16{443, 80, 450, 5000}[rng.IntN(4)]},
	}
	switch rng.IntN(3) {
	case 0:
		c.SHA256 = func() (string, error) { return sha, nil }
	case 1:
		c.SHA256 = func() (string, error) { return "00" + sha[2:], nil }
	}
	return c
}

func TestMatchAgreesWithBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	matched := 0
	for round := range 200 {
		rs := randomRules(rng, 1+rng.IntN(60))
		m, err := NewMatcher(rs)
		if err != nil {
			t.Fatal(err)
		}
		crs := make([]*crule, len(rs))
		for i := range rs {
			if crs[i], err = compile(rs[i]); err != nil {
				t.Fatal(err)
			}
		}
		for range 50 {
			c := randomConn(rng)
			want := bruteForce(rs, crs, c, t0)
			got, ok := m.Match(c, t0)
			switch {
			case want < 0 && ok:
				t.Fatalf("round %d: Match(%+v) = %+v, want no match", round, c, *got)
			case want >= 0 && !ok:
				t.Fatalf("round %d: Match(%+v) = no match, want %+v", round, c, rs[want])
			case want >= 0 && *got != rs[want]:
				t.Fatalf("round %d: Match(%+v) =\n %+v, want\n %+v", round, c, *got, rs[want])
			}
			if ok {
				matched++
			}
		}
	}
	if matched < 2000 {
		t.Errorf("only %d of 10000 lookups matched; the generator no longer exercises precedence", matched)
	}
}

func TestMatchHashesLazilyAndOnce(t *testing.T) {
	calls := 0
	c := Conn{Exe: "/usr/bin/curl", Tuple: flow.Tuple{Proto: flow.TCP, Dst: netip.MustParseAddr("192.0.2.1"), DstPort: 443},
		SHA256: func() (string, error) { calls++; return "00" + sha[2:], nil }}
	rule := func(id, exe, sum string, port uint16) Rule {
		return Rule{ID: id, Enabled: true, Action: flow.ActionAllow, Lifetime: Forever, Exe: exe, ExeSHA256: sum, PortMin: port, PortMax: port}
	}
	// No rule needs the hash: it is never computed.
	m, _ := NewMatcher([]Rule{rule("a", "/usr/bin/curl", "", 0)})
	if _, ok := m.Match(c, t0); !ok || calls != 0 {
		t.Fatalf("ok=%v, hash computed %d times, want match and 0", ok, calls)
	}
	// A hash rule whose other operands fail: still not computed.
	m, _ = NewMatcher([]Rule{rule("a", "/usr/bin/curl", sha, 80)})
	if _, ok := m.Match(c, t0); ok || calls != 0 {
		t.Fatalf("ok=%v, hash computed %d times, want no match and 0", ok, calls)
	}
	// Several hash rules that get that far: computed exactly once.
	m, _ = NewMatcher([]Rule{rule("a", "/usr/bin/curl", sha, 0), rule("b", "/usr/bin/*", sha, 0), rule("c", "", sha, 0), rule("d", "", "", 0)})
	got, ok := m.Match(c, t0)
	if !ok || got.ID != "d" || calls != 1 {
		t.Fatalf("Match = %v %v, hash computed %d times, want d and 1", got, ok, calls)
	}
}

func TestMatchExpiryAndDisabled(t *testing.T) {
	c := Conn{Exe: "/usr/bin/curl", Tuple: flow.Tuple{Proto: flow.TCP, Dst: netip.MustParseAddr("192.0.2.1"), DstPort: 443}}
	rs := []Rule{
		{ID: "temp", Enabled: true, Action: flow.ActionAllow, Exe: "/usr/bin/curl", Dst: pfx("192.0.2.1"), Lifetime: Duration, Expires: t0},
		{ID: "off", Enabled: false, Action: flow.ActionAllow, Exe: "/usr/bin/curl", PortMin: 443, PortMax: 443, Lifetime: Forever},
		{ID: "base", Enabled: true, Action: flow.ActionDeny, Exe: "/usr/bin/curl", Lifetime: Forever},
	}
	m, err := NewMatcher(rs)
	if err != nil {
		t.Fatal(err)
	}
	if m.Len() != 2 {
		t.Errorf("Len = %d, want 2 (disabled rule skipped)", m.Len())
	}
	for _, tt := range []struct {
		now  time.Time
		want string
	}{{t0.Add(-time.Nanosecond), "temp"}, {t0, "base"}, {t0.Add(time.Hour), "base"}} {
		if got, ok := m.Match(c, tt.now); !ok || got.ID != tt.want {
			t.Errorf("at %v: Match = %v, want %s", tt.now, got, tt.want)
		}
	}
	// Covers ignores both.
	if !Covers(rs[0], c) || !Covers(rs[1], c) {
		t.Error("Covers must ignore expiry and Enabled")
	}
	if _, err := NewMatcher([]Rule{{Enabled: true, Action: flow.ActionAllow, Lifetime: Forever, Exe: "rel"}}); err == nil {
		t.Error("NewMatcher accepted an invalid rule")
	}
	// A disabled invalid rule is skipped, not compiled.
	if _, err := NewMatcher([]Rule{{Enabled: false, Exe: "rel"}}); err != nil {
		t.Errorf("NewMatcher on a disabled invalid rule: %v", err)
	}
}

func TestCovers(t *testing.T) {
	c := Conn{Exe: "/usr/bin/curl", Args: []string{"curl", "-s", "https://x"}, Host: "api.example.com",
		Tuple: flow.Tuple{Proto: flow.UDP, Dst: netip.MustParseAddr("::ffff:10.1.2.3"), DstPort: 53}}
	tests := []struct {
		name string
		mod  func(*Rule)
		want bool
	}{
		{"no operands", func(*Rule) {}, true},
		{"mapped v4 matches v4 prefix", func(r *Rule) { r.Dst = pfx("10.0.0.0/8") }, true},
		{"v6 prefix", func(r *Rule) { r.Dst = pfx("::/0") }, false},
		{"wildcard parent", func(r *Rule) { r.Host = "*.example.com" }, true},
		{"wildcard itself", func(r *Rule) { r.Host = "*.api.example.com" }, true},
		{"wildcard sibling", func(r *Rule) { r.Host = "*.pi.example.com" }, false},
		{"host other", func(r *Rule) { r.Host = "example.com" }, false},
		{"port range", func(r *Rule) { r.PortMin, r.PortMax = 1, 53 }, true},
		{"port range miss", func(r *Rule) { r.PortMin, r.PortMax = 54, 99 }, false},
		{"proto", func(r *Rule) { r.Proto = flow.TCP }, false},
		{"cmdline whole", func(r *Rule) { r.Cmdline = `curl -s` }, false},
		{"cmdline regexp", func(r *Rule) { r.Cmdline = `curl .*` }, true},
		{"glob", func(r *Rule) { r.Exe = "/usr/**" }, true},
		{"sha without hash func", func(r *Rule) { r.ExeSHA256 = sha }, false},
		{"invalid rule", func(r *Rule) { r.Exe = "curl" }, false},
	}
	for _, tt := range tests {
		r := Rule{Enabled: true, Action: flow.ActionAllow, Lifetime: Forever}
		tt.mod(&r)
		if got := Covers(r, c); got != tt.want {
			t.Errorf("%s: Covers = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// realisticRules is a large user's rule set: many programs with a few
// destinations each (addresses, names, some prefixes and domains), some
// globs, a few rules for any program.
func realisticRules(n int) []Rule {
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	rs := make([]Rule, 0, n)
	for i := 0; len(rs) < n; i++ {
		r := Rule{ID: fmt.Sprintf("%08x", i), Enabled: true, Action: flow.ActionAllow, Lifetime: Forever, Created: t0}
		if rng.IntN(5) == 0 {
			r.Action = flow.ActionDeny
		}
		switch k := rng.IntN(100); {
		case k < 3: // any program
		case k < 8:
			r.Exe = fmt.Sprintf("/opt/app%d/**", rng.IntN(n/20+1))
		default:
			r.Exe = fmt.Sprintf("/usr/bin/prog%d", rng.IntN(n/4+1))
		}
		switch k := rng.IntN(100); {
		case k < 45:
			r.Dst = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}), 32)
		case k < 75:
			r.Host = fmt.Sprintf("h%d.example%d.com", rng.IntN(50), rng.IntN(n/10+1))
		case k < 85:
			r.Dst = netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(rng.IntN(32)), byte(rng.IntN(256)), 0}), 24)
		case k < 92:
			r.Host = fmt.Sprintf("*.example%d.com", rng.IntN(n/10+1))
		}
		if rng.IntN(2) == 0 {
			p := []uint16{443, 80, 53, 22}[rng.IntN(4)]
			r.PortMin, r.PortMax, r.Proto = p, p, flow.TCP
		}
		rs = append(rs, r)
	}
	return rs
}

func realisticConns(n int) []Conn {
	rng := rand.New(rand.NewPCG(99, uint64(n)))
	cs := make([]Conn, 256)
	for i := range cs {
		c := Conn{Args: []string{"prog"}, Tuple: flow.Tuple{Proto: flow.TCP, DstPort: []uint16{443, 80, 53, 22}[rng.IntN(4)]}}
		if rng.IntN(10) == 0 {
			c.Exe = fmt.Sprintf("/opt/app%d/bin/x", rng.IntN(n/20+1))
		} else {
			c.Exe = fmt.Sprintf("/usr/bin/prog%d", rng.IntN(n/4+1))
		}
		if rng.IntN(2) == 0 {
			c.Tuple.Dst = netip.AddrFrom4([4]byte{10, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))})
		} else {
			c.Tuple.Dst = netip.AddrFrom4([4]byte{172, byte(rng.IntN(32)), byte(rng.IntN(256)), 9})
			c.Host = fmt.Sprintf("h%d.example%d.com", rng.IntN(50), rng.IntN(n/10+1))
		}
		cs[i] = c
	}
	return cs
}

// TestMatchIsSublinear counts the rules a lookup examines: growing the rule
// set 100-fold must not grow that count anywhere near 100-fold.
func TestMatchIsSublinear(t *testing.T) {
	examined := func(n int) float64 {
		m, err := NewMatcher(realisticRules(n))
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		cs := realisticConns(n)
		for i := range cs {
			_, e := m.match(&cs[i], t0)
			total += e
		}
		return float64(total) / float64(len(cs))
	}
	small, large := examined(1_000), examined(100_000)
	t.Logf("rules examined per lookup: %.2f at 1,000 rules, %.2f at 100,000 rules", small, large)
	if large > 4*small+4 {
		t.Errorf("examined %.2f per lookup at 100,000 rules vs %.2f at 1,000: lookups grow with the rule count", large, small)
	}
	// And the check can fail: a linear scan examines them all.
	if linear := 100_000.0; linear <= 4*small+4 {
		t.Fatal("bound too loose to catch a linear scan")
	}
}

func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 1_000, 100_000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			m, err := NewMatcher(realisticRules(n))
			if err != nil {
				b.Fatal(err)
			}
			cs := realisticConns(n)
			hits := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, ok := m.Match(cs[i%len(cs)], t0); ok {
					hits++
				}
			}
			b.ReportMetric(float64(hits)/float64(b.N), "hit-ratio")
		})
	}
}

func BenchmarkNewMatcher100k(b *testing.B) {
	rs := realisticRules(100_000)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := NewMatcher(rs); err != nil {
			b.Fatal(err)
		}
	}
}
