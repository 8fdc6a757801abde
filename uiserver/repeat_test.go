package uiserver

import (
	"net/netip"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

func TestRecentTuplesFindRepeats(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	tup := flow.Tuple{Proto: flow.TCP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("192.0.2.1"), SrcPort: 40000, DstPort: 443}
	var r recentTuples
	if r.repeated(tup, now) {
		t.Fatal("a first decision counted as a repeat")
	}
	if !r.repeated(tup, now.Add(time.Second)) {
		t.Error("a SYN sent again a second later is not a repeat")
	}
	if r.repeated(tup, now.Add(time.Second+repeatWindow)) {
		t.Error("the same tuple after the window is a repeat")
	}
	noPort := tup
	noPort.SrcPort = 0
	first := r.repeated(noPort, now)
	if second := r.repeated(noPort, now); first || second {
		t.Error("a connect() refused before it had a port counted as a repeat")
	}
	// The bound: the oldest tuples are forgotten first.
	for i := range maxRecentTuples + 10 {
		u := tup
		u.SrcPort = uint16(1 + i%60000)
		u.Dst = netip.AddrFrom4([4]byte{198, 51, 100, byte(i / 60000)})
		r.repeated(u, now)
	}
	if len(r.at) != maxRecentTuples || len(r.order) != maxRecentTuples {
		t.Errorf("%d tuples remembered (%d in order), want the bound %d", len(r.at), len(r.order), maxRecentTuples)
	}
}
