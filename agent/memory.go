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

// returnMemory gives the kernel back, every interval, the heap memory that
// a burst left behind (a client's queues, a big rule set replaced, streams
// that closed), when there is more than returnMemoryAbove of it. The
// runtime would return it too, but only after its next collection, which
// an idle agent may not run for minutes, and then slowly. It runs until ctx
// ends.
func returnMemory(ctx context.Context, interval time.Duration, log *slog.Logger) error {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"}, // live and not yet collected
		{Name: "/gc/heap/live:bytes"},                // live at the last collection
		{Name: "/memory/classes/heap/free:bytes"},    // free, not yet returned
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
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
