package uiserver

import (
	"errors"
	"testing"

	"github.com/bastion-fw/bastion/internal/feed"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// A prompt client that stops reading holds at most subscriberBuffer events;
// past them the service drops it, and its stream's Next says so.
func TestSlowPromptClientIsDroppedAtItsBound(t *testing.T) {
	h := newHarness(t, nil)
	svc := h.service()
	sub := svc.subscribePrompts()
	defer svc.unsubscribePrompts(sub)
	ev := &uiv1.PromptEvent{Kind: uiv1.PromptEvent_KIND_UPDATED, Prompt: &uiv1.Prompt{Id: "p1"}}
	broadcast := func(n int) (clients int) {
		svc.mu.Lock()
		defer svc.mu.Unlock()
		for range n {
			svc.broadcastLocked(ev)
		}
		return len(svc.subs)
	}
	if n := broadcast(subscriberBuffer); n != 1 || sub.Len() != subscriberBuffer {
		t.Fatalf("after %d unread events: %d clients, %d queued; want the client kept with all of them", subscriberBuffer, n, sub.Len())
	}
	if n := broadcast(1); n != 0 {
		t.Fatalf("a client %d events behind is still subscribed", subscriberBuffer+1)
	}
	select {
	case <-sub.Gone():
	default:
		t.Fatal("the dropped client's Gone is open")
	}
	if _, err := sub.Next(t.Context()); !errors.Is(err, feed.ErrClosed) {
		t.Fatalf("Next on a dropped client: %v, want feed.ErrClosed", err)
	}
}
