package agent

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// returnMemoryAbove is how much garbage and free heap the agent keeps
// before it gives memory back to the kernel at once.
const returnMemoryAbove = 8 << 20

// busyPackets is how many packets in one interval make the agent busy, too
// busy to force a collection (see returnMemory).
const busyPackets = 1000

// returnMemory gives the kernel back, every interval, the heap memory that
// a burst left behind (a client's queues, a big rule set replaced, streams
// that closed), when there is more than returnMemoryAbove of it. The
// runtime would return it too, but only after its next collection, which
// an idle agent may not run for minutes, and then slowly. It runs until ctx
// ends.
//
// While packets flow (more than busyPackets in an interval, counted by
// packets), it leaves the memory to the runtime: collections then run
// often anyway, and a forced one (a full collection and scavenge) every
// interval slowed cached decisions by a third for a moment in make bench.
func returnMemory(ctx context.Context, interval time.Duration, packets func() uint64, log *slog.Logger) error {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"}, // live and not yet collected
		{Name: "/gc/heap/live:bytes"},                // live at the last collection
		{Name: "/memory/classes/heap/free:bytes"},    // free, not yet returned
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	last := packets()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n := packets()
		busy := n-last > busyPackets
		last = n
		if busy {
			continue
		}
		metrics.Read(samples)
		objects, live, free := samples[0].Value.Uint64(), samples[1].Value.Uint64(), samples[2].Value.Uint64()
		if objects > live {
			free += objects - live
		}
		if free < returnMemoryAbove {
			continue
		}
		start := time.Now()
		debug.FreeOSMemory()
		log.Debug("returned memory to the kernel", "unused_bytes", free, "took", time.Since(start))
	}
}
