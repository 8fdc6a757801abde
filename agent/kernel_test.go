package agent

import (
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/exefile"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/rules"
)

// fakeKernel records what the engine remembers in the kernel.
type fakeKernel struct {
	mu          sync.Mutex
	gens        map[uint32]uint32
	decisions   map[kdecide.Key]kdecide.Decision
	invalidated []uint32
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{gens: make(map[uint32]uint32), decisions: make(map[kdecide.Key]kdecide.Decision)}
}

func (k *fakeKernel) Gen(uid uint32) uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gens[uid]
}

func (k *fakeKernel) Invalidate(uid uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gens[uid]++
	k.invalidated = append(k.invalidated, uid)
	return nil
}

func (k *fakeKernel) Remember(d kdecide.Decision) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if d.Gen == k.gens[d.UID] {
		k.decisions[d.Key] = d
	}
	return nil
}

func (k *fakeKernel) Forget(keys []kdecide.Key) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, key := range keys {
		delete(k.decisions, key)
	}
	return nil
}

// current returns the decision for key if its generation is current.
func (k *fakeKernel) current(key kdecide.Key) (kdecide.Decision, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	d, ok := k.decisions[key]
	return d, ok && d.Gen == k.gens[key.UID]
}

// curlFile is curl1000 known by its file, as the eBPF mechanisms know it:
// the host's /usr/bin/curl, since the engine checks the file again (and
// reads its ctime) before it remembers a decision in the kernel.
var curlFile = func() flow.Process {
	p := curl1000
	p.ExeDev, p.ExeIno = 8<<20|1, 4242             // no such file: nothing is remembered
	files, _, _ := exefile.NewHost("/nonexistent") // the test's own root
	defer files.Close()
	if f, ok := files.Identity(p.Exe); ok {
		p.ExeDev, p.ExeIno = f.Dev, f.Ino
	}
	return p
}()

func keyFor1000(dst string, port uint16) kdecide.Key {
	return kdecide.Key{UID: 1000, ExeDev: curlFile.ExeDev, ExeIno: curlFile.ExeIno, Proto: flow.TCP, Dst: netip.MustParseAddr(dst), Port: port}
}

func newKernelEngine(t *testing.T) (*Engine, *fakeRelease, *fakeClock, *fakeKernel) {
	t.Helper()
	e, r, clk := newRuleEngine(t)
	k := newFakeKernel()
	e.SetKernel(k)
	return e, r, clk, k
}

// TestRuleDecisionsAreRememberedInTheKernel: a rule's decision is
// remembered for the program's file, protocol, destination and port, with
// the rule's name and expiry; what the kernel cannot apply exactly is not.
func TestRuleDecisionsAreRememberedInTheKernel(t *testing.T) {
	e, r, clk, k := newKernelEngine(t)
	expires := clk.Now().Add(time.Hour)
	dur := allowRule("for-an-hour", "/usr/bin/curl", "192.0.2.2/32", 443)
	dur.Lifetime, dur.Expires = rules.Duration, expires
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{
		allowRule("https", "/usr/bin/curl", "192.0.2.0/24", 443), dur,
		{ID: "deny-dns", Enabled: true, Action: flow.ActionDeny, Exe: "/usr/bin/curl", Proto: flow.UDP, PortMin: 53, PortMax: 53, Lifetime: rules.Forever},
	}}); err != nil {
		t.Fatal(err)
	}
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curlFile)
	if r.verdict(1) != flow.ActionAllow {
		t.Fatal("rule did not allow")
	}
	d, ok := k.current(keyFor1000("192.0.2.1", 443))
	if !ok || d.Action != flow.ActionAllow || d.By != "rule:https" || !d.Expires.IsZero() {
		t.Fatalf("remembered %+v (%v), want allow by rule:https, no expiry", d, ok)
	}
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.2", 40001, 443), curlFile)
	r.verdict(2)
	if d, ok := k.current(keyFor1000("192.0.2.2", 443)); !ok || !d.Expires.Equal(expires) || d.By != "rule:for-an-hour" {
		t.Fatalf("duration rule remembered as %+v (%v), want expiry %v", d, ok, expires)
	}

	// Not remembered: a DNS query, a process not known by its file, one
	// whose path is not verified, an unidentified one.
	dns := flow.Tuple{Proto: flow.UDP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("192.0.2.53"), SrcPort: 5353, DstPort: 53}
	e.Handle(PacketRef{ID: 3}, dns, curlFile)
	noFile := curl1000
	e.Handle(PacketRef{ID: 4}, tcp("192.0.2.4", 40002, 443), noFile)
	otherNS := curlFile
	otherNS.ExeIdentity = flow.ExeOtherNSHostFile
	e.Handle(PacketRef{ID: 5}, tcp("192.0.2.5", 40003, 443), otherNS)
	r.verdict(5) // no rule sees its path: it is asked about
	for _, id := range []uint32{3, 4} {
		if r.verdict(id) == flow.ActionNone {
			t.Fatalf("packet %d undecided", id)
		}
	}
	k.mu.Lock()
	n := 0
	for key := range k.decisions {
		if key.ExeIno == curlFile.ExeIno {
			n++
		}
	}
	k.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d decisions remembered for curlFile, want only the 2 above", n)
	}
}

// TestProcessDependentRulesStayInUserspace: where a rule that tests the
// command line or the executable's hash could apply, no decision of that
// program to that destination is remembered, whichever rule decided it —
// another process of the same program could be decided otherwise.
func TestProcessDependentRulesStayInUserspace(t *testing.T) {
	e, r, _, k := newKernelEngine(t)
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{
		allowRule("curl-any", "/usr/bin/curl", "", 0),
		{ID: "deny-upload", Enabled: true, Action: flow.ActionDeny, Exe: "/usr/bin/curl", Cmdline: `curl -T .*`,
			Dst: netip.MustParsePrefix("192.0.2.0/24"), Lifetime: rules.Forever},
		{ID: "deny-hash", Enabled: true, Action: flow.ActionDeny, ExeSHA256: sha256Hex([]byte("x")),
			Dst: netip.MustParsePrefix("198.51.100.0/24"), Lifetime: rules.Forever},
	}}); err != nil {
		t.Fatal(err)
	}
	p := curlFile
	p.Args = []string{"curl", "https://example.com"}
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), p)    // cmdline rule could apply
	e.Handle(PacketRef{ID: 2}, tcp("198.51.100.1", 40001, 443), p) // hash rule could apply
	e.Handle(PacketRef{ID: 3}, tcp("203.0.113.1", 40002, 443), p)  // neither could
	for id := uint32(1); id <= 3; id++ {
		if r.verdict(id) != flow.ActionAllow {
			t.Fatalf("packet %d: %v, want allow by curl-any", id, r.verdict(id))
		}
	}
	if _, ok := k.current(keyFor1000("192.0.2.1", 443)); ok {
		t.Error("decision remembered though a command-line rule could apply")
	}
	if _, ok := k.current(keyFor1000("198.51.100.1", 443)); ok {
		t.Error("decision remembered though a hash rule could apply")
	}
	if _, ok := k.current(keyFor1000("203.0.113.1", 443)); !ok {
		t.Error("decision no process-dependent rule could change was not remembered")
	}
}

// TestChangesInvalidateTheUIDsKernelDecisions: new rules and every change
// to a UID's cache make its remembered decisions stale before the call
// returns; other UIDs' stay.
func TestChangesInvalidateTheUIDsKernelDecisions(t *testing.T) {
	e, r, _, k := newKernelEngine(t)
	cancel := e.WatchPending(alice).Cancel
	defer cancel()
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{allowRule("https", "/usr/bin/curl", "", 443)}}); err != nil {
		t.Fatal(err)
	}
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curlFile)
	r.verdict(1)
	key := keyFor1000("192.0.2.1", 443)
	if _, ok := k.current(key); !ok {
		t.Fatal("not remembered")
	}
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{allowRule("https", "/usr/bin/curl", "", 443)}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.current(key); ok {
		t.Fatal("SetRules left the old decision current")
	}

	// A cached answer, remembered from its first hit; forgetting it makes
	// the kernel's copy stale.
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.9", 40001, 80), curlFile)
	r.verdict(2)
	pend := e.ListPending(alice)
	if len(pend) != 1 {
		t.Fatalf("%d pending, want 1", len(pend))
	}
	if _, _, err := e.Decide(alice, DecideRequest{ID: pend[0].ID, Action: flow.ActionDeny, Scope: ScopeDestinationPort}); err != nil {
		t.Fatal(err)
	}
	e.Handle(PacketRef{ID: 3}, tcp("192.0.2.9", 40002, 80), curlFile)
	if r.verdict(3) != flow.ActionDeny {
		t.Fatal("cache did not deny")
	}
	ck := keyFor1000("192.0.2.9", 80)
	d, ok := k.current(ck)
	if !ok || d.Action != flow.ActionDeny || d.By[:6] != "cache:" {
		t.Fatalf("cache hit remembered as %+v (%v)", d, ok)
	}
	if _, err := e.ForgetCache(alice, ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.current(ck); ok {
		t.Fatal("ForgetCache left the cached decision current in the kernel")
	}
	for _, uid := range k.invalidated {
		if uid != 1000 {
			t.Fatalf("uid %d invalidated by alice's changes", uid)
		}
	}
}

// fakeNames is a nameBook stand-in: one name per address, uniform unless
// said otherwise.
type fakeNames struct {
	mu      sync.Mutex
	names   map[netip.Addr]string
	mixed   map[netip.Addr]bool
	expires time.Time
}

func (f *fakeNames) uniform(uid uint32, addr netip.Addr) (string, time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mixed[addr] {
		return "", time.Time{}, false
	}
	return f.names[addr], f.expires, true
}

// TestHostRuleDecisionsFollowTheName: with a host rule that could apply, a
// decision is remembered only while every process is told the same name,
// until that name expires, and forgotten when the name changes.
func TestHostRuleDecisionsFollowTheName(t *testing.T) {
	e, r, clk, k := newKernelEngine(t)
	addr := netip.MustParseAddr("192.0.2.1")
	names := &fakeNames{names: map[netip.Addr]string{addr: "good.example"}, mixed: map[netip.Addr]bool{}, expires: clk.Now().Add(10 * time.Minute)}
	e.SetNames(names)
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{
		allowRule("curl-https", "/usr/bin/curl", "", 443),
		{ID: "deny-evil", Enabled: true, Action: flow.ActionDeny, Exe: "/usr/bin/curl", Host: "evil.example", Lifetime: rules.Forever},
	}}); err != nil {
		t.Fatal(err)
	}
	e.HandleNamed(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curlFile, "good.example")
	if r.verdict(1) != flow.ActionAllow {
		t.Fatal("not allowed")
	}
	key := keyFor1000("192.0.2.1", 443)
	d, ok := k.current(key)
	if !ok || !d.Expires.Equal(names.expires) {
		t.Fatalf("remembered %+v (%v), want until the name expires (%v)", d, ok, names.expires)
	}
	// A DNS answer changes the address's name: forgotten at once.
	e.ForgetName(addr)
	if _, ok := k.current(key); ok {
		t.Fatal("decision kept after its name changed")
	}
	// Processes told different names: nothing is remembered.
	names.mu.Lock()
	names.mixed[addr] = true
	names.mu.Unlock()
	e.HandleNamed(PacketRef{ID: 2}, tcp("192.0.2.1", 40001, 443), curlFile, "good.example")
	r.verdict(2)
	if _, ok := k.current(key); ok {
		t.Fatal("decision remembered though processes are told different names")
	}
}

// TestExactRulesAreStoredAtOnce: a rule that names one program, protocol,
// address and port is in the kernel as soon as it is set, before any
// connection, unless another rule decides that key or a rule the kernel
// cannot evaluate could apply to it.
func TestExactRulesAreStoredAtOnce(t *testing.T) {
	e, _, _, k := newKernelEngine(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, ok := e.hashes.files.Identity(exe)
	if !ok {
		t.Fatalf("no identity for %s", exe)
	}
	exact := func(id, dst string, port uint16, a flow.Action) rules.Rule {
		r := allowRule(id, exe, dst+"/32", port)
		r.Action = a
		return r
	}
	shadowed := exact("shadowed", "192.0.2.3", 443, flow.ActionAllow)
	shadowed.Created = time.Unix(1, 0)
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{
		exact("allow-one", "192.0.2.1", 443, flow.ActionAllow),
		exact("deny-one", "192.0.2.2", 80, flow.ActionDeny),
		shadowed, exact("deny-same", "192.0.2.3", 443, flow.ActionDeny), // deny beats allow on a tie
		exact("cmd-could-apply", "192.0.2.4", 443, flow.ActionAllow),
		{ID: "by-cmdline", Enabled: true, Action: flow.ActionDeny, Exe: exe, Cmdline: "x .*", Lifetime: rules.Forever,
			Dst: netip.MustParsePrefix("192.0.2.4/32")},
		allowRule("a-range", exe, "192.0.2.0/24", 0), // not exact: remembered per connection
	}}); err != nil {
		t.Fatal(err)
	}
	key := func(dst string, port uint16) kdecide.Key {
		return kdecide.Key{UID: 1000, ExeDev: f.Dev, ExeIno: f.Ino, Proto: flow.TCP, Dst: netip.MustParseAddr(dst), Port: port}
	}
	for _, tc := range []struct {
		dst    string
		port   uint16
		want   flow.Action // ActionNone: not stored
		wantBy string
	}{
		{"192.0.2.1", 443, flow.ActionAllow, "rule:allow-one"},
		{"192.0.2.2", 80, flow.ActionDeny, "rule:deny-one"},
		{"192.0.2.3", 443, flow.ActionDeny, "rule:deny-same"},
		{"192.0.2.4", 443, flow.ActionNone, ""},
	} {
		d, ok := k.current(key(tc.dst, tc.port))
		if tc.want == flow.ActionNone {
			if ok {
				t.Errorf("%s:%d stored as %+v", tc.dst, tc.port, d)
			}
			continue
		}
		if !ok || d.Action != tc.want || d.By != tc.wantBy {
			t.Errorf("%s:%d: stored %+v (%v), want %v by %s", tc.dst, tc.port, d, ok, tc.want, tc.wantBy)
		}
	}
	k.mu.Lock()
	n := len(k.decisions)
	k.mu.Unlock()
	if n != 3 {
		t.Errorf("%d decisions stored, want 3", n)
	}
}

// TestPacketsOfAUIDWithRulesCountOnce: a packet decided on its UID's rule
// worker counts once in the UID's counters, as in the totals.
func TestPacketsOfAUIDWithRulesCountOnce(t *testing.T) {
	e, r, _ := newRuleEngine(t)
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{allowRule("https", "/usr/bin/curl", "", 443)}}); err != nil {
		t.Fatal(err)
	}
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	r.verdict(1)
	if st := e.StatsFor(alice); st.Counters.Packets != 1 || st.Counters.Identified != 1 {
		t.Fatalf("alice's counters %+v, want 1 packet, 1 identified", st.Counters)
	}
}

// TestRuleForALinkIsNotStored: a rule that names a symbolic link matches
// no process (a process's path has no link in it), so it is not stored for
// the file the link leads to.
func TestRuleForALinkIsNotStored(t *testing.T) {
	e, _, _, k := newKernelEngine(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{allowRule("via-link", link, "192.0.2.1/32", 443)}}); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	n := len(k.decisions)
	k.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d decisions stored for a rule naming a link", n)
	}
}
