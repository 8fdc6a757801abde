package gtkclient

import (
	"slices"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/gtkclient/internal/demo"
)

// BenchmarkPromptToWindow measures the time from the rules service
// sending a prompt to the prompt window showing it (stream, IdleAdd,
// filling and mapping the window), and reports the median and the 99th
// percentile. Each prompt is withdrawn before the next, so every one maps
// the window anew.
func BenchmarkPromptToWindow(b *testing.B) {
	e := newEnv(b, envOpt{})
	shown := make(chan string, 1)
	onGTK(b, func() { e.a.prompt.onShown = func(id string) { shown <- id } })
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		p := demo.CurlPrompt(testNow, time.Minute)
		p.Flow.SrcPort = uint32(10000 + i%50000)
		start := time.Now()
		id := e.svc.AddPrompt(p)
		for got := <-shown; got != id; got = <-shown {
		}
		lat = append(lat, time.Since(start))
		e.svc.Withdraw(id, "answered")
		e.promptHidden()
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
