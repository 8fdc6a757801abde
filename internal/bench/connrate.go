package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
)

// Result is one measured case.
type Result struct {
	Name       string  `json:"name"`
	Conns      int     `json:"conns"`
	Errors     int     `json:"errors"`
	Seconds    float64 `json:"seconds"`
	ConnPerSec float64 `json:"conn_per_sec"`
	P50US      float64 `json:"connect_p50_us"`
	P99US      float64 `json:"connect_p99_us"`
	// Skipped says why the case did not run; the numbers are then zero.
	Skipped string `json:"skipped,omitempty"`
	// Note carries a sanity check, e.g. how many packets a queue saw.
	Note string `json:"note,omitempty"`
}

// ConnRate opens and closes new TCP connections to addr from workers
// goroutines, each on its own OS thread inside ns, for d, and records the
// latency of every connect(). Connections are closed with SO_LINGER 0 (a
// reset) so that no TIME_WAIT piles up and every run starts alike.
func ConnRate(ctx context.Context, ns *testenv.NS, name, addr string, workers int, d time.Duration) Result {
	type tally struct {
		lat  []time.Duration
		errs int
		err  error
	}
	tallies := make([]tally, workers)
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tl := &tallies[i]
			tl.lat = make([]time.Duration, 0, 1<<16)
			dialer := net.Dialer{Timeout: 5 * time.Second}
			// One setns per worker: the thread stays in ns for the loop.
			tl.err = ns.Do(func() error {
				for ctx.Err() == nil && time.Now().Before(stop) {
					t0 := time.Now()
					c, err := dialer.DialContext(ctx, "tcp", addr)
					if err != nil {
						tl.errs++
						if tl.errs > 1000 && len(tl.lat) == 0 {
							return fmt.Errorf("dial %s: %w", addr, err)
						}
						continue
					}
					tl.lat = append(tl.lat, time.Since(t0))
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
				return nil
			})
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	r := Result{Name: name, Seconds: elapsed.Seconds()}
	var all []time.Duration
	var errs []error
	for _, tl := range tallies {
		all = append(all, tl.lat...)
		r.Errors += tl.errs
		if tl.err != nil {
			errs = append(errs, tl.err)
		}
	}
	r.Conns = len(all)
	r.ConnPerSec = float64(r.Conns) / elapsed.Seconds()
	r.P50US, r.P99US = percentileUS(all, 0.50), percentileUS(all, 0.99)
	if err := errors.Join(errs...); err != nil {
		r.Note = err.Error()
	}
	return r
}

// percentileUS returns the q-quantile of lat in microseconds (nearest rank).
func percentileUS(lat []time.Duration, q float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	i := int(q*float64(len(lat))+0.5) - 1
	i = max(0, min(i, len(lat)-1))
	return float64(lat[i].Nanoseconds()) / 1e3
}

// AcceptAndClose listens on addr ("127.0.0.1:0") inside ns and closes every
// accepted connection until ctx ends. It returns the bound address.
func AcceptAndClose(ctx context.Context, ns *testenv.NS, addr string) (string, func(), error) {
	var l net.Listener
	err := ns.Do(func() (err error) {
		lc := net.ListenConfig{}
		l, err = lc.Listen(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return "", nil, fmt.Errorf("listen %s in %s: %w", addr, ns.Name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			c.Close()
		}
	}()
	return l.Addr().String(), func() { l.Close(); <-done }, nil
}
