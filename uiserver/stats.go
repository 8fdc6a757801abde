package uiserver

import (
	"context"
	"fmt"
	"time"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/store"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// What the service records of decisions and traffic (the history and the
// per-program aggregates) is gathered in memory and written to the store
// every statsFlushPeriod, and when the service stops: the store fsyncs
// every commit, and one commit per connection could not keep up with a
// flood of connections. So a crash (not a stop) loses at most the last
// second or so of history and statistics; rules are never batched.
const (
	statsFlushPeriod = time.Second
	// flushAt is how many decisions and samples make a flush start at
	// once rather than at the next tick.
	flushAt = 10_000
	// maxUnflushed bounds what waits in memory while a flush is slow
	// (say, a slow disk): beyond it, decisions and samples are counted
	// and left out of the store (they still reach history watchers).
	maxUnflushed = 50_000
	// prunePeriod is how often what is older than its retention is
	// dropped from the store.
	prunePeriod = time.Minute
)

// A connection the agent decides more than once — a SYN sent again after a
// drop, a datagram sent again on a denied flow — comes back with the same
// 5-tuple: each decision is history, but the programs view counts the
// connection once. repeatWindow is how long a tuple counts as the same
// connection (TCP gives up on a SYN after about 127 s); at most
// maxRecentTuples are remembered, the oldest forgotten first.
const (
	repeatWindow    = 130 * time.Second
	maxRecentTuples = 8192
)

// recentTuples remembers when each 5-tuple was last counted as a
// connection.
type recentTuples struct {
	at    map[flow.Tuple]time.Time
	order []flow.Tuple // insertion order, for forgetting the oldest
}

// repeated says whether t, decided at now, was counted within
// repeatWindow, and remembers it. A tuple with no source port (a connect()
// refused before the socket had one) is never a repeat: each is a new
// attempt.
func (r *recentTuples) repeated(t flow.Tuple, now time.Time) bool {
	if t.SrcPort == 0 {
		return false
	}
	if last, ok := r.at[t]; ok && now.Sub(last) >= 0 && now.Sub(last) < repeatWindow {
		return true
	}
	if r.at == nil {
		r.at = make(map[flow.Tuple]time.Time)
	}
	if _, ok := r.at[t]; !ok {
		if len(r.order) >= maxRecentTuples {
			delete(r.at, r.order[0])
			r.order = r.order[1:]
		}
		r.order = append(r.order, t)
	}
	r.at[t] = now
	return false
}

// statsState is what waits to be written; guarded by Service.histMu.
type statsState struct {
	batch *store.Batch
	// recent finds the decisions that repeat a connection's.
	recent recentTuples
	// lost counts decisions and samples left out since the last warning.
	lost int
	// kick asks the flusher to flush now.
	kick chan struct{}
}

// addStatsLocked adds to the batch with add; histMu is held.
func (s *Service) addStatsLocked(what string, add func(*store.Batch) error) {
	if s.stats.batch.Len() >= maxUnflushed {
		s.stats.lost++
		return
	}
	if err := add(s.stats.batch); err != nil {
		s.log.Warn("cannot record "+what, "err", err)
		return
	}
	if s.stats.batch.Len() >= flushAt {
		select {
		case s.stats.kick <- struct{}{}:
		default:
		}
	}
}

// onTraffic records one batch of the agent's WatchTraffic stream: the
// bytes of this user's connections.
func (s *Service) onTraffic(tb *agentv1.TrafficBatch) {
	if n := tb.GetDropped(); n > 0 {
		s.log.Warn("the agent dropped traffic samples: this service fell behind; their bytes are not counted", "dropped", n)
	}
	now := s.wallNow()
	s.histMu.Lock()
	defer s.histMu.Unlock()
	for _, smp := range tb.GetSamples() {
		proc := apiconv.Process(smp.GetProcess())
		if proc.UID != s.uid {
			continue // an agent serving root's stream to us; not ours
		}
		t := store.Traffic{
			Time: now, Process: proc, Tuple: apiconv.Tuple(smp.GetFlow()), Host: apiconv.Host(smp.GetHost()),
			BytesSent: smp.GetBytesSent(), BytesReceived: smp.GetBytesReceived(),
			PacketsSent: smp.GetPacketsSent(), PacketsReceived: smp.GetPacketsReceived(),
		}
		if ts := smp.GetTime(); ts.IsValid() {
			t.Time = ts.AsTime()
		}
		if ts := smp.GetFirstSeen(); ts.IsValid() {
			t.FirstSeen = ts.AsTime()
		}
		s.addStatsLocked("traffic", func(b *store.Batch) error { return b.AddTraffic(t) })
	}
}

// flushStats writes what waits in memory to the store. WatchHistory's
// snapshot holds flushMu, so that it sees each entry exactly once: in the
// store or in the batch.
func (s *Service) flushStats(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.histMu.Lock()
	b, lost := s.stats.batch, s.stats.lost
	s.stats.batch, s.stats.lost = store.NewBatch(), 0
	s.histMu.Unlock()
	if lost > 0 {
		s.log.Warn("decisions and traffic samples came faster than the store could take them; some are not in the history and statistics",
			"lost", lost)
	}
	// Not cancelled with ctx: the batch is out of memory already, and a
	// client that gives up on its call must not take it with it.
	if err := s.store.Record(context.WithoutCancel(ctx), b); err != nil {
		return fmt.Errorf("store %d decisions and traffic samples: %w", b.Len(), err)
	}
	return nil
}

// prune drops what is older than the history retention.
func (s *Service) prune(ctx context.Context) error {
	if err := s.store.Prune(ctx, s.wallNow(), s.config().HistoryRetention); err != nil {
		return fmt.Errorf("drop history older than its retention: %w", err)
	}
	return nil
}

// runStats flushes the statistics every statsFlushPeriod and prunes them
// every prunePeriod, until ctx ends; run flushes once more after that.
func (s *Service) runStats(ctx context.Context) error {
	if err := s.prune(ctx); err != nil {
		s.log.Warn("prune history", "err", err)
	}
	flush := time.NewTicker(s.flushEvery)
	defer flush.Stop()
	prune := time.NewTicker(prunePeriod)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-flush.C:
		case <-s.stats.kick:
		case <-prune.C:
			if err := s.prune(ctx); err != nil {
				s.log.Warn("prune history", "err", err)
			}
			continue
		}
		if err := s.flushStats(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("store history and statistics; they are lost", "err", err)
		}
	}
}
