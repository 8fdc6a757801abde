package agent

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// dropRelease is a fakeRelease that also records NF_DROPs.
type dropRelease struct {
	*fakeRelease
	mu      sync.Mutex
	dropped map[uint32]bool
}

func (d *dropRelease) Drop(p PacketRef) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dropped[p.ID] {
		panic("packet dropped twice")
	}
	d.dropped[p.ID] = true
	return nil
}

func (d *dropRelease) wasDropped(id uint32) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dropped[id]
}

// newShareEngine is an engine with small share limits.
func newShareEngine(t *testing.T, l shareLimits) (*Engine, *dropRelease, *fakeClock) {
	t.Helper()
	e, r, clk := newTestEngine(t)
	d := &dropRelease{fakeRelease: r, dropped: make(map[uint32]bool)}
	e.release = d
	e.shares = newShares(l)
	return e, d, clk
}

var smallShares = shareLimits{
	HeldPerUID: 4, PendingPerUID: 2,
	HeldTotal: 6, PendingTotal: 3,
	ReservedHeldPerUID: 1, ReservedPending: 1,
}

func TestShareDropsBeyondOneUIDsHeldPackets(t *testing.T) {
	e, r, _ := newShareEngine(t, smallShares)
	// Six parallel connections of one program to one destination: the
	// first four are held under one entry, the rest dropped.
	for id := uint32(1); id <= 6; id++ {
		e.Handle(PacketRef{ID: id}, tcp("192.0.2.1", uint16(40000+id), 443), wget1001)
	}
	for id := uint32(1); id <= 6; id++ {
		held := id <= 4
		if got := r.wasDropped(id); got == held {
			t.Errorf("packet %d dropped = %v, want %v", id, got, !held)
		}
		if got := r.verdict(id); got != flow.ActionNone {
			t.Errorf("packet %d has verdict %v; held and dropped packets have none", id, got)
		}
	}
	if got := e.Counters.Shed.Load(); got != 2 {
		t.Errorf("shed counter %d, want 2", got)
	}
	// Another user is not affected.
	e.Handle(PacketRef{ID: 7}, tcp("192.0.2.1", 41000, 443), curl1000)
	if r.wasDropped(7) || len(e.ListPending(alice)) != 1 {
		t.Fatalf("alice's connection was not held while bob is over his share")
	}
	uses, _ := e.Shares(admin)
	want := []ShareStatus{{UID: 1000, Held: 1, Pending: 1}, {UID: 1001, Held: 4, Pending: 1, Shed: 2}}
	if fmt.Sprint(uses) != fmt.Sprint(want) {
		t.Errorf("Shares(root) = %+v, want %+v", uses, want)
	}
	if uses, _ := e.Shares(alice); len(uses) != 1 || uses[0].UID != 1000 {
		t.Errorf("Shares(alice) = %+v, want only alice's", uses)
	}
	// Once bob's entry is decided, he has room again; the drops are not
	// decisions and are not remembered for retransmissions.
	id := e.ListPending(bob)[0].ID
	if n, _, err := e.Decide(bob, DecideRequest{ID: id, Action: flow.ActionAllow}); err != nil || n != 4 {
		t.Fatalf("Decide = %d, %v; want 4 packets", n, err)
	}
	e.Handle(PacketRef{ID: 8}, tcp("192.0.2.1", 40005, 443), wget1001) // packet 5's SYN again
	if r.wasDropped(8) || r.verdict(8) != flow.ActionNone || len(e.ListPending(bob)) != 1 {
		t.Fatalf("bob's resent SYN after the decision: dropped %v, verdict %v; want it asked about", r.wasDropped(8), r.verdict(8))
	}
}

func TestShareBoundsPendingEntriesPerUID(t *testing.T) {
	e, r, _ := newShareEngine(t, smallShares)
	for id := uint32(1); id <= 3; id++ {
		e.Handle(PacketRef{ID: id}, tcp("192.0.2.1", 40000, uint16(8000+id)), wget1001)
	}
	if !r.wasDropped(3) || r.wasDropped(1) || r.wasDropped(2) {
		t.Fatalf("three destinations with room for two entries: dropped %v %v %v, want only the third",
			r.wasDropped(1), r.wasDropped(2), r.wasDropped(3))
	}
	// An existing entry still takes packets within the packet share.
	e.Handle(PacketRef{ID: 4}, tcp("192.0.2.1", 40001, 8001), wget1001)
	if r.wasDropped(4) {
		t.Fatal("a packet joining an existing entry was dropped although the UID holds 2 of 4 packets")
	}
}

func TestShareTotalsKeepEachUIDsReserve(t *testing.T) {
	e, r, _ := newShareEngine(t, smallShares)
	// bob takes 4 packets in 2 entries, a third UID 2 more: the totals
	// (6 packets, 3 entries) are reached.
	for id := uint32(1); id <= 4; id++ {
		e.Handle(PacketRef{ID: id}, tcp("192.0.2.1", uint16(40000+id), uint16(8000+id%2)), wget1001)
	}
	carol := flow.Process{PID: 80, TGID: 80, UID: 1002, Comm: "nc", Exe: "/usr/bin/nc", Source: "test"}
	e.Handle(PacketRef{ID: 5}, tcp("192.0.2.1", 40005, 9000), carol)
	e.Handle(PacketRef{ID: 6}, tcp("192.0.2.1", 40006, 9000), carol)
	for id := uint32(1); id <= 6; id++ {
		if r.wasDropped(id) {
			t.Fatalf("packet %d dropped within the shares", id)
		}
	}
	// carol, past her reserve, is now bound by the totals...
	e.Handle(PacketRef{ID: 7}, tcp("192.0.2.1", 40007, 9000), carol)
	if !r.wasDropped(7) {
		t.Error("carol's third packet was held although the total is reached")
	}
	// ...but alice, who holds nothing, still gets her reserve.
	e.Handle(PacketRef{ID: 8}, tcp("192.0.2.1", 41000, 443), curl1000)
	e.Handle(PacketRef{ID: 9}, tcp("192.0.2.1", 41001, 443), curl1000)
	if r.wasDropped(8) {
		t.Error("alice's first packet was dropped: the totals must not take a UID's reserve")
	}
	if !r.wasDropped(9) {
		t.Error("alice's second packet was held past her reserve while the total is reached")
	}
}

func TestShareIsReturnedAtDeadlineAndClose(t *testing.T) {
	e, r, clk := newShareEngine(t, smallShares)
	for id := uint32(1); id <= 4; id++ {
		e.Handle(PacketRef{ID: id}, tcp("192.0.2.1", uint16(40000+id), 443), wget1001)
	}
	clk.Advance(e.pol.PromptTimeout)
	if got := r.verdict(1); got != e.pol.TimeoutAction {
		t.Fatalf("verdict at deadline %v", got)
	}
	if uses, _ := e.Shares(admin); len(uses) != 0 {
		t.Fatalf("shares after the deadline: %+v, want none", uses)
	}
	e.Handle(PacketRef{ID: 5}, tcp("192.0.2.2", 40005, 443), wget1001)
	e.Close(flow.ActionDeny)
	if uses, _ := e.Shares(admin); len(uses) != 0 {
		t.Fatalf("shares after Close: %+v, want none", uses)
	}
}

func TestShareWithoutDropperDenies(t *testing.T) {
	e, r, _ := newTestEngine(t)
	e.shares = newShares(smallShares)
	for id := uint32(1); id <= 5; id++ {
		e.Handle(PacketRef{ID: id}, tcp("192.0.2.1", uint16(40000+id), 443), wget1001)
	}
	if got := r.verdict(5); got != flow.ActionDeny {
		t.Fatalf("packet beyond the share with a releaser that cannot drop: %v, want deny", got)
	}
}

func TestShedIsLoggedAtMostOncePerInterval(t *testing.T) {
	s := newShares(smallShares)
	t0 := time.Unix(1_700_000_000, 0)
	if n := s.shed(1001, t0); n != 1 {
		t.Fatalf("first shed: log %d, want 1", n)
	}
	for i := range 5 {
		if n := s.shed(1001, t0.Add(time.Duration(i)*time.Second)); n != 0 {
			t.Fatalf("shed %v later: log %d, want 0", i, n)
		}
	}
	if n := s.shed(1002, t0); n != 1 {
		t.Fatalf("another UID's first shed: log %d, want 1", n)
	}
	if n := s.shed(1001, t0.Add(shedLogInterval)); n != 6 {
		t.Fatalf("shed after the interval: log %d, want the 6 since the last line", n)
	}
}
