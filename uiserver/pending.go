package uiserver

import (
	"context"
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
	"github.com/bastion-fw/bastion/internal/store"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// entry is one pending connection of the agent.
type entry struct {
	id    string
	proc  flow.Process
	tuple flow.Tuple
	// host is the destination's name when the agent learnt it from DNS.
	host     string
	packets  uint32
	deadline time.Time // the agent's; zero when it sent none
	// procs are the processes the agent's entry lists, more how many it
	// did not list.
	procs []*agentv1.Process
	more  uint32
}

// setAgent records the link's client (nil: disconnected). On disconnect
// every open prompt is withdrawn: the agent's entries belong to the link
// that reported them and die with it.
func (s *Service) setAgent(c agentv1.AgentServiceClient) {
	if c == nil {
		defer s.markPushed(0) // rule changes stop waiting for it
	}
	s.mu.Lock()
	s.agent = c
	var gone []*prompt
	if c == nil {
		for _, p := range s.prompts {
			gone = append(gone, p)
		}
		for _, p := range gone {
			s.removePromptLocked(p)
			s.broadcastLocked(withdrawn(p, "agent"))
		}
	}
	s.mu.Unlock()
}

// onPending handles one event of the agent's WatchPending stream.
func (s *Service) onPending(c agentv1.AgentServiceClient, ev *agentv1.PendingEvent) {
	pc := ev.GetConnection()
	e := &entry{
		id:      pc.GetId(),
		proc:    apiconv.Process(pc.GetProcess()),
		tuple:   apiconv.Tuple(pc.GetFlow()),
		host:    apiconv.Host(pc.GetHost()),
		packets: max(pc.GetPackets(), 1),
		procs:   pc.GetProcesses(),
		more:    pc.GetMoreProcesses(),
	}
	if e.id == "" || e.proc.UID != s.uid {
		return // a root uiserver sees everyone's; it answers only its own
	}
	if d := pc.GetDeadline(); d != nil {
		e.deadline = d.AsTime()
	}
	switch ev.GetKind() {
	case agentv1.PendingEvent_KIND_ADDED:
		s.pendingAdded(c, e)
	case agentv1.PendingEvent_KIND_UPDATED:
		s.pendingUpdated(e.id, e.packets)
	case agentv1.PendingEvent_KIND_RESOLVED:
		s.pendingResolved(e.id)
	}
}

// pendingUpdated records that more connections joined an agent entry, so
// the prompt shows how many connections the answer will release.
func (s *Service) pendingUpdated(entryID string, packets uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.byEntry[entryID]
	if p == nil {
		return
	}
	if e := p.entries[entryID]; e != nil && e.packets != packets {
		e.packets = packets
		s.broadcastLocked(&uiv1.PromptEvent{Kind: uiv1.PromptEvent_KIND_UPDATED, Prompt: s.promptProto(p)})
	}
}

func (s *Service) pendingAdded(c agentv1.AgentServiceClient, e *entry) {
	key := keyOf(e.proc, e.tuple)
	now := s.clock.Now()
	s.mu.Lock()
	if _, dup := s.byEntry[e.id]; dup {
		s.mu.Unlock()
		return
	}
	// The agent asks about a connection a rule covers when the rules
	// changed after it held the connection but before SetRules arrived.
	if r, ok := s.matcher.Match(connOf(e.proc, e.tuple, e.host), s.ruleNow()); ok {
		s.countHitLocked(r.ID, now)
		s.mu.Unlock()
		s.decideEntries(c, key, []*entry{e}, r.Action, "rule:"+r.ID, r.ID)
		return
	}
	if s.pausedLocked(now) {
		s.mu.Unlock()
		s.decideEntries(c, key, []*entry{e}, flow.ActionAllow, decidedByPause, "")
		return
	}
	if p := s.byKey[key]; p != nil {
		p.entries[e.id] = e
		s.byEntry[e.id] = p
		if d := s.promptDeadline(now, e); d.Before(p.deadline) {
			s.armLocked(p, now, d)
		}
		s.broadcastLocked(&uiv1.PromptEvent{Kind: uiv1.PromptEvent_KIND_UPDATED, Prompt: s.promptProto(p)})
		s.mu.Unlock()
		return
	}
	if len(s.subs) > 0 {
		p := &prompt{
			id: newID("p"), key: key, agent: c, first: e,
			entries: map[string]*entry{e.id: e}, firstSeen: now,
		}
		s.prompts[p.id], s.byKey[key], s.byEntry[e.id] = p, p, p
		s.armLocked(p, now, s.promptDeadline(now, e))
		s.broadcastLocked(&uiv1.PromptEvent{Kind: uiv1.PromptEvent_KIND_ADDED, Prompt: s.promptProto(p)})
		s.mu.Unlock()
		s.log.Debug("prompting", "prompt_id", p.id, "exe", e.proc.Exe, "dst", e.tuple.String(), "host", e.host)
		return
	}
	s.mu.Unlock()
	s.decideSilently(c, key, []*entry{e})
}

// promptDeadline is when a prompt for e must be decided: the configured
// timeout, but a second before the agent would decide by itself.
func (s *Service) promptDeadline(now time.Time, e *entry) time.Time {
	d := now.Add(s.config().PromptTimeout)
	if !e.deadline.IsZero() {
		if ad := e.deadline.Add(-time.Second); ad.Before(d) {
			d = ad
		}
	}
	return d
}

func (s *Service) armLocked(p *prompt, now, deadline time.Time) {
	if p.stopTimer != nil {
		p.stopTimer()
	}
	p.deadline = deadline
	id := p.id
	p.stopTimer = s.clock.AfterFunc(max(deadline.Sub(now), 0), func() { s.promptExpired(id, deadline) })
}

func (s *Service) promptExpired(id string, deadline time.Time) {
	s.mu.Lock()
	p := s.prompts[id]
	if p == nil || !p.deadline.Equal(deadline) {
		s.mu.Unlock()
		return
	}
	s.removePromptLocked(p)
	s.broadcastLocked(withdrawnAs(p, "deadline", s.cfg.TimeoutAction))
	s.mu.Unlock()
	a := s.config().TimeoutAction
	s.log.Info("prompt unanswered in time", "prompt_id", id, "exe", p.first.proc.Exe,
		"dst", p.first.tuple.String(), "verdict", a.String())
	s.decideEntries(p.agent, p.key, entriesOf(p), a, "deadline", "")
}

func (s *Service) pendingResolved(entryID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.byEntry[entryID]
	if p == nil {
		return
	}
	delete(s.byEntry, entryID)
	delete(p.entries, entryID)
	if len(p.entries) == 0 {
		s.removePromptLocked(p)
		s.broadcastLocked(withdrawn(p, "agent"))
		return
	}
	if p.first.id == entryID {
		for _, e := range p.entries {
			p.first = e
			break
		}
	}
	s.broadcastLocked(&uiv1.PromptEvent{Kind: uiv1.PromptEvent_KIND_UPDATED, Prompt: s.promptProto(p)})
}

// removePromptLocked closes p; whoever removed it decides its entries.
func (s *Service) removePromptLocked(p *prompt) {
	if p.stopTimer != nil {
		p.stopTimer()
	}
	delete(s.prompts, p.id)
	if s.byKey[p.key] == p {
		delete(s.byKey, p.key)
	}
	for id := range p.entries {
		delete(s.byEntry, id)
	}
}

func entriesOf(p *prompt) []*entry {
	out := make([]*entry, 0, len(p.entries))
	for _, e := range p.entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func withdrawn(p *prompt, reason string) *uiv1.PromptEvent {
	return &uiv1.PromptEvent{
		Kind:   uiv1.PromptEvent_KIND_WITHDRAWN,
		Prompt: &uiv1.Prompt{Id: p.id},
		Reason: reason,
	}
}

// withdrawnAs is withdrawn with the action the connections got, so that
// every client can say what finally happened.
func withdrawnAs(p *prompt, reason string, a flow.Action) *uiv1.PromptEvent {
	ev := withdrawn(p, reason)
	ev.Action = rules.ActionProto(a)
	return ev
}

func (s *Service) promptProto(p *prompt) *uiv1.Prompt {
	out := &uiv1.Prompt{
		Id:             p.id,
		Process:        apiconv.ProcessProto(p.first.proc),
		Flow:           apiconv.FlowProto(p.first.tuple),
		Host:           p.first.host,
		FirstSeen:      timestamppb.New(p.firstSeen),
		Deadline:       timestamppb.New(p.deadline),
		DeadlineAction: rules.ActionProto(s.config().TimeoutAction),
		Connections:    p.connections(),
	}
	seen := make(map[uint32]bool)
	add := func(e *entry) {
		procs := e.procs
		if len(procs) == 0 {
			procs = []*agentv1.Process{apiconv.ProcessProto(e.proc)}
		}
		for _, q := range procs {
			switch {
			case seen[q.GetTgid()]:
			case len(out.Processes) < 16:
				seen[q.GetTgid()] = true
				out.Processes = append(out.Processes, q)
			default:
				out.MoreProcesses++
			}
		}
		out.MoreProcesses += e.more
	}
	add(p.first)
	for _, e := range p.entries {
		if e != p.first {
			add(e)
		}
	}
	return out
}

// settlePrompts decides the open prompts that the current rules cover.
func (s *Service) settlePrompts() {
	now := s.ruleNow()
	type settled struct {
		p *prompt
		r *rules.Rule
	}
	var done []settled
	s.mu.Lock()
	for _, p := range s.prompts {
		if r, ok := s.matcher.Match(connOf(p.first.proc, p.first.tuple, p.first.host), now); ok {
			done = append(done, settled{p, r})
		}
	}
	for _, d := range done {
		s.removePromptLocked(d.p)
		s.broadcastLocked(withdrawnAs(d.p, "rule", d.r.Action))
		s.countHitLocked(d.r.ID, now)
	}
	s.mu.Unlock()
	for _, d := range done {
		s.decideEntries(d.p.agent, d.p.key, entriesOf(d.p), d.r.Action, "rule:"+d.r.ID, d.r.ID)
	}
}

// decideSilently applies the silent action to connections nobody can be
// asked about, and lists them for deciding later.
func (s *Service) decideSilently(c agentv1.AgentServiceClient, key promptKey, es []*entry) {
	a := s.config().SilentAction
	s.decideEntries(c, key, es, a, "default", "")
	if _, err := s.listForLater(key, es[0], a); err != nil {
		s.log.Warn("add decide-later entry", "exe", es[0].proc.Exe, "dst", es[0].tuple.String(), "err", err)
	}
}

// decideEntries answers the agent's entries with a and records the
// decision in the history.
func (s *Service) decideEntries(c agentv1.AgentServiceClient, key promptKey, es []*entry, a flow.Action, decidedBy, ruleID string) {
	now := s.clock.Now()
	s.mu.Lock()
	s.echoes[key] = now.Add(echoWindow)
	if len(s.echoes) > 4096 {
		for k, until := range s.echoes {
			if now.After(until) {
				delete(s.echoes, k)
			}
		}
	}
	s.mu.Unlock()
	// The agent counts (and records) a decision by its reason: a prompt
	// that timed out here is a deadline, not an answer.
	var reason agentv1.DecideReason
	switch decidedBy {
	case "deadline":
		reason = agentv1.DecideReason_DECIDE_REASON_DEADLINE
	case "default":
		reason = agentv1.DecideReason_DECIDE_REASON_SILENT
	}
	for _, e := range es {
		if c != nil {
			ctx, cancel := context.WithTimeout(s.ctx, decideTimeout)
			_, err := c.Decide(ctx, &agentv1.DecideRequest{
				Id: e.id, Action: apiconv.ActionProto(a), Scope: agentv1.Scope_SCOPE_CONNECTION, Reason: reason,
			})
			cancel()
			// NotFound: decided meanwhile (by a rule, another client or
			// the agent's deadline); the agent's record says how.
			if err != nil && status.Code(err) != codes.NotFound {
				s.log.Warn("decide pending connection", "id", e.id, "exe", e.proc.Exe, "dst", e.tuple.String(),
					"verdict", a.String(), "err", err)
			}
		}
		// One line per process that joined the agent's entry, each under
		// its own PID and command line (the agent's own records of these
		// decisions are skipped as echoes, see onDecision).
		procs := []flow.Process{e.proc}
		if len(e.procs) > 0 {
			procs = procs[:0]
			for _, q := range e.procs {
				procs = append(procs, apiconv.Process(q))
			}
		}
		for _, proc := range procs {
			s.record(store.HistoryEntry{
				Time: now, Process: proc, Tuple: e.tuple, Host: e.host, Action: a, DecidedBy: decidedBy, RuleID: ruleID,
			})
		}
	}
}
