package uiserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bastion-fw/bastion/internal/feed"
	"github.com/bastion-fw/bastion/internal/rules"
	"github.com/bastion-fw/bastion/internal/store"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Errors the service returns; api.go maps them to gRPC codes.
var (
	errInvalid  = errors.New("invalid argument")
	errNotFound = errors.New("not found")
	errExists   = errors.New("already exists")
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
	// ("api:uid=N", "deadline:uid=N", "default:uid=N") is recognised as ours and not recorded twice.
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

// newSubscriber makes a client's queue: room for subscriberBuffer events
// beyond the extra it starts with. The service closes it when the client
// falls behind or leaves.
func newSubscriber[T any](extra int) *feed.Subscriber[T] {
	return feed.NewSubscriber[T](subscriberBuffer+extra, nil)
}

// options are what tests replace.
type options struct {
	clock   clock
	ruleNow func() time.Time
	// started is called with the service once it runs.
	started func(*Service)
	// now is the wall clock of the statistics; nil means time.Now.
	now func() time.Time
	// flushPeriod replaces statsFlushPeriod when set.
	flushPeriod time.Duration
}

// Service is the state of the rules service: the user's rules, the open
// prompts and their clients, and the link to the agent.
type Service struct {
	log *slog.Logger
	// cfgMu guards the fields of cfg that SetConfig changes (userconfig.go);
	// read them with config().
	cfgMu   sync.Mutex
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
	subs      map[*feed.Subscriber[*uiv1.PromptEvent]]struct{}
	echoes    map[promptKey]time.Time
	hits      map[string]store.Hit
	// rulesVersion counts rule reloads; pushedVersion is the newest the
	// agent has applied. pushed is closed, and replaced, whenever
	// pushedVersion grows or the agent link goes down.
	rulesVersion, pushedVersion uint64
	pushed                      chan struct{}
	// decisionMark is the time of the newest decision in the stored
	// history when the service started: the agent replays its recent
	// decisions to each new watcher, and those are recorded already.
	decisionMark time.Time
	// seen holds the decisions recorded since, to tell the agent's
	// replays after a reconnect from decisions not seen yet: the
	// kernel's decisions reach the stream a little after userspace
	// decisions made at the same time, so time order cannot.
	seen      decisionsSeen
	laterKeys map[promptKey]string
	// pause is the user's pause of protection (pause.go).
	pause pauseState

	// histMu orders history: appending and subscribing are atomic with
	// respect to each other, so a watcher sees every entry exactly once.
	histMu   sync.Mutex
	histSubs map[*feed.Subscriber[*uiv1.HistoryEntry]]struct{}
	// stats waits to be written to the store (stats.go); guarded by
	// histMu. flushMu is held while it is written, and while a history
	// watcher reads the store and the batch; taken before histMu.
	stats   statsState
	flushMu sync.Mutex
	// wallNow is the clock of the statistics: their buckets, charts and
	// retention follow the agent's timestamps, which are wall time.
	wallNow    func() time.Time
	flushEvery time.Duration
}

func newService(ctx context.Context, cfg Config, log *slog.Logger, st *store.Store, uid uint32, o options) (*Service, error) {
	if o.clock == nil {
		o.clock = realClock{}
	}
	if o.ruleNow == nil {
		o.ruleNow = rules.Now
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.flushPeriod <= 0 {
		o.flushPeriod = statsFlushPeriod
	}
	s := &Service{
		log: log, cfg: cfg, uid: uid, store: st, clock: o.clock, ruleNow: o.ruleNow, ctx: ctx,
		rulesDirty: make(chan struct{}, 1),
		pushed:     make(chan struct{}),
		session:    make(map[string]rules.Rule),
		prompts:    make(map[string]*prompt),
		byKey:      make(map[promptKey]*prompt),
		byEntry:    make(map[string]*prompt),
		subs:       make(map[*feed.Subscriber[*uiv1.PromptEvent]]struct{}),
		echoes:     make(map[promptKey]time.Time),
		hits:       make(map[string]store.Hit),
		laterKeys:  make(map[promptKey]string),
		histSubs:   make(map[*feed.Subscriber[*uiv1.HistoryEntry]]struct{}),
		stats:      statsState{batch: store.NewBatch(), kick: make(chan struct{}, 1)},
		wallNow:    o.now,
		flushEvery: o.flushPeriod,
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
