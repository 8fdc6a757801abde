package agent

import (
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/policy"
)

// A watcher that does not read costs nothing until events come, then at
// most its bound: past it, it is dropped and its memory goes.
func TestUnreadWatcherIsDroppedAtItsBound(t *testing.T) {
	e, _, _ := newTestEngine(t)
	e.pol.Rules[1].Mode = policy.ModeAllow // alice's connections decided at once
	f := e.WatchDecisions(alice)
	defer f.Cancel()
	if f.s.Cap() != 0 {
		t.Fatalf("a new watcher holds a queue of capacity %d before any event", f.s.Cap())
	}
	limit := watcherBuffer + historySize
	for i := range limit + 1 {
		e.Handle(PacketRef{ID: uint32(i + 1)}, tcp("192.0.2.1", uint16(i), 443), curl1000)
	}
	select {
	case <-f.Gone():
	default:
		t.Fatalf("watcher with %d unread events not dropped", f.Len())
	}
	if f.Len() != 0 || e.budgets[alice.UID] != nil {
		t.Fatalf("dropped watcher still holds %d events (budget %v)", f.Len(), e.budgets[alice.UID])
	}
	if _, err := f.Next(t.Context()); err != errFellBehind {
		t.Fatalf("Next on a dropped watcher: %v, want errFellBehind", err)
	}
}

// The watchers of one UID share maxQueuedPerUID: many unread streams cost
// what a few do.
func TestWatchersOfOneUIDShareABudget(t *testing.T) {
	e, _, _ := newTestEngine(t)
	e.pol.Rules[1].Mode = policy.ModeAllow
	var feeds []*Feed[Decision]
	for range 4 {
		f := e.WatchDecisions(alice)
		defer f.Cancel()
		feeds = append(feeds, f)
	}
	root := e.WatchDecisions(admin)
	defer root.Cancel()
	for i := range watcherBuffer { // 4 watchers: twice the budget
		e.Handle(PacketRef{ID: uint32(i + 1)}, tcp("192.0.2.1", uint16(i), 443), curl1000)
	}
	queued, dropped := 0, 0
	for _, f := range feeds {
		queued += f.Len()
		select {
		case <-f.Gone():
			dropped++
		default:
		}
	}
	if queued > maxQueuedPerUID || dropped < 2 {
		t.Fatalf("alice's 4 watchers hold %d events (budget %d), %d dropped; want the budget kept by dropping", queued, maxQueuedPerUID, dropped)
	}
	// Root's watcher has its own bound only.
	if root.Len() != watcherBuffer {
		t.Fatalf("root's watcher holds %d events, want all %d", root.Len(), watcherBuffer)
	}
	// Taking events gives the budget back.
	for _, f := range feeds {
		f.Take(nil, -1)
	}
	if n := e.budgets[alice.UID].n.Load(); n != 0 {
		t.Fatalf("budget after taking everything: %d", n)
	}
}

func TestCacheIsBoundedPerUID(t *testing.T) {
	c := newDecisionCache()
	put := func(uid uint32, port uint16) *cacheEntry {
		return c.put(keyFor(ScopeDestinationPort, uid, "/x", tcp("192.0.2.1", 1, port)), flow.ActionAllow, time.Time{})
	}
	aliceEntry := put(1000, 1)
	first := put(1001, 1)
	for p := range maxCachePerUID + 9 {
		put(1001, uint16(p+2))
	}
	if n := c.countFor(1001); n != maxCachePerUID {
		t.Fatalf("uid 1001 has %d entries, want the bound %d", n, maxCachePerUID)
	}
	if c.byID[first.id] != nil {
		t.Fatal("the oldest entry stayed past the bound")
	}
	if c.byID[aliceEntry.id] == nil || c.countFor(1000) != 1 {
		t.Fatal("another UID's entry was evicted")
	}
	if c.evicted != 10 {
		t.Fatalf("evicted %d, want 10", c.evicted)
	}
	// Replacing a key does not count twice, and removal unlinks.
	put(1000, 1)
	if c.countFor(1000) != 1 || len(c.byID) != maxCachePerUID+1 {
		t.Fatalf("after replacing: %d entries for 1000, %d in all", c.countFor(1000), len(c.byID))
	}
	for _, ce := range c.byID {
		c.remove(ce)
	}
	if len(c.byUID) != 0 {
		t.Fatalf("%d UIDs left after removing everything", len(c.byUID))
	}
}

// Another user's connection and cache entry are "not found", as missing
// ones: an ID's answer does not tell whether it exists.
func TestForeignIDsAreNotFound(t *testing.T) {
	e, _, _ := newTestEngine(t)
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	id := e.ListPending(alice)[0].ID
	_, cacheID, err := e.Decide(alice, DecideRequest{ID: id, Action: flow.ActionAllow, Scope: ScopeDestination})
	if err != nil {
		t.Fatal(err)
	}
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.2", 40000, 443), curl1000)
	id = e.ListPending(alice)[0].ID
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"decide another's", func() error { _, _, err := e.Decide(bob, DecideRequest{ID: id, Action: flow.ActionAllow}); return err }()},
		{"decide missing", func() error {
			_, _, err := e.Decide(bob, DecideRequest{ID: "c999", Action: flow.ActionAllow})
			return err
		}()},
		{"forget another's", func() error { _, err := e.ForgetCache(bob, cacheID); return err }()},
		{"forget missing", func() error { _, err := e.ForgetCache(bob, "d999"); return err }()},
	} {
		if tc.err != errNotFound {
			t.Errorf("%s: %v, want errNotFound", tc.name, tc.err)
		}
	}
	if len(e.ListPending(alice)) != 1 || len(e.ListCache(alice)) != 1 {
		t.Fatal("bob's calls changed alice's state")
	}
}

// Each UID's counters count only its own packets.
func TestStatsForCountsOnlyTheCallersUID(t *testing.T) {
	e, _, _ := newTestEngine(t)
	e.pol.Rules[1].Mode = policy.ModeAllow
	for i := range 3 {
		e.Handle(PacketRef{ID: uint32(i + 1)}, tcp("192.0.2.1", uint16(40000+i), 443), curl1000)
	}
	defer e.WatchPending(bob).Cancel() // bob's prompt client: his connection is held
	e.Handle(PacketRef{ID: 10}, tcp("192.0.2.1", 40010, 443), wget1001)
	e.HandleUnparsed(PacketRef{ID: 11})
	a, b := e.StatsFor(alice), e.StatsFor(bob)
	if a.Counters.Packets != 3 || a.Counters.Allowed != 3 || a.Counters.PolicyDecisions != 3 || a.Pending != 0 {
		t.Errorf("alice's stats %+v, want 3 packets allowed by policy", a)
	}
	if b.Counters.Packets != 1 || b.Counters.Allowed != 0 || b.Pending != 1 {
		t.Errorf("bob's stats %+v, want 1 packet, pending", b)
	}
	if got := e.Counters.Packets.Load(); got != 5 {
		t.Errorf("total packets %d, want 5", got)
	}
}
