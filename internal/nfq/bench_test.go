package nfq_test

import (
	"testing"

	"github.com/bastion-fw/bastion/internal/fw"
	"github.com/bastion-fw/bastion/internal/nfq"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// BenchmarkRepeat measures the verdict the agent gives every decided
// packet: NF_REPEAT with a mark. The queue is opened but never bound, so
// the kernel refuses each verdict (asynchronously, ENODEV); what is
// measured is building and sending it.
func BenchmarkRepeat(b *testing.B) {
	testenv.RequireRoot(b) // opening a queue socket needs CAP_NET_ADMIN
	q, err := nfq.Open(nfq.Config{Num: 65000})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	mark := fw.DefaultMarks().Allow
	b.ReportAllocs()
	var id uint32
	for b.Loop() {
		id++
		if err := q.Repeat(id, mark); err != nil {
			b.Fatal(err)
		}
	}
}
