package agent

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/peercred"
	"github.com/bastion-fw/bastion/internal/policy"
)

type fakeRelease struct {
	mu  sync.Mutex
	got map[uint32]flow.Action
	// settle waits for the rule workers, whose verdicts come later.
	settle func()
}

func (f *fakeRelease) Release(p PacketRef, a flow.Action) error {
	id := p.ID
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, dup := f.got[id]; dup {
		panic("packet released twice")
	}
	f.got[id] = a
	return nil
}

func (f *fakeRelease) verdict(id uint32) flow.Action {
	if f.settle != nil {
		f.settle()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.got[id]
}

// rawVerdict is verdict without waiting for the rule workers.
func (f *fakeRelease) rawVerdict(id uint32) flow.Action {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.got[id]
}

// fakeClock drives the engine's time and timers by hand.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at time.Time
	fn func()
	t  *time.Timer
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, fn func()) *time.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	// A real, stopped timer gives the engine something to Stop.
	t := time.NewTimer(time.Hour)
	t.Stop()
	c.timers = append(c.timers, &fakeTimer{at: c.now.Add(d), fn: fn, t: t})
	return t
}

// Advance moves the clock and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	rest := c.timers[:0]
	for _, ft := range c.timers {
		if !ft.at.After(c.now) {
			due = append(due, ft.fn)
		} else {
			rest = append(rest, ft)
		}
	}
	c.timers = rest
	c.mu.Unlock()
	for _, fn := range due {
		fn()
	}
}

func newTestEngine(t *testing.T) (*Engine, *fakeRelease, *fakeClock) {
	t.Helper()
	r := &fakeRelease{got: make(map[uint32]flow.Action)}
	clk := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	e := newEngine(slog.New(slog.NewTextHandler(io.Discard, nil)), policy.Default(), r)
	e.now, e.after = clk.Now, clk.AfterFunc
	r.settle = e.waitRulesIdle
	t.Cleanup(func() { e.Close(flow.ActionDeny) })
	return e, r, clk
}

func tcp(dst string, sport, dport uint16) flow.Tuple {
	return flow.Tuple{Proto: flow.TCP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr(dst), SrcPort: sport, DstPort: dport}
}

var (
	curl1000 = flow.Process{PID: 50, TGID: 50, UID: 1000, GID: 1000, Comm: "curl", Exe: "/usr/bin/curl", ExeIdentity: flow.ExeHost, Source: "test"}
	wget1001 = flow.Process{PID: 60, TGID: 60, UID: 1001, GID: 1001, Comm: "wget", Exe: "/usr/bin/wget", ExeIdentity: flow.ExeHost, Source: "test"}
	root     = flow.Process{PID: 70, TGID: 70, UID: 0, Comm: "apt", Exe: "/usr/bin/apt", ExeIdentity: flow.ExeHost, Source: "test"}
	alice    = peercred.Cred{UID: 1000, PID: 1}
	bob      = peercred.Cred{UID: 1001, PID: 2}
	admin    = peercred.Cred{UID: 0, PID: 3}
)

func TestSystemPolicyAllowsRootAtOnce(t *testing.T) {
	e, r, _ := newTestEngine(t)
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), root)
	if got := r.verdict(1); got != flow.ActionAllow {
		t.Fatalf("root connection verdict = %v, want allow", got)
	}
	if n, _ := e.Stats(); n != 0 {
		t.Fatalf("%d pending, want 0", n)
	}
}

func TestDeadlineAppliesTimeoutAction(t *testing.T) {
	e, r, clk := newTestEngine(t)
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	if got := r.verdict(1); got != flow.ActionNone {
		t.Fatalf("verdict before deadline = %v, want none", got)
	}
	clk.Advance(29 * time.Second)
	if got := r.verdict(1); got != flow.ActionNone {
		t.Fatalf("verdict 1s before deadline = %v, want none", got)
	}
	clk.Advance(time.Second)
	// The default deadline action refuses (reset / ICMP unreachable),
	// so the program fails at once instead of at its own time-out.
	if got := r.verdict(1); got != flow.ActionReject {
		t.Fatalf("verdict at deadline = %v, want reject", got)
	}
	if e.Counters.DeadlineDecisions.Load() != 1 {
		t.Fatal("deadline decision not counted")
	}
}

func TestRetransmitsAndParallelConnectionsShareOneEntry(t *testing.T) {
	e, r, _ := newTestEngine(t)
	events := e.WatchPending(alice)
	cancel := events.Cancel
	defer cancel()
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.1", 40000, 443), curl1000) // retransmitted SYN
	e.Handle(PacketRef{ID: 3}, tcp("192.0.2.1", 40001, 443), curl1000) // parallel connection
	if n, _ := e.Stats(); n != 1 {
		t.Fatalf("%d pending entries, want 1", n)
	}
	ev := next(t, events)
	if ev.Kind != PendingAdded {
		t.Fatalf("first event %v, want added", ev.Kind)
	}
	if events.Len() != 0 {
		t.Fatalf("%d more events; retransmits must not prompt again", events.Len())
	}
	n, _, err := e.Decide(alice, DecideRequest{ID: ev.Pending.ID, Action: flow.ActionReject})
	if err != nil || n != 3 {
		t.Fatalf("Decide = %d, %v; want 3 packets", n, err)
	}
	for id := uint32(1); id <= 3; id++ {
		if got := r.verdict(id); got != flow.ActionReject {
			t.Errorf("packet %d verdict %v, want reject", id, got)
		}
	}
	// A SYN retransmitted after the answer gets the same answer, no prompt.
	e.Handle(PacketRef{ID: 4}, tcp("192.0.2.1", 40000, 443), curl1000)
	if got := r.verdict(4); got != flow.ActionReject {
		t.Fatalf("late retransmit verdict %v, want reject", got)
	}
	if n, _ := e.Stats(); n != 0 {
		t.Fatalf("late retransmit created a pending entry")
	}
}

func TestOtherProgramsAreNotHeldBack(t *testing.T) {
	e, r, _ := newTestEngine(t)
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.2", 40002, 80), root)
	if got := r.verdict(2); got != flow.ActionAllow {
		t.Fatalf("root's connection while curl waits: %v, want allow", got)
	}
}

func TestUsersSeeAndDecideOnlyTheirOwn(t *testing.T) {
	e, r, _ := newTestEngine(t)
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.1", 40001, 443), wget1001)
	aliceList := e.ListPending(alice)
	if len(aliceList) != 1 || aliceList[0].Process.UID != 1000 {
		t.Fatalf("alice sees %+v", aliceList)
	}
	if got := len(e.ListPending(admin)); got != 2 {
		t.Fatalf("root sees %d, want 2", got)
	}
	bobList := e.ListPending(bob)
	if _, _, err := e.Decide(bob, DecideRequest{ID: aliceList[0].ID, Action: flow.ActionAllow}); err != errNotFound {
		t.Fatalf("bob deciding alice's connection: %v, want not found (as for a missing one)", err)
	}
	if r.verdict(1) != flow.ActionNone {
		t.Fatal("bob's attempt released alice's packet")
	}
	if _, _, err := e.Decide(admin, DecideRequest{ID: bobList[0].ID, Action: flow.ActionDeny}); err != nil {
		t.Fatalf("root deciding bob's connection: %v", err)
	}
	if r.verdict(2) != flow.ActionDeny {
		t.Fatal("root's deny not applied")
	}
	if _, _, err := e.Decide(alice, DecideRequest{ID: bobList[0].ID, Action: flow.ActionAllow}); err != errNotFound {
		t.Fatalf("deciding twice: %v, want not found", err)
	}
}

func TestScopedDecisionIsCachedAndExpires(t *testing.T) {
	e, r, clk := newTestEngine(t)
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	id := e.ListPending(alice)[0].ID
	if _, cid, err := e.Decide(alice, DecideRequest{ID: id, Action: flow.ActionAllow, Scope: ScopeDestinationPort, Lifetime: time.Minute}); err != nil || cid == "" {
		t.Fatalf("Decide: %q %v", cid, err)
	}
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.1", 40010, 443), curl1000)
	if r.verdict(2) != flow.ActionAllow {
		t.Fatal("cached decision did not apply to the next connection")
	}
	e.Handle(PacketRef{ID: 3}, tcp("192.0.2.1", 40011, 80), curl1000) // other port: asks
	if r.verdict(3) != flow.ActionNone {
		t.Fatal("destination-port scope covered another port")
	}
	e.Handle(PacketRef{ID: 4}, tcp("192.0.2.1", 40012, 443), wget1001) // other program: asks
	if r.verdict(4) != flow.ActionNone {
		t.Fatal("cache entry covered another user's program")
	}
	clk.Advance(61 * time.Second)
	e.Handle(PacketRef{ID: 5}, tcp("192.0.2.1", 40013, 443), curl1000)
	if r.verdict(5) == flow.ActionAllow {
		t.Fatal("expired cache entry still decided")
	}
}

func TestCachePrecedenceMostSpecificWins(t *testing.T) {
	c := newDecisionCache()
	now := time.Unix(0, 0)
	t1 := tcp("192.0.2.1", 1, 443)
	c.put(keyFor(ScopeAny, 1000, "/usr/bin/curl", t1), flow.ActionDeny, time.Time{})
	c.put(keyFor(ScopePort, 1000, "/usr/bin/curl", t1), flow.ActionReject, time.Time{})
	c.put(keyFor(ScopeDestinationPort, 1000, "/usr/bin/curl", t1), flow.ActionAllow, time.Time{})
	for _, tc := range []struct {
		t    flow.Tuple
		want flow.Action
	}{
		{t1, flow.ActionAllow},
		{tcp("192.0.2.9", 1, 443), flow.ActionReject},
		{tcp("192.0.2.9", 1, 80), flow.ActionDeny},
	} {
		if e := c.lookup(1000, "/usr/bin/curl", tc.t, now); e == nil || e.action != tc.want {
			t.Errorf("lookup %v = %+v, want %v", tc.t, e, tc.want)
		}
	}
	if e := c.lookup(1001, "/usr/bin/curl", t1, now); e != nil {
		t.Errorf("other uid matched %+v", e)
	}
}

func TestWideDecisionSettlesOtherPendingEntries(t *testing.T) {
	e, r, _ := newTestEngine(t)
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.2", 40001, 443), curl1000)
	if n, _ := e.Stats(); n != 2 {
		t.Fatalf("%d pending, want 2", n)
	}
	id := e.ListPending(alice)[0].ID
	if _, _, err := e.Decide(alice, DecideRequest{ID: id, Action: flow.ActionAllow, Scope: ScopeAny}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.verdict(1) != flow.ActionAllow || r.verdict(2) != flow.ActionAllow {
		if time.Now().After(deadline) {
			t.Fatalf("verdicts %v %v, want both allow", r.verdict(1), r.verdict(2))
		}
		time.Sleep(time.Millisecond)
	}
	if n, _ := e.Stats(); n != 0 {
		t.Fatalf("%d pending after scope-any answer", n)
	}
}

func TestWatcherTurnsPolicyIntoPrompt(t *testing.T) {
	e, r, _ := newTestEngine(t)
	cancel := e.WatchPending(admin).Cancel
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), root)
	if r.verdict(1) != flow.ActionNone {
		t.Fatal("root's connection decided by policy while root's prompt client is connected")
	}
	cancel()
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.2", 40000, 443), root)
	if r.verdict(2) != flow.ActionAllow {
		t.Fatal("policy not applied after the watcher left")
	}
}

func TestCloseReleasesEverything(t *testing.T) {
	e, r, _ := newTestEngine(t)
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.2", 40000, 443), wget1001)
	e.Close(flow.ActionAllow)
	e.Handle(PacketRef{ID: 3}, tcp("192.0.2.3", 40000, 443), wget1001)
	for id := uint32(1); id <= 3; id++ {
		if r.verdict(id) != flow.ActionAllow {
			t.Errorf("packet %d: %v after Close, want allow", id, r.verdict(id))
		}
	}
}

func TestDecisionHistoryIsFilteredAndOrdered(t *testing.T) {
	e, _, _ := newTestEngine(t)
	for i := range historySize + 10 {
		p := root
		if i%2 == 1 {
			p = flow.Process{UID: 1000, TGID: 9, Exe: "/x", ExeIdentity: flow.ExeHost}
			e.pol.Rules[1].Mode = policy.ModeAllow
		}
		e.Handle(PacketRef{ID: uint32(i + 1)}, tcp("192.0.2.1", uint16(i), 443), p)
	}
	events := e.WatchDecisions(alice)
	cancel := events.Cancel
	defer cancel()
	var last uint16
	n := 0
	for events.Len() > 0 {
		d := next(t, events)
		if d.Process.UID != 1000 {
			t.Fatalf("alice saw uid %d", d.Process.UID)
		}
		if n > 0 && d.Tuple.SrcPort <= last {
			t.Fatalf("history out of order: %d after %d", d.Tuple.SrcPort, last)
		}
		last = d.Tuple.SrcPort
		n++
	}
	if n != historySize/2 {
		t.Fatalf("alice saw %d decisions, want %d", n, historySize/2)
	}
}

// A 5-tuple reused by another process soon after a decision is asked about
// afresh: only the same process's retransmissions inherit the verdict.
func TestReusedTupleFromAnotherProcessIsAskedAgain(t *testing.T) {
	e, r, _ := newTestEngine(t)
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	id := e.ListPending(alice)[0].ID
	if _, _, err := e.Decide(alice, DecideRequest{ID: id, Action: flow.ActionAllow}); err != nil {
		t.Fatal(err)
	}
	other := curl1000
	other.PID, other.TGID = 51, 51
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.1", 40000, 443), other)
	if got := r.verdict(2); got != flow.ActionNone {
		t.Fatalf("another process reusing the tuple got %v from the first one's answer", got)
	}
	mallory := flow.Process{PID: 52, TGID: 52, UID: 1001, Exe: "/usr/bin/curl", ExeIdentity: flow.ExeHost}
	e.Handle(PacketRef{ID: 3}, tcp("192.0.2.1", 40000, 443), mallory)
	if got := r.verdict(3); got != flow.ActionNone {
		t.Fatalf("another user reusing the tuple got %v", got)
	}
	e.Handle(PacketRef{ID: 4}, tcp("192.0.2.1", 40000, 443), curl1000)
	if got := r.verdict(4); got != flow.ActionAllow {
		t.Fatalf("the same process's retransmission got %v, want allow", got)
	}
}

// With the socket known, even the same process is asked again when a new
// socket reuses the tuple: an "allow once" covers one connection only.
func TestReusedTupleFromANewSocketIsAskedAgain(t *testing.T) {
	e, r, _ := newTestEngine(t)
	first := curl1000
	first.Socket = 1001
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), first)
	if _, _, err := e.Decide(alice, DecideRequest{ID: e.ListPending(alice)[0].ID, Action: flow.ActionAllow}); err != nil {
		t.Fatal(err)
	}
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.1", 40000, 443), first)
	if got := r.verdict(2); got != flow.ActionAllow {
		t.Fatalf("retransmission from the same socket got %v, want allow", got)
	}
	second := first
	second.Socket = 1002
	e.Handle(PacketRef{ID: 3}, tcp("192.0.2.1", 40000, 443), second)
	if got := r.verdict(3); got != flow.ActionNone {
		t.Fatalf("a new socket reusing the tuple got %v without being asked", got)
	}
}

func TestGrowingEntryIsAnnouncedSparingly(t *testing.T) {
	e, _, clk := newTestEngine(t)
	events := e.WatchPending(alice)
	cancel := events.Cancel
	defer cancel()
	for i := range 500 {
		e.Handle(PacketRef{ID: uint32(i + 1)}, tcp("192.0.2.1", uint16(40000+i), 443), curl1000)
	}
	if ev := next(t, events); ev.Kind != PendingAdded {
		t.Fatalf("first event %v, want added", ev.Kind)
	}
	if events.Len() != 0 {
		t.Fatalf("%d more events before the update interval; want them batched", events.Len())
	}
	clk.Advance(updateInterval)
	ev := next(t, events)
	if ev.Kind != PendingUpdated || ev.Pending.Packets != 500 {
		t.Fatalf("got %v with %d packets, want one update with 500", ev.Kind, ev.Pending.Packets)
	}
	if events.Len() != 0 {
		t.Fatalf("%d extra events", events.Len())
	}
}

// Once a socket is gone, its retransmission verdicts and those whose socket
// was unknown no longer answer; other sockets' stay.
func TestForgetRecent(t *testing.T) {
	e, r, _ := newTestEngine(t)
	tup := flow.Tuple{Proto: flow.UDP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("192.0.2.1"), SrcPort: 40000, DstPort: 53}
	decide := func(id uint32, p flow.Process) {
		t.Helper()
		e.Handle(PacketRef{ID: id}, tup, p)
		pend := e.ListPending(admin)
		if len(pend) != 1 {
			t.Fatalf("%d pending, want 1", len(pend))
		}
		if _, _, err := e.Decide(admin, DecideRequest{ID: pend[0].ID, Action: flow.ActionAllow}); err != nil {
			t.Fatal(err)
		}
	}
	unknown := curl1000 // a mechanism that does not know sockets
	decide(1, unknown)
	e.Handle(PacketRef{ID: 2}, tup, unknown)
	if got := r.verdict(2); got != flow.ActionAllow {
		t.Fatalf("retransmission got %v, want allow", got)
	}
	onSocket := wget1001
	onSocket.Socket = 77
	decide(3, onSocket)

	e.ForgetRecent(tup, 99) // another socket of the tuple was destroyed
	e.Handle(PacketRef{ID: 4}, tup, unknown)
	if got := r.verdict(4); got != flow.ActionNone {
		t.Errorf("after the tuple's socket was destroyed, a sender with no known socket got %v unasked", got)
	}
	e.Handle(PacketRef{ID: 5}, tup, onSocket)
	if got := r.verdict(5); got != flow.ActionAllow {
		t.Errorf("socket 77, still alive, got %v for its retransmission, want allow", got)
	}
	e.ForgetRecent(tup, 77)
	e.Handle(PacketRef{ID: 6}, tup, onSocket)
	if got := r.verdict(6); got != flow.ActionNone {
		t.Errorf("after socket 77 was destroyed its verdict still answered: %v", got)
	}
}

// next returns the next event of f, failing t if none comes within 5s.
func next[T any](t *testing.T, f *Feed[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := f.Next(ctx)
	if err != nil {
		t.Fatalf("next event: %v", err)
	}
	return v
}
