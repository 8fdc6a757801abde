package uiserver

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/bastion-fw/bastion/internal/exefile"
	"github.com/bastion-fw/bastion/internal/feed"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// promptKey groups held connections into one question: the same program
// going to the same destination. It is the agent's own grouping, so one
// prompt normally holds one agent entry, and more only when the agent made
// a new entry for the same destination (e.g. after deciding the old one).
type promptKey struct {
	exe   string
	comm  string // only when exe is unknown
	proto flow.Proto
	dst   netip.Addr
	port  uint16
	// SECURITY: for a process whose path is not verified to be the
	// host's file, the file it runs and its mount namespace are part of
	// the key, so that it never shares a prompt (and an answer) with the
	// program whose path it shows.
	ident   flow.ExeIdentity
	mntNS   uint32
	dev     uint32
	ino     uint64
	tgid    uint32 // unverified and unknown file: the process itself
	startNS uint64
}

func keyOf(p flow.Process, t flow.Tuple) promptKey {
	k := promptKey{exe: p.Exe, proto: t.Proto, dst: t.Dst, port: t.DstPort}
	if p.Exe == "" {
		k.comm = p.Comm
	}
	if p.Exe != "" && !p.ExeVerified() {
		k.ident, k.mntNS, k.dev, k.ino = p.ExeIdentity, p.MntNS, p.ExeDev, p.ExeIno
		if p.ExeIno == 0 {
			k.tgid, k.startNS = p.TGID, p.StartTime
		}
	}
	return k
}

type prompt struct {
	id    string
	key   promptKey
	agent agentv1.AgentServiceClient // the link the entries came from
	first *entry
	// entries by agent entry ID; never empty while the prompt is open.
	entries   map[string]*entry
	firstSeen time.Time
	deadline  time.Time
	stopTimer func() bool
}

func (p *prompt) connections() uint32 {
	var n uint32
	for _, e := range p.entries {
		n += e.packets
	}
	return n
}

// connOf is what a rule answering a prompt must cover. As in the agent,
// path rules see the path only when the agent verified it to be the host's
// file, and rules for a host file in every mount namespace are checked
// against the file the process runs.
func connOf(p flow.Process, t flow.Tuple, host string) rules.Conn {
	c := rules.Conn{UID: p.UID, Args: p.Args, Tuple: t, Host: host}
	// (An unchecked process keeps its path here: this only checks that an
	// answer fits its prompt; the agent matches no path rule against it.)
	if p.ExeIdentity == flow.ExeHost || p.ExeIdentity == flow.ExeUnchecked {
		c.Exe = p.Exe
	}
	if p.ExeIno != 0 {
		c.SameFile = func(path string) bool { return exefile.New().Is(path, p.ExeDev, p.ExeIno) }
	}
	return c
}

// subscribePrompts makes a prompt client: its queue starts with the open
// prompts.
func (s *Service) subscribePrompts() *feed.Subscriber[*uiv1.PromptEvent] {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := newSubscriber[*uiv1.PromptEvent](len(s.prompts))
	open := make([]*prompt, 0, len(s.prompts))
	for _, p := range s.prompts {
		open = append(open, p)
	}
	sort.Slice(open, func(i, j int) bool { return open[i].firstSeen.Before(open[j].firstSeen) })
	for _, p := range open {
		sub.Push(&uiv1.PromptEvent{Kind: uiv1.PromptEvent_KIND_ADDED, Prompt: s.promptProto(p)}) // room was made for them
	}
	s.subs[sub] = struct{}{}
	return sub
}

// unsubscribePrompts removes a prompt client. When the last one leaves,
// nobody can answer the open prompts: the silent action decides them.
func (s *Service) unsubscribePrompts(sub *feed.Subscriber[*uiv1.PromptEvent]) {
	s.mu.Lock()
	if _, ok := s.subs[sub]; ok {
		delete(s.subs, sub)
		sub.Close()
	}
	var orphans []*prompt
	if len(s.subs) == 0 {
		for _, p := range s.prompts {
			orphans = append(orphans, p)
		}
		for _, p := range orphans {
			s.removePromptLocked(p)
		}
	}
	s.mu.Unlock()
	for _, p := range orphans {
		s.decideSilently(p.agent, p.key, entriesOf(p))
	}
}

func (s *Service) broadcastLocked(ev *uiv1.PromptEvent) {
	for sub := range s.subs {
		if !sub.Push(ev) {
			s.log.Warn("dropping a prompt client that fell behind")
			delete(s.subs, sub)
			sub.Close()
		}
	}
}

// AnswerPrompt answers prompt id with rule r. The first answer wins.
func (s *Service) AnswerPrompt(ctx context.Context, id string, r rules.Rule) (rules.Rule, error) {
	r.ID, r.Hits, r.LastHit = "", 0, time.Time{}
	r.Created = s.ruleNow()
	// An answer is meant to apply.
	r.Enabled = true
	if err := r.Validate(); err != nil {
		return rules.Rule{}, fmt.Errorf("%w: %w", errInvalid, err)
	}
	s.mu.Lock()
	p := s.prompts[id]
	if p == nil {
		s.mu.Unlock()
		return rules.Rule{}, fmt.Errorf("%w: no prompt %q (already answered, timed out or withdrawn)", errNotFound, id)
	}
	if !rules.Covers(r, connOf(p.first.proc, p.first.tuple, p.first.host)) {
		s.mu.Unlock()
		return rules.Rule{}, invalidf("the rule does not cover the prompt's connection (%s, exe %q, args %q)",
			p.first.tuple.String(), p.first.proc.Exe, strings.Join(p.first.proc.Args, " "))
	}
	// Claimed: from here on, later answers get NotFound.
	s.removePromptLocked(p)
	s.mu.Unlock()

	// The user's answer decides these connections first, even if saving
	// the rule fails: saved and pushed first, the rule would decide them in
	// the agent, which records that ("rule:ID") besides our answer, so the
	// history had two lines for one answer. The rule's id is chosen now so
	// that the history names it.
	if r.Lifetime != rules.Once {
		r.ID = newID("")
	}
	s.decideEntries(p.agent, p.key, entriesOf(p), r.Action, "prompt", r.ID)
	var saveErr error
	if r.Lifetime != rules.Once {
		s.rulesMu.Lock()
		err := s.checkAgentBounds(r)
		var saved rules.Rule
		if err == nil {
			saved, err = s.addLocked(ctx, r)
		}
		if err == nil {
			r = saved
			saveErr = s.rulesChanged(ctx)
		} else {
			saveErr = err
			s.rulesMu.Unlock()
		}
	}
	s.mu.Lock()
	s.broadcastLocked(withdrawnAs(p, "answered", r.Action))
	s.mu.Unlock()
	s.log.Info("prompt answered", "prompt_id", id, "exe", p.first.proc.Exe, "dst", p.first.tuple.String(),
		"verdict", r.Action.String(), "lifetime", r.Lifetime.String(), "rule_id", r.ID)
	if saveErr != nil {
		return rules.Rule{}, fmt.Errorf("the connection got %s, but the rule was not saved: %w", r.Action, saveErr)
	}
	return r, nil
}
