package feed

import (
	"context"
	"errors"
	"testing"
	"time"
)

// budget is a Budget of max events.
type budget struct{ n, max int }

func (b *budget) Charge() bool {
	if b.n >= b.max {
		return false
	}
	b.n++
	return true
}

func (b *budget) Refund(n int) { b.n -= n }

// next is Next with a deadline, failing t when it passes.
func next[T any](t *testing.T, s *Subscriber[T]) (T, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	v, err := s.Next(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("Next did not return within 5s")
	}
	return v, err
}

func TestEventsArriveInOrder(t *testing.T) {
	s := NewSubscriber[int](10, nil)
	for i := range 5 {
		if !s.Push(i) {
			t.Fatalf("push %d refused below the limit", i)
		}
	}
	if got := s.Take(nil, 2); len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Fatalf("Take(2) = %v, want [0 1]", got)
	}
	// Events left queued keep Ready's token.
	select {
	case <-s.Ready():
	default:
		t.Fatal("3 events queued but Ready has no token")
	}
	for want := 2; want < 5; want++ {
		if v, err := next(t, s); err != nil || v != want {
			t.Fatalf("Next = %d, %v; want %d", v, err, want)
		}
	}
	if s.Len() != 0 {
		t.Fatalf("%d events left", s.Len())
	}
}

// A subscriber that does not read holds nothing until events come, then at
// most its limit; the publisher is refused, never blocked, past it.
func TestSlowSubscriberIsRefusedAtItsLimit(t *testing.T) {
	const limit = 8
	s := NewSubscriber[int](limit, nil)
	if s.Cap() != 0 {
		t.Fatalf("a new subscriber holds a queue of capacity %d", s.Cap())
	}
	for i := range limit {
		if !s.Push(i) {
			t.Fatalf("push %d refused below the limit %d", i, limit)
		}
	}
	if s.Push(limit) {
		t.Fatalf("push past the limit %d accepted", limit)
	}
	if s.Len() != limit {
		t.Fatalf("%d queued, want %d", s.Len(), limit)
	}
	// Reading makes room again, and an emptied queue lets its memory go.
	if got := s.Take(nil, -1); len(got) != limit || got[limit-1] != limit-1 {
		t.Fatalf("Take(-1) = %v", got)
	}
	if s.Cap() != 0 {
		t.Fatalf("an emptied queue keeps capacity %d", s.Cap())
	}
	if !s.Push(99) {
		t.Fatal("push refused after the subscriber caught up")
	}
}

// Subscribers that share a budget hold no more than it together, and give
// it back as they read or go.
func TestSharedBudget(t *testing.T) {
	b := &budget{max: 5}
	s1, s2 := NewSubscriber[int](100, b), NewSubscriber[int](100, b)
	for i := range 5 {
		s := s1
		if i%2 == 1 {
			s = s2
		}
		if !s.Push(i) {
			t.Fatalf("push %d refused within the budget", i)
		}
	}
	if s1.Len()+s2.Len() != 5 || b.n != 5 {
		t.Fatalf("queued %d+%d, budget used %d; want 5 in all", s1.Len(), s2.Len(), b.n)
	}
	if s1.Push(3) || s2.Push(3) {
		t.Fatal("push past the shared budget accepted")
	}
	s1.Take(nil, 2) // s1 held 0, 2, 4; s2 holds 1, 3
	if b.n != 3 {
		t.Fatalf("budget used %d after taking 2 of 5, want 3", b.n)
	}
	s2.Close()
	if b.n != 1 {
		t.Fatalf("budget used %d after closing a subscriber with 2 queued, want 1", b.n)
	}
}

// The subscriber's side leaving: the publisher closes it (unsubscribing),
// and pushes to it fail from then on.
func TestUnsubscribe(t *testing.T) {
	s := NewSubscriber[string](4, nil)
	s.Push("a")
	s.Close()
	s.Close() // a second unsubscribe does nothing
	if s.Push("b") {
		t.Fatal("push to a closed subscriber accepted")
	}
	if s.Len() != 0 || s.Cap() != 0 {
		t.Fatalf("a closed subscriber holds %d events (capacity %d)", s.Len(), s.Cap())
	}
	select {
	case <-s.Gone():
	default:
		t.Fatal("Gone is open after Close")
	}
}

// Close wakes a subscriber waiting in Next, with ErrClosed; a context that
// ends wakes it with its error.
func TestCloseEndsNext(t *testing.T) {
	s := NewSubscriber[int](4, nil)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Next(context.Background())
		errc <- err
	}()
	s.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still waiting 5s after Close")
	}

	s = NewSubscriber[int](4, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with an ended context: %v", err)
	}
}

// Next waits for a Push from another goroutine.
func TestNextWaitsForPush(t *testing.T) {
	s := NewSubscriber[int](4, nil)
	go s.Push(7)
	if v, err := next(t, s); err != nil || v != 7 {
		t.Fatalf("Next = %d, %v; want 7", v, err)
	}
}
