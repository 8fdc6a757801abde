package feed

import (
	"context"
	"errors"
	"sync"
)

// ErrClosed is what Next returns once the subscriber was closed.
var ErrClosed = errors.New("feed closed")

// Budget is room for events that several subscribers share, for example
// all of one user's. Push charges it one event at a time; taking events,
// and closing, refunds them.
type Budget interface {
	// Charge takes room for one event; it reports false when none is left.
	Charge() bool
	// Refund gives back the room of n events.
	Refund(n int)
}

// Subscriber is one subscriber's queue of events. Its publisher Pushes and
// Closes; the subscriber waits on Ready or Next and Takes.
type Subscriber[T any] struct {
	limit int
	// budget is shared with other subscribers; nil when limit is the
	// only bound.
	budget Budget

	mu     sync.Mutex // guards queue and closed
	queue  []T
	closed bool
	// ready holds a token while queue is not empty.
	ready chan struct{}
	// gone is closed when the publisher drops the subscriber.
	gone chan struct{}
}

// NewSubscriber returns a subscriber that holds at most limit events, and
// no more than budget allows when budget is not nil.
func NewSubscriber[T any](limit int, budget Budget) *Subscriber[T] {
	return &Subscriber[T]{limit: limit, budget: budget, ready: make(chan struct{}, 1), gone: make(chan struct{})}
}

// Push queues v without waiting; it reports false when the subscriber is
// over its bounds, or closed: a publisher then drops it.
func (s *Subscriber[T]) Push(v T) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.queue) >= s.limit || (s.budget != nil && !s.budget.Charge()) {
		return false
	}
	s.queue = append(s.queue, v)
	select {
	case s.ready <- struct{}{}:
	default:
	}
	return true
}

// Take removes up to max queued events (all with max < 0) and appends
// them to buf, oldest first, without waiting. Once the queue is empty it
// starts afresh, so that the memory of a burst goes with it. Events left
// queued keep Ready's token.
func (s *Subscriber[T]) Take(buf []T, max int) []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takeLocked(buf, max)
}

func (s *Subscriber[T]) takeLocked(buf []T, max int) []T {
	n := len(s.queue)
	if max >= 0 && n > max {
		n = max
	}
	buf = append(buf, s.queue[:n]...)
	clear(s.queue[:n])
	if s.queue = s.queue[n:]; len(s.queue) == 0 {
		s.queue = nil
	} else {
		select {
		case s.ready <- struct{}{}:
		default:
		}
	}
	if s.budget != nil {
		s.budget.Refund(n)
	}
	return buf
}

// Len returns the number of queued events.
func (s *Subscriber[T]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// Cap returns the capacity of the queue: the memory the subscriber holds
// now, in events.
func (s *Subscriber[T]) Cap() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cap(s.queue)
}

// Ready has a token while events are queued.
func (s *Subscriber[T]) Ready() <-chan struct{} { return s.ready }

// Gone is closed when the subscriber is closed.
func (s *Subscriber[T]) Gone() <-chan struct{} { return s.gone }

// Next waits for the next event; it returns ErrClosed once the subscriber
// is closed, and ctx's error when ctx ends first.
func (s *Subscriber[T]) Next(ctx context.Context) (T, error) {
	var zero T
	for {
		if v := s.Take(nil, 1); len(v) == 1 {
			return v[0], nil
		}
		select {
		case <-ctx.Done():
			return zero, ctx.Err()
		case <-s.gone:
			return zero, ErrClosed
		case <-s.ready:
		}
	}
}

// Close drops the subscriber: Gone is closed, the queued events are
// discarded and their room given back, and later Pushes fail. Closing
// again does nothing.
func (s *Subscriber[T]) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.gone)
	s.takeLocked(nil, -1)
}
