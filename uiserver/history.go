package uiserver

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/feed"
	"github.com/bastion-fw/bastion/internal/rules"
	"github.com/bastion-fw/bastion/internal/store"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// record adds e to the history and the statistics, written with the next
// flush (stats.go), and sends it to the watchers.
func (s *Service) record(e store.HistoryEntry) {
	s.histMu.Lock()
	defer s.histMu.Unlock()
	if s.stats.recent.repeated(e.Tuple, e.Time) {
		s.addStatsLocked("a decision", func(b *store.Batch) error { return b.AddRepeatedDecision(e) })
	} else {
		s.addStatsLocked("a decision", func(b *store.Batch) error { return b.AddDecision(e) })
	}
	pe := historyProto(e)
	for sub := range s.histSubs {
		if !sub.Push(pe) {
			s.log.Warn("dropping a history client that fell behind")
			delete(s.histSubs, sub)
			sub.Close()
		}
	}
}

// subscribeHistory returns the stored history and subscribes to new
// entries, with nothing lost or repeated in between.
func (s *Service) subscribeHistory(ctx context.Context) ([]store.HistoryEntry, *feed.Subscriber[*uiv1.HistoryEntry], error) {
	// No flush runs meanwhile: an entry is either in the store or in the
	// batch, never in both or neither.
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.histMu.Lock()
	defer s.histMu.Unlock()
	var past []store.HistoryEntry
	if n := s.config().HistorySize; n > 0 { // 0: none (the store's 0 would be all)
		var err error
		if past, err = s.store.History(ctx, n); err != nil {
			return nil, nil, fmt.Errorf("read history: %w", err)
		}
		past = append(past, s.stats.batch.History()...)
		past = past[max(0, len(past)-n):]
	}
	sub := newSubscriber[*uiv1.HistoryEntry](0)
	s.histSubs[sub] = struct{}{}
	return past, sub, nil
}

func (s *Service) unsubscribeHistory(sub *feed.Subscriber[*uiv1.HistoryEntry]) {
	s.histMu.Lock()
	defer s.histMu.Unlock()
	if _, ok := s.histSubs[sub]; ok {
		delete(s.histSubs, sub)
		sub.Close()
	}
}

func historyProto(e store.HistoryEntry) *uiv1.HistoryEntry {
	return &uiv1.HistoryEntry{
		Time:      timestamppb.New(e.Time),
		Process:   apiconv.ProcessProto(e.Process),
		Flow:      apiconv.FlowProto(e.Tuple),
		Host:      e.Host,
		Action:    rules.ActionProto(e.Action),
		DecidedBy: e.DecidedBy,
		RuleId:    e.RuleID,
	}
}
