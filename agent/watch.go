package agent

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bastion-fw/bastion/internal/feed"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/peercred"
)

// The event queues of API watchers (WatchPending, WatchDecisions).
//
// SECURITY: a watcher that does not read must not grow the agent's memory
// nor stall the packet path. Each queue starts empty and grows only with
// the events its client has not taken yet, up to a bound; a watcher that
// falls further behind is dropped (its stream ends with ResourceExhausted,
// and the client may reconnect). The queues of one non-root UID also share
// a budget, so that many streams of one user cost no more than a few.

// historySize bounds the decisions kept for WatchDecisions.
const historySize = 1024

// watcherBuffer bounds the events queued for one slow API client beyond
// its backlog; a client that falls this far behind is disconnected rather
// than allowed to stall the packet path.
const watcherBuffer = 4096

// maxQueuedPerUID bounds the events queued for all of one non-root UID's
// watchers together (about 250 bytes each).
const maxQueuedPerUID = 8192

// errFellBehind ends a feed the engine dropped: its client fell behind or
// the agent is stopping.
var errFellBehind = errors.New("watcher fell behind or the agent is stopping")

// queueBudget counts the events queued for one UID's watchers. The engine's
// lock guards refs; n changes as events are queued and taken.
type queueBudget struct {
	refs int
	n    atomic.Int64
}

// Charge implements feed.Budget: room for one more event while the UID's
// watchers hold fewer than maxQueuedPerUID.
func (b *queueBudget) Charge() bool {
	for {
		n := b.n.Load()
		if n >= maxQueuedPerUID {
			return false
		}
		if b.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Refund implements feed.Budget.
func (b *queueBudget) Refund(n int) { b.n.Add(-int64(n)) }

// subscriber is one watcher: its queue, and whose it is.
type subscriber[T any] struct {
	*feed.Subscriber[T]
	cred peercred.Cred
	// budget is shared by the UID's watchers; nil for root.
	budget *queueBudget
}

// Feed is one watcher's stream of events.
type Feed[T any] struct {
	s      *subscriber[T]
	cancel func()
}

// Ready has a token while events are queued.
func (f *Feed[T]) Ready() <-chan struct{} { return f.s.Ready() }

// Gone is closed when the engine drops the watcher.
func (f *Feed[T]) Gone() <-chan struct{} { return f.s.Gone() }

// Take appends up to max queued events (all with max < 0) to buf, oldest
// first, without waiting.
func (f *Feed[T]) Take(buf []T, max int) []T { return f.s.Take(buf, max) }

// Len returns the number of queued events.
func (f *Feed[T]) Len() int { return f.s.Len() }

// Next waits for the next event; it returns errFellBehind once the engine
// dropped the watcher.
func (f *Feed[T]) Next(ctx context.Context) (T, error) {
	v, err := f.s.Next(ctx)
	if errors.Is(err, feed.ErrClosed) {
		return v, errFellBehind
	}
	return v, err
}

// Cancel unsubscribes.
func (f *Feed[T]) Cancel() { f.cancel() }

// newSubscriberLocked makes a subscriber for caller, charged to its UID's
// budget unless caller is root.
func newSubscriberLocked[T any](e *Engine, caller peercred.Cred, limit int) *subscriber[T] {
	s := &subscriber[T]{cred: caller}
	var budget feed.Budget // an untyped nil for root, not a nil *queueBudget
	if !caller.IsRoot() {
		b := e.budgets[caller.UID]
		if b == nil {
			b = &queueBudget{}
			e.budgets[caller.UID] = b
		}
		b.refs++
		s.budget = b
		budget = b
	}
	s.Subscriber = feed.NewSubscriber[T](limit, budget)
	return s
}

// releaseSubscriberLocked closes s, which returns its queue's budget, and
// releases the budget when s was its UID's last watcher.
func releaseSubscriberLocked[T any](e *Engine, s *subscriber[T]) {
	s.Close()
	if s.budget != nil {
		if s.budget.refs--; s.budget.refs == 0 {
			delete(e.budgets, s.cred.UID)
		}
	}
}

// ListPending returns the pending connections caller may see.
func (e *Engine) ListPending(caller peercred.Cred) []Pending {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Pending
	for _, p := range e.byID {
		if visible(caller, p.Process.UID) {
			out = append(out, p.Pending)
		}
	}
	return out
}

// SECURITY: the one place that decides what a caller may see.
func visible(caller peercred.Cred, uid uint32) bool {
	return caller.IsRoot() || caller.UID == uid
}

// WatchPending subscribes caller to pending events, starting with the
// connections pending now. While subscribed, the caller's UID counts as
// having a prompt client, so its connections are asked about instead of
// being decided by the system policy. The feed's Gone is closed if the
// engine drops the subscriber.
func (e *Engine) WatchPending(caller peercred.Cred) *Feed[PendingEvent] {
	e.mu.Lock()
	s := newSubscriberLocked[PendingEvent](e, caller, watcherBuffer)
	e.watchers[s] = struct{}{}
	e.watchedUID[caller.UID]++
	for _, p := range e.byID {
		if visible(caller, p.Process.UID) && !s.Push(PendingEvent{Kind: PendingAdded, Pending: p.Pending}) {
			e.dropWatcherLocked(s) // its UID's budget is spent
			break
		}
	}
	e.mu.Unlock()
	var once sync.Once
	return &Feed[PendingEvent]{s: s, cancel: func() {
		once.Do(func() {
			e.mu.Lock()
			e.dropWatcherLocked(s)
			e.mu.Unlock()
		})
	}}
}

func (e *Engine) dropWatcherLocked(s *subscriber[PendingEvent]) {
	if _, ok := e.watchers[s]; !ok {
		return
	}
	delete(e.watchers, s)
	if e.watchedUID[s.cred.UID]--; e.watchedUID[s.cred.UID] <= 0 {
		delete(e.watchedUID, s.cred.UID)
	}
	releaseSubscriberLocked(e, s)
}

func (e *Engine) broadcastPendingLocked(ev PendingEvent) {
	for s := range e.watchers {
		if !visible(s.cred, ev.Pending.Process.UID) {
			continue
		}
		if !s.Push(ev) {
			e.log.Warn("dropping a pending-connection watcher that fell behind", "uid", s.cred.UID, "pid", s.cred.PID)
			e.dropWatcherLocked(s)
		}
	}
}

// WatchedUIDs returns the UIDs with a connected watcher that caller may see.
func (e *Engine) WatchedUIDs(caller peercred.Cred) []uint32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []uint32
	for uid := range e.watchedUID {
		if visible(caller, uid) {
			out = append(out, uid)
		}
	}
	return out
}

// publishDecisionLocked keeps d in the history and sends it to the
// decision watchers that may see it.
func (e *Engine) publishDecisionLocked(d Decision) {
	if len(e.history) < historySize {
		e.history = append(e.history, d)
	} else {
		e.history[e.histNext] = d
	}
	e.histNext = (e.histNext + 1) % historySize
	for s := range e.decSubs {
		if !visible(s.cred, d.Process.UID) {
			continue
		}
		if !s.Push(d) {
			e.log.Warn("dropping a decision watcher that fell behind", "uid", s.cred.UID, "pid", s.cred.PID)
			e.dropDecisionWatcherLocked(s)
		}
	}
}

func (e *Engine) dropDecisionWatcherLocked(s *subscriber[Decision]) {
	if _, ok := e.decSubs[s]; !ok {
		return
	}
	delete(e.decSubs, s)
	releaseSubscriberLocked(e, s)
}

// WatchDecisions subscribes caller to decisions, starting with the recent
// ones it may see, oldest first.
func (e *Engine) WatchDecisions(caller peercred.Cred) *Feed[Decision] {
	e.mu.Lock()
	s := newSubscriberLocked[Decision](e, caller, watcherBuffer+historySize)
	start := 0
	if len(e.history) == historySize {
		start = e.histNext // the oldest entry once the ring has wrapped
	}
	e.decSubs[s] = struct{}{}
	for i := range e.history {
		d := e.history[(start+i)%len(e.history)]
		if visible(caller, d.Process.UID) && !s.Push(d) {
			e.dropDecisionWatcherLocked(s) // its UID's budget is spent
			break
		}
	}
	e.mu.Unlock()
	var once sync.Once
	return &Feed[Decision]{s: s, cancel: func() {
		once.Do(func() {
			e.mu.Lock()
			e.dropDecisionWatcherLocked(s)
			e.mu.Unlock()
		})
	}}
}

// announceUpdate tells the watchers how many packets p holds now, unless it
// was decided meanwhile.
func (e *Engine) announceUpdate(p *pending) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p.updateDue = false
	if e.byID[p.ID] == p {
		e.broadcastPendingLocked(PendingEvent{Kind: PendingUpdated, Pending: p.Pending})
	}
}

// Decision is one verdict the engine gave.
type Decision struct {
	Time      time.Time
	Process   flow.Process
	Tuple     flow.Tuple
	Host      string // the destination's name, when known
	Action    flow.Action
	DecidedBy string
	// RuleID is the ID of the rule that decided, if one did.
	RuleID string
}

// PendingEventKind says whether a pending connection appeared or was decided.
type PendingEventKind uint8

const (
	PendingAdded PendingEventKind = iota + 1
	PendingResolved
	PendingUpdated // more packets joined the entry
)

// updateInterval bounds how often a growing entry is re-announced, so that
// a burst of 500 parallel connections makes a handful of events, not 500.
const updateInterval = 100 * time.Millisecond

// PendingEvent is what WatchPending streams.
type PendingEvent struct {
	Kind      PendingEventKind
	Pending   Pending
	Action    flow.Action // for PendingResolved
	DecidedBy string      // for PendingResolved
}
