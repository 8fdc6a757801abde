package kdecide

import (
	"net/netip"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// TestKernelEntriesFor: a UID's count of current decisions is its own,
// counting sweeps every UID's stale decisions out of the map, and a recent
// count is shared rather than swept again.
func TestKernelEntriesFor(t *testing.T) {
	e := newKernelEnv(t)
	const other = testUID + 1
	e.remember(t, flow.TCP, "127.0.0.1", 7001, flow.ActionAllow, "rule:a")
	e.remember(t, flow.UDP, "127.0.0.1", 7001, flow.ActionDeny, "rule:b")
	k := e.exe
	k.UID, k.Proto, k.Dst, k.Port = other, flow.TCP, netip.MustParseAddr("192.0.2.1"), 443
	if err := e.k.Remember(Decision{Key: k, Action: flow.ActionAllow, By: "cache:c1", Gen: e.k.Gen(other), ExeCtime: e.ctime}); err != nil {
		t.Fatal(err)
	}
	entries := func(uid uint32) int {
		t.Helper()
		e.k.counts = nil // a fresh sweep
		n, err := e.k.EntriesFor(uid)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := entries(testUID); got != 2 {
		t.Errorf("uid %d: %d entries, want 2", testUID, got)
	}
	if got := entries(other); got != 1 {
		t.Errorf("uid %d: %d entries, want 1", other, got)
	}
	if got := entries(other + 1); got != 0 {
		t.Errorf("a uid with no decisions: %d entries", got)
	}
	if st, err := e.k.Stats(); err != nil || st.Entries != 3 {
		t.Errorf("stats: %+v %v, want 3 entries", st, err)
	}
	// Within sweepEvery of a sweep, its counts answer (here the last one
	// is made to look recent for as long as the test runs).
	e.k.counts.at = time.Now().Add(time.Hour)
	e.remember(t, flow.TCP, "127.0.0.1", 7002, flow.ActionAllow, "rule:c")
	if n, err := e.k.EntriesFor(testUID); err != nil || n != 2 {
		t.Errorf("uid %d within sweepEvery of the last sweep: %d %v, want its count, 2", testUID, n, err)
	}
	if got := entries(testUID); got != 3 {
		t.Errorf("uid %d, swept again: %d entries, want 3", testUID, got)
	}

	// The other UID's decisions go stale: counting testUID's removes them.
	if err := e.k.Invalidate(other); err != nil {
		t.Fatal(err)
	}
	if got := entries(testUID); got != 3 {
		t.Errorf("uid %d after another uid's invalidation: %d entries, want 3", testUID, got)
	}
	if n := mapLen(t, e.k); n != 3 {
		t.Errorf("%d decisions left in the map after the sweep, want 3 (the stale one deleted)", n)
	}
	if got := entries(other); got != 0 {
		t.Errorf("uid %d after its invalidation: %d entries, want 0", other, got)
	}
}

// mapLen counts the decisions map's entries, current or not.
func mapLen(t *testing.T, k *Kernel) int {
	t.Helper()
	var (
		key decideKdKey
		v   decideKdValue
		n   int
	)
	it := k.objs.Decisions.Iterate()
	for it.Next(&key, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
