package uiserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/exefile"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
	"github.com/bastion-fw/bastion/internal/store"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Errors the service returns; api.go maps them to gRPC codes.
var (
	errInvalid  = errors.New("invalid argument")
	errNotFound = errors.New("not found")
)

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errInvalid, fmt.Sprintf(format, args...))
}

const (
	// subscriberBuffer bounds the events queued for one prompt or history
	// client. A client that falls this far behind is dropped: nothing a
	// client does may stall the agent link.
	subscriberBuffer = 1024
	// decideTimeout bounds one Decide call to the agent.
	decideTimeout = 5 * time.Second
	// echoWindow is how long after our own Decide the agent's record of it
	// ("api:uid=N") is recognised as ours and not recorded twice.
	echoWindow = 10 * time.Second
)

// clock is the service's time source; tests inject a fake one so that
// prompt deadlines pass without waiting.
type clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d; stop cancels it.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

type subscriber[T any] struct {
	ch chan T
	// gone is closed when the service drops a subscriber that fell behind.
	gone chan struct{}
}

func newSubscriber[T any](extra int) *subscriber[T] {
	return &subscriber[T]{ch: make(chan T, subscriberBuffer+extra), gone: make(chan struct{})}
}

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

// options are what tests replace.
type options struct {
	clock   clock
	ruleNow func() time.Time
	// started is called with the service once it runs.
	started func(*Service)
}

// Service is the state of the rules service: the user's rules, the open
// prompts and their clients, and the link to the agent.
type Service struct {
	log     *slog.Logger
	cfg     Config
	uid     uint32
	store   *store.Store
	clock   clock
	ruleNow func() time.Time
	// ctx ends when the service stops; timers use it.
	ctx context.Context
	// rulesDirty tells the agent link to push the rules again.
	rulesDirty chan struct{}

	// rulesMu serialises rule changes: the store, the session rules and
	// the matcher built from both.
	rulesMu sync.Mutex
	session map[string]rules.Rule

	mu        sync.Mutex
	agent     agentv1.AgentServiceClient // nil while disconnected
	active    []rules.Rule               // stored + session, as last loaded
	storedIDs map[string]bool
	matcher   *rules.Matcher
	prompts   map[string]*prompt
	byKey     map[promptKey]*prompt
	byEntry   map[string]*prompt
	subs      map[*subscriber[*uiv1.PromptEvent]]struct{}
	echoes    map[promptKey]time.Time
	hits      map[string]store.Hit
	// decisionMark is the time of the newest agent decision recorded:
	// the agent replays its recent decisions to each new watcher.
	decisionMark time.Time
	laterKeys    map[promptKey]string

	// histMu orders history: appending and subscribing are atomic with
	// respect to each other, so a watcher sees every entry exactly once.
	histMu   sync.Mutex
	histSubs map[*subscriber[*uiv1.HistoryEntry]]struct{}
}

func newService(ctx context.Context, cfg Config, log *slog.Logger, st *store.Store, uid uint32, o options) (*Service, error) {
	if o.clock == nil {
		o.clock = realClock{}
	}
	if o.ruleNow == nil {
		o.ruleNow = rules.Now
	}
	s := &Service{
		log: log, cfg: cfg, uid: uid, store: st, clock: o.clock, ruleNow: o.ruleNow, ctx: ctx,
		rulesDirty: make(chan struct{}, 1),
		session:    make(map[string]rules.Rule),
		prompts:    make(map[string]*prompt),
		byKey:      make(map[promptKey]*prompt),
		byEntry:    make(map[string]*prompt),
		subs:       make(map[*subscriber[*uiv1.PromptEvent]]struct{}),
		echoes:     make(map[promptKey]time.Time),
		hits:       make(map[string]store.Hit),
		laterKeys:  make(map[promptKey]string),
		histSubs:   make(map[*subscriber[*uiv1.HistoryEntry]]struct{}),
	}
	s.rulesMu.Lock()
	err := s.reloadLocked(ctx)
	s.rulesMu.Unlock()
	if err != nil {
		return nil, err
	}
	last, err := st.History(ctx, 1)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	if len(last) > 0 {
		s.decisionMark = last[0].Time
	}
	later, err := st.DecideLater(ctx)
	if err != nil {
		return nil, fmt.Errorf("read decide-later list: %w", err)
	}
	for _, e := range later {
		s.laterKeys[keyOf(e.Process, e.Tuple)] = e.ID
	}
	return s, nil
}

func newID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails on Linux
	return prefix + hex.EncodeToString(b[:])
}

// ---- rules ----

// reloadLocked rebuilds the matcher from the store and the session rules
// and asks the agent link to push them. The caller holds rulesMu.
func (s *Service) reloadLocked(ctx context.Context) error {
	stored, err := s.store.Rules(ctx)
	if err != nil {
		return fmt.Errorf("read rules: %w", err)
	}
	ids := make(map[string]bool, len(stored))
	for _, r := range stored {
		ids[r.ID] = true
	}
	all := stored
	for _, r := range s.session {
		all = append(all, r)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Created.Before(all[j].Created) })
	m, err := rules.NewMatcher(all)
	if err != nil {
		return fmt.Errorf("compile rules: %w", err)
	}
	s.mu.Lock()
	s.active, s.storedIDs, s.matcher = all, ids, m
	s.mu.Unlock()
	select {
	case s.rulesDirty <- struct{}{}:
	default:
	}
	return nil
}

// rulesChanged reloads the rules and decides the open prompts they now
// cover. The caller holds rulesMu; it is released here.
func (s *Service) rulesChanged(ctx context.Context) error {
	err := s.reloadLocked(ctx)
	s.rulesMu.Unlock()
	s.settlePrompts()
	return err
}

// agentRules returns the rules the agent should enforce now.
func (s *Service) agentRules() []*rulesv1.Rule {
	now := s.ruleNow()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*rulesv1.Rule, 0, len(s.active))
	for _, r := range s.active {
		if !r.Enabled || (r.Lifetime == rules.Duration && !now.Before(r.Expires)) {
			continue
		}
		out = append(out, rules.ToProto(r))
	}
	return out
}

// Rules returns the stored and session rules.
func (s *Service) Rules(ctx context.Context) ([]rules.Rule, error) {
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	stored, err := s.store.Rules(ctx)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	s.mu.Lock()
	pending := make(map[string]store.Hit, len(s.hits))
	for id, h := range s.hits {
		pending[id] = h
	}
	s.mu.Unlock()
	out := stored
	for _, r := range s.session {
		out = append(out, r)
	}
	// Hits not flushed yet count too.
	for i := range out {
		if h, ok := pending[out[i].ID]; ok {
			out[i].Hits += h.Count
			if h.Last.After(out[i].LastHit) {
				out[i].LastHit = h.Last
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// prepareNew readies a rule from a client for adding: the service owns id,
// created and the hit counters.
func (s *Service) prepareNew(r rules.Rule) (rules.Rule, error) {
	r.ID, r.Hits, r.LastHit = "", 0, time.Time{}
	r.Created = s.ruleNow()
	if r.Lifetime == rules.Once {
		return r, invalidf("a LIFETIME_ONCE rule only answers a prompt and cannot be added")
	}
	if err := r.Validate(); err != nil {
		return r, fmt.Errorf("%w: %w", errInvalid, err)
	}
	return r, nil
}

// AddRule validates and adds a rule: session rules stay in memory, others
// are stored.
func (s *Service) AddRule(ctx context.Context, r rules.Rule) (rules.Rule, error) {
	r, err := s.prepareNew(r)
	if err != nil {
		return rules.Rule{}, err
	}
	s.rulesMu.Lock()
	if err := s.checkAgentBounds(r); err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	r, err = s.addLocked(ctx, r)
	if err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	return r, s.rulesChanged(ctx)
}

func (s *Service) addLocked(ctx context.Context, r rules.Rule) (rules.Rule, error) {
	if r.Lifetime == rules.Session {
		if r.ID == "" {
			r.ID = newID("")
		}
		s.session[r.ID] = r
		return r, nil
	}
	r, err := s.store.AddRule(ctx, r)
	if err != nil {
		return rules.Rule{}, fmt.Errorf("store rule: %w", err)
	}
	return r, nil
}

// findLocked returns the rule with id and whether it is a session rule.
func (s *Service) findLocked(ctx context.Context, id string) (rules.Rule, bool, error) {
	if r, ok := s.session[id]; ok {
		return r, true, nil
	}
	stored, err := s.store.Rules(ctx)
	if err != nil {
		return rules.Rule{}, false, fmt.Errorf("read rules: %w", err)
	}
	for _, r := range stored {
		if r.ID == id {
			return r, false, nil
		}
	}
	return rules.Rule{}, false, fmt.Errorf("%w: no rule with id %q", errNotFound, id)
}

// UpdateRule replaces the rule with r.ID, keeping its bookkeeping. A rule
// may move between session and stored lifetimes.
func (s *Service) UpdateRule(ctx context.Context, r rules.Rule) (rules.Rule, error) {
	if r.ID == "" {
		return rules.Rule{}, invalidf("rule id is required")
	}
	if r.Lifetime == rules.Once {
		return rules.Rule{}, invalidf("a rule cannot become LIFETIME_ONCE")
	}
	if err := r.Validate(); err != nil {
		return rules.Rule{}, fmt.Errorf("%w: %w", errInvalid, err)
	}
	s.rulesMu.Lock()
	old, wasSession, err := s.findLocked(ctx, r.ID)
	if err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	r.Created, r.Hits, r.LastHit = old.Created, old.Hits, old.LastHit
	if err := s.checkAgentBounds(r); err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	if err := s.replaceLocked(ctx, r, wasSession); err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	return r, s.rulesChanged(ctx)
}

func (s *Service) replaceLocked(ctx context.Context, r rules.Rule, wasSession bool) error {
	nowSession := r.Lifetime == rules.Session
	switch {
	case wasSession && nowSession:
		s.session[r.ID] = r
	case wasSession:
		if _, err := s.store.AddRule(ctx, r); err != nil {
			return fmt.Errorf("store rule: %w", err)
		}
		delete(s.session, r.ID)
	case nowSession:
		if err := s.store.DeleteRule(ctx, r.ID); err != nil {
			return fmt.Errorf("delete stored rule: %w", err)
		}
		s.session[r.ID] = r
	default:
		if err := s.store.UpdateRule(ctx, r); err != nil {
			return fmt.Errorf("update rule: %w", err)
		}
	}
	return nil
}

// DeleteRule removes a rule.
func (s *Service) DeleteRule(ctx context.Context, id string) error {
	s.rulesMu.Lock()
	if _, ok := s.session[id]; ok {
		delete(s.session, id)
	} else if err := s.store.DeleteRule(ctx, id); err != nil {
		s.rulesMu.Unlock()
		return fmt.Errorf("delete rule %q: %w", id, err)
	}
	return s.rulesChanged(ctx)
}

// SetRuleEnabled switches a rule on or off.
func (s *Service) SetRuleEnabled(ctx context.Context, id string, enabled bool) (rules.Rule, error) {
	s.rulesMu.Lock()
	r, wasSession, err := s.findLocked(ctx, id)
	if err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	r.Enabled = enabled
	if err := s.replaceLocked(ctx, r, wasSession); err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	return r, s.rulesChanged(ctx)
}

// Export writes every rule in format f.
func (s *Service) Export(ctx context.Context, f rules.Format) ([]byte, error) {
	rs, err := s.Rules(ctx)
	if err != nil {
		return nil, err
	}
	data, err := rules.Export(rs, f)
	if err != nil {
		return nil, fmt.Errorf("export rules: %w", err)
	}
	return data, nil
}

// ImportedFormat is rules.Format plus OpenSnitch, which imports only.
type importFormat int

const (
	importJSON importFormat = iota + 1
	importTOML
	importOpenSnitch
)

// Import adds the rules in data under new IDs and reports what it could
// not take.
func (s *Service) Import(ctx context.Context, f importFormat, data []byte) ([]rules.Rule, []string, error) {
	var (
		rs       []rules.Rule
		problems []string
		err      error
	)
	switch f {
	case importJSON:
		rs, err = rules.Import(data, rules.FormatJSON)
	case importTOML:
		rs, err = rules.Import(data, rules.FormatTOML)
	case importOpenSnitch:
		rs, problems, err = rules.ImportOpenSnitch(data)
	default:
		return nil, nil, invalidf("unknown import format")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errInvalid, err)
	}
	var ready []rules.Rule
	for i, r := range rs {
		r, err := s.prepareNew(r)
		if err != nil {
			problems = append(problems, fmt.Sprintf("rule %d: %v", i+1, errors.Unwrap(err)))
			continue
		}
		ready = append(ready, r)
	}
	s.rulesMu.Lock()
	if err := s.checkAgentBounds(ready...); err != nil {
		s.rulesMu.Unlock()
		return nil, problems, err
	}
	var added []rules.Rule
	for _, r := range ready {
		r, err := s.addLocked(ctx, r)
		if err != nil {
			s.rulesChanged(ctx) //nolint:errcheck // the store error is the one to report
			return added, problems, err
		}
		added = append(added, r)
	}
	return added, problems, s.rulesChanged(ctx)
}

// sweepExpired removes Duration rules whose time is up.
func (s *Service) sweepExpired(ctx context.Context) error {
	now := s.ruleNow()
	s.rulesMu.Lock()
	stored, err := s.store.Rules(ctx)
	if err != nil {
		s.rulesMu.Unlock()
		return fmt.Errorf("read rules: %w", err)
	}
	removed := 0
	for _, r := range stored {
		if r.Lifetime == rules.Duration && !now.Before(r.Expires) {
			if err := s.store.DeleteRule(ctx, r.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
				s.rulesMu.Unlock()
				return fmt.Errorf("delete expired rule %s: %w", r.ID, err)
			}
			removed++
		}
	}
	for id, r := range s.session {
		if r.Lifetime == rules.Duration && !now.Before(r.Expires) {
			delete(s.session, id)
			removed++
		}
	}
	if removed == 0 {
		s.rulesMu.Unlock()
		return nil
	}
	s.log.Info("removed expired rules", "count", removed)
	return s.rulesChanged(ctx)
}

// countHit notes that rule id decided a connection; flushHits stores it.
func (s *Service) countHitLocked(id string, at time.Time) {
	h := s.hits[id]
	h.Count++
	if at.After(h.Last) {
		h.Last = at
	}
	s.hits[id] = h
}

// flushHits writes the counted hits: stored rules' to the store, session
// rules' to memory.
func (s *Service) flushHits(ctx context.Context) error {
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	s.mu.Lock()
	hits := s.hits
	s.hits = make(map[string]store.Hit)
	stored := s.storedIDs
	s.mu.Unlock()
	toStore := make(map[string]store.Hit)
	for id, h := range hits {
		if r, ok := s.session[id]; ok {
			r.Hits += h.Count
			if h.Last.After(r.LastHit) {
				r.LastHit = h.Last
			}
			s.session[id] = r
		} else if stored[id] {
			toStore[id] = h
		}
	}
	if len(toStore) == 0 {
		return nil
	}
	if err := s.store.RecordHits(ctx, toStore); err != nil {
		return fmt.Errorf("record hits: %w", err)
	}
	return nil
}

// ---- the agent's pending connections ----

// setAgent records the link's client (nil: disconnected). On disconnect
// every open prompt is withdrawn: the agent's entries belong to the link
// that reported them and die with it.
func (s *Service) setAgent(c agentv1.AgentServiceClient) {
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

func (s *Service) agentClient() agentv1.AgentServiceClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.agent
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
	d := now.Add(s.cfg.PromptTimeout)
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
	s.broadcastLocked(withdrawn(p, "deadline"))
	s.mu.Unlock()
	s.log.Info("prompt unanswered in time", "prompt_id", id, "exe", p.first.proc.Exe,
		"dst", p.first.tuple.String(), "verdict", s.cfg.TimeoutAction.String())
	s.decideEntries(p.agent, p.key, entriesOf(p), s.cfg.TimeoutAction, "deadline", "")
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

func (s *Service) promptProto(p *prompt) *uiv1.Prompt {
	out := &uiv1.Prompt{
		Id:             p.id,
		Process:        apiconv.ProcessProto(p.first.proc),
		Flow:           apiconv.FlowProto(p.first.tuple),
		Host:           p.first.host,
		FirstSeen:      timestamppb.New(p.firstSeen),
		Deadline:       timestamppb.New(p.deadline),
		DeadlineAction: rules.ActionProto(s.cfg.TimeoutAction),
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
		s.broadcastLocked(withdrawn(d.p, "rule"))
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
	a := s.cfg.SilentAction
	s.decideEntries(c, key, es, a, "default", "")
	s.mu.Lock()
	_, listed := s.laterKeys[key]
	s.mu.Unlock()
	if listed {
		return
	}
	e := es[0]
	le, err := s.store.AddDecideLater(s.ctx, store.DecideLaterEntry{
		Time: s.clock.Now(), Process: e.proc, Tuple: e.tuple, Host: e.host, Applied: a,
	})
	if err != nil {
		s.log.Warn("add decide-later entry", "exe", e.proc.Exe, "dst", e.tuple.String(), "err", err)
		return
	}
	s.mu.Lock()
	s.laterKeys[key] = le.ID
	s.mu.Unlock()
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
	for _, e := range es {
		if c != nil {
			ctx, cancel := context.WithTimeout(s.ctx, decideTimeout)
			_, err := c.Decide(ctx, &agentv1.DecideRequest{
				Id: e.id, Action: apiconv.ActionProto(a), Scope: agentv1.Scope_SCOPE_CONNECTION,
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

// ---- the agent's decisions ----

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

// ---- prompts ----

// subscribePrompts makes a prompt client: its channel starts with the open
// prompts.
func (s *Service) subscribePrompts() *subscriber[*uiv1.PromptEvent] {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := newSubscriber[*uiv1.PromptEvent](len(s.prompts))
	open := make([]*prompt, 0, len(s.prompts))
	for _, p := range s.prompts {
		open = append(open, p)
	}
	sort.Slice(open, func(i, j int) bool { return open[i].firstSeen.Before(open[j].firstSeen) })
	for _, p := range open {
		sub.ch <- &uiv1.PromptEvent{Kind: uiv1.PromptEvent_KIND_ADDED, Prompt: s.promptProto(p)}
	}
	s.subs[sub] = struct{}{}
	return sub
}

// unsubscribePrompts removes a prompt client. When the last one leaves,
// nobody can answer the open prompts: the silent action decides them.
func (s *Service) unsubscribePrompts(sub *subscriber[*uiv1.PromptEvent]) {
	s.mu.Lock()
	if _, ok := s.subs[sub]; ok {
		delete(s.subs, sub)
		close(sub.gone)
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
		select {
		case sub.ch <- ev:
		default:
			s.log.Warn("dropping a prompt client that fell behind")
			delete(s.subs, sub)
			close(sub.gone)
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
	// The user's answer applies to these connections even if saving the
	// rule failed.
	s.decideEntries(p.agent, p.key, entriesOf(p), r.Action, "prompt", r.ID)
	s.mu.Lock()
	s.broadcastLocked(withdrawn(p, "answered"))
	s.mu.Unlock()
	s.log.Info("prompt answered", "prompt_id", id, "exe", p.first.proc.Exe, "dst", p.first.tuple.String(),
		"verdict", r.Action.String(), "lifetime", r.Lifetime.String(), "rule_id", r.ID)
	if saveErr != nil {
		return rules.Rule{}, fmt.Errorf("the connection got %s, but the rule was not saved: %w", r.Action, saveErr)
	}
	return r, nil
}

// ---- decide later ----

// DecideLater lists the connections decided by the silent action.
func (s *Service) DecideLater(ctx context.Context) ([]store.DecideLaterEntry, error) {
	es, err := s.store.DecideLater(ctx)
	if err != nil {
		return nil, fmt.Errorf("read decide-later list: %w", err)
	}
	return es, nil
}

// ResolveDecideLater makes rule r from entry id (none when r is nil) and
// removes the entry.
func (s *Service) ResolveDecideLater(ctx context.Context, id string, r *rules.Rule) (rules.Rule, error) {
	es, err := s.DecideLater(ctx)
	if err != nil {
		return rules.Rule{}, err
	}
	var found *store.DecideLaterEntry
	for i := range es {
		if es[i].ID == id {
			found = &es[i]
			break
		}
	}
	if found == nil {
		return rules.Rule{}, fmt.Errorf("%w: no decide-later entry %q", errNotFound, id)
	}
	var out rules.Rule
	if r != nil {
		if !rules.Covers(*r, connOf(found.Process, found.Tuple, found.Host)) {
			return rules.Rule{}, invalidf("the rule does not cover the entry's connection (%s, exe %q)",
				found.Tuple.String(), found.Process.Exe)
		}
		if out, err = s.AddRule(ctx, *r); err != nil {
			return rules.Rule{}, err
		}
	}
	if err := s.store.RemoveDecideLater(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return out, fmt.Errorf("remove decide-later entry: %w", err)
	}
	key := keyOf(found.Process, found.Tuple)
	s.mu.Lock()
	if s.laterKeys[key] == id {
		delete(s.laterKeys, key)
	}
	s.mu.Unlock()
	return out, nil
}

// ---- history ----

// record appends e to the history and sends it to the watchers.
func (s *Service) record(e store.HistoryEntry) {
	s.histMu.Lock()
	defer s.histMu.Unlock()
	if err := s.store.AppendHistory(s.ctx, e); err != nil {
		s.log.Warn("append history", "err", err)
	}
	pe := historyProto(e)
	for sub := range s.histSubs {
		select {
		case sub.ch <- pe:
		default:
			s.log.Warn("dropping a history client that fell behind")
			delete(s.histSubs, sub)
			close(sub.gone)
		}
	}
}

// subscribeHistory returns the stored history and subscribes to new
// entries, with nothing lost or repeated in between.
func (s *Service) subscribeHistory(ctx context.Context) ([]store.HistoryEntry, *subscriber[*uiv1.HistoryEntry], error) {
	s.histMu.Lock()
	defer s.histMu.Unlock()
	past, err := s.store.History(ctx, s.cfg.HistorySize)
	if err != nil {
		return nil, nil, fmt.Errorf("read history: %w", err)
	}
	sub := newSubscriber[*uiv1.HistoryEntry](0)
	s.histSubs[sub] = struct{}{}
	return past, sub, nil
}

func (s *Service) unsubscribeHistory(sub *subscriber[*uiv1.HistoryEntry]) {
	s.histMu.Lock()
	defer s.histMu.Unlock()
	if _, ok := s.histSubs[sub]; ok {
		delete(s.histSubs, sub)
		close(sub.gone)
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

// ---- status ----

type statusCounts struct {
	agent                  agentv1.AgentServiceClient
	promptClients, prompts int
	rules                  int
	decideLater            int
}

func (s *Service) counts() statusCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return statusCounts{
		agent: s.agent, promptClients: len(s.subs), prompts: len(s.prompts), rules: len(s.active),
		decideLater: len(s.laterKeys),
	}
}
