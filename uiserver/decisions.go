package uiserver

import (
	"strconv"
	"strings"

	"github.com/bastion-fw/bastion/internal/apiconv"
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
	if !at.After(s.decisionMark) {
		s.mu.Unlock()
		return // replayed to us after a reconnect, recorded before
	}
	s.decisionMark = at
	if by == "retransmit" {
		// The verdict of a connection already recorded, repeated for
		// its retransmitted first packet.
		s.mu.Unlock()
		return
	}
	if by == "api:uid="+strconv.FormatUint(uint64(s.uid), 10) {
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
