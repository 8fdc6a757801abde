package uiserver

import (
	"strconv"
	"strings"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/store"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// onDecision handles one event of the agent's WatchDecisions stream: it
// counts rule hits and records what the service did not decide itself.
func (s *Service) onDecision(ev *agentv1.DecisionEvent) {
	proc := apiconv.Process(ev.GetProcess())
	if proc.UID != s.uid {
		return
	}
	t := apiconv.Tuple(ev.GetFlow())
	at := ev.GetTime().AsTime()
	by := ev.GetDecidedBy()
	ruleID := ev.GetRuleId()
	if id, ok := strings.CutPrefix(by, "rule:"); ok && ruleID == "" {
		ruleID = id
	}
	s.mu.Lock()
	if !at.After(s.decisionMark) || !s.seen.add(decisionSeen{at.UnixNano(), proc.TGID, t, by}) {
		s.mu.Unlock()
		return // replayed to us after a reconnect, recorded before
	}
	if by == "retransmit" {
		// The verdict of a connection already recorded, repeated for
		// its retransmitted first packet.
		s.mu.Unlock()
		return
	}
	if s.ownDecideBy(by) {
		if until, ok := s.echoes[keyOf(proc, t)]; ok && !s.clock.Now().After(until) {
			s.mu.Unlock()
			return // our own answer, recorded with its reason
		}
	}
	if ruleID != "" {
		s.countHitLocked(ruleID, at)
	}
	s.mu.Unlock()
	s.record(store.HistoryEntry{
		Time: at, Process: proc, Tuple: t, Host: apiconv.Host(ev.GetHost()), Action: apiconv.Action(ev.GetAction()), DecidedBy: by, RuleID: ruleID,
	})
}

// ownDecideBy reports whether by names a Decide of this service's UID:
// an answer, or its deadline or silent action (the agent's names for
// DecideRequest's reasons).
func (s *Service) ownDecideBy(by string) bool {
	u := ":uid=" + strconv.FormatUint(uint64(s.uid), 10)
	return by == "api"+u || by == "deadline"+u || by == "default"+u
}

// decisionSeen identifies one decision of the agent's stream.
type decisionSeen struct {
	at   int64
	tgid uint32
	t    flow.Tuple
	by   string
}

// maxSeen bounds decisionsSeen. The agent replays at most its last 1,024
// decisions (agent.historySize), of every UID; the last maxSeen this
// service recorded include every one of those it recorded.
const maxSeen = 2048

// decisionsSeen are the last maxSeen decisions recorded.
type decisionsSeen struct {
	set   map[decisionSeen]struct{}
	order []decisionSeen // a ring, oldest at next once full
	next  int
}

// add records d and reports whether it is new.
func (s *decisionsSeen) add(d decisionSeen) bool {
	if _, ok := s.set[d]; ok {
		return false
	}
	if s.set == nil {
		s.set = make(map[decisionSeen]struct{}, maxSeen)
	}
	if len(s.order) < maxSeen {
		s.order = append(s.order, d)
	} else {
		delete(s.set, s.order[s.next])
		s.order[s.next] = d
		s.next = (s.next + 1) % maxSeen
	}
	s.set[d] = struct{}{}
	return true
}
