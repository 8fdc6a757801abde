package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/bastion-fw/bastion/internal/conntrack"
)

// destroyGather is how long the sampler lets conntrack's destroy
// notifications gather between reads. At 50,000 connections a second that
// is 1,000 notifications, well within the socket's buffer (~16,000), and
// a connection's final count arrives at most this much later.
const destroyGather = 20 * time.Millisecond

// trafficSampler feeds a trafficTable from the conntrack table of the
// agent's network namespace: a read of the whole table every interval, and,
// when the reads are too far apart to see every ended entry, the destroy
// notifications as they come.
//
// The notifications are not read otherwise, and not asked for: while any
// socket listens to them, the kernel builds and sends one for every entry
// it destroys, in the context of whatever destroys it (often a new
// connection's first packet). That cost the kernel-decided allows of issue
// 13 about a tenth of their rate with a stream of short connections.
type trafficSampler struct {
	log      *slog.Logger
	table    *trafficTable
	interval time.Duration
	ns       *os.File
	dumper   *conntrack.Dumper
	watch    *conntrack.DestroyWatcher
}

// openTrafficSampler makes sure conntrack accounting is on in ns (nil: the
// agent's own namespace), turning it on if it can, and opens the sockets
// that read the counters. Accounting stays on when the agent stops: other
// rules (connbytes, say) may rely on it by then, and it costs little.
//
// Where /proc/sys is read-only (systemd's ProtectKernelTunables=), the
// chain's accounting rule (fw.Config.Accounting) turns it on instead; the
// agent then opens the sampler again once the rules are in.
func openTrafficSampler(ns *os.File, table *trafficTable, interval time.Duration, log *slog.Logger) (*trafficSampler, error) {
	s := &trafficSampler{log: log, table: table, interval: interval, ns: ns}
	on, err := conntrack.Accounting(ns)
	if err != nil {
		return nil, err
	}
	if !on {
		if err := conntrack.SetAccounting(ns, true); err != nil {
			return nil, err
		}
		log.Info("conntrack accounting (nf_conntrack_acct) turned on in the agent's network namespace")
	}
	// Every ended entry lingers for the shortest end timeout (10 s by
	// default, a TCP entry's after a reset) after its last packet: reads
	// at most half that apart see each one at least once there.
	shortest, err := conntrack.ShortestEnd(ns)
	if err != nil {
		return nil, err
	}
	seeEnds := 2*interval <= shortest
	table.setReadsSeeEnds(seeEnds)
	if !seeEnds {
		log.Info("traffic accounting reads conntrack's destroy notifications: the interval is longer than half the shortest time an ended entry stays",
			"interval", interval, "shortest_end", shortest)
		// Subscribed before the first connection is allowed: with
		// nf_conntrack_events = 2 an entry is notified only if a
		// listener existed when it was created.
		if s.watch, err = conntrack.WatchDestroy(ns); err != nil {
			s.Close()
			return nil, err
		}
	}
	if s.dumper, err = conntrack.OpenDumper(ns); err != nil {
		s.Close()
		return nil, err
	}
	// A first read proves that dumps work here.
	if err := s.sample(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the sockets. Call after Run returned.
func (s *trafficSampler) Close() error {
	var errs []error
	if s.watch != nil {
		errs = append(errs, s.watch.Close())
	}
	if s.dumper != nil {
		errs = append(errs, s.dumper.Close())
	}
	return errors.Join(errs...)
}

// sample reads the conntrack table once into the attribution table.
func (s *trafficSampler) sample() error {
	const batch = 256
	buf := make([]conntrack.Flow, 0, batch)
	s.table.beginRead()
	st, err := s.dumper.Dump(func(f conntrack.Flow) {
		if buf = append(buf, f); len(buf) == batch {
			s.table.readFlows(buf)
			buf = buf[:0]
		}
	})
	s.table.readFlows(buf)
	if err != nil {
		return err
	}
	s.table.endRead()
	if st.Malformed > 0 {
		s.log.Warn("conntrack entries that did not parse were skipped", "entries", st.Entries, "malformed", st.Malformed)
	}
	return nil
}

// Run reads the conntrack table every interval and handles destroy
// notifications until ctx ends. It returns an error only if reading fails
// for good; the caller then reports accounting as stopped.
func (s *trafficSampler) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	var closeWatch sync.Once
	stopWatch := func() {
		closeWatch.Do(func() {
			if s.watch != nil {
				s.watch.SetReadDeadline(time.Unix(1, 0))
			}
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		stopWatch()
		return nil
	})
	g.Go(func() error {
		if s.watch == nil {
			return nil
		}
		var buf []conntrack.Flow
		lostLogged := false
		for {
			var err error
			var bad int
			buf, bad, err = s.watch.Receive(buf[:0])
			if gctx.Err() != nil {
				return nil
			}
			switch {
			case errors.Is(err, conntrack.ErrLost):
				// The connections they ended are found missing by
				// the next reads of the table.
				if !lostLogged {
					s.log.Warn("conntrack destroy notifications were lost; the last bytes of the connections they ended are counted as lost", "err", err)
					lostLogged = true
				}
			case err != nil:
				return fmt.Errorf("conntrack destroy notifications: %w", err)
			}
			if bad > 0 {
				s.log.Warn("conntrack destroy notifications that did not parse were skipped", "malformed", bad)
			}
			s.table.destroyed(buf)
			clear(buf)
			// Let the next notifications gather in the socket's buffer:
			// under a stream of short connections the reader then wakes
			// once per batch instead of once per connection.
			select {
			case <-gctx.Done():
				return nil
			case <-time.After(destroyGather):
			}
		}
	})
	g.Go(func() error {
		defer stopWatch()
		t := time.NewTicker(s.interval)
		defer t.Stop()
		failures := 0
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
			}
			if err := s.sample(); err != nil {
				// A read can fail once (a signal, memory); three in a
				// row is a broken socket.
				if failures++; failures >= 3 {
					return fmt.Errorf("read the conntrack table: %w", err)
				}
				s.log.Warn("read the conntrack table", "err", err)
				continue
			}
			failures = 0
		}
	})
	return g.Wait()
}
