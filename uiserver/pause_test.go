package uiserver

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/bastion-fw/bastion/internal/flow"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// TestPutOffPromptAppliesSilentActionAndListsIt: "Decide later" decides the
// prompt's connections with the silent action at once (not at the
// deadline) and lists them under decide later.
func TestPutOffPromptAppliesSilentActionAndListsIt(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.SilentAction = flow.ActionReject })
	pc := h.watchPrompts()
	h.agent.hold("c1", h.uid, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	waitFor(t, "a prompt", func() bool { return pc.find(uiv1.PromptEvent_KIND_ADDED) != nil })
	id := pc.find(uiv1.PromptEvent_KIND_ADDED).GetPrompt().GetId()

	resp, err := h.ui.PutOffPrompt(context.Background(), &uiv1.PutOffPromptRequest{PromptId: id})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetApplied() != rulesv1.Action_ACTION_REJECT || resp.GetDecideLaterId() == "" {
		t.Errorf("response %v, want the silent action (reject) and an entry", resp)
	}
	// No clock advance: the decision is immediate.
	waitFor(t, "c1 decided now", func() bool { return h.agent.decision("c1") == agentv1.Action_ACTION_REJECT })
	waitFor(t, "the prompt withdrawn", func() bool {
		ev := pc.find(uiv1.PromptEvent_KIND_WITHDRAWN)
		return ev != nil && ev.GetReason() == "later"
	})
	later, err := h.ui.ListDecideLater(context.Background(), &uiv1.ListDecideLaterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(later.GetEntries()) != 1 || later.GetEntries()[0].GetId() != resp.GetDecideLaterId() ||
		later.GetEntries()[0].GetFlow().GetDstIp() != "192.0.2.1" {
		t.Fatalf("decide-later list %v, want the put-off connection", later.GetEntries())
	}
	h.waitHistory("of the put-off decision", func(es []*uiv1.HistoryEntry) bool {
		for _, e := range es {
			if e.GetDecidedBy() == "later" && e.GetAction() == rulesv1.Action_ACTION_REJECT {
				return true
			}
		}
		return false
	})
	// The first answer won: the prompt is gone.
	if _, err := h.ui.PutOffPrompt(context.Background(), &uiv1.PutOffPromptRequest{PromptId: id}); code(err) != codes.NotFound {
		t.Errorf("second put-off: %v, want NotFound", err)
	}
	if _, err := h.ui.AnswerPrompt(context.Background(), &uiv1.AnswerPromptRequest{PromptId: id, Rule: forever(rulesv1.Action_ACTION_ALLOW, curl)}); code(err) != codes.NotFound {
		t.Errorf("answer after put-off: %v, want NotFound", err)
	}
}

// TestPauseProtection: while paused, the open prompt and new connections
// are allowed once and logged, no rule is stored and nothing is asked;
// at the end of the pause, protection resumes by itself.
func TestPauseProtection(t *testing.T) {
	h := newHarness(t, nil)
	pc := h.watchPrompts()
	ctx := context.Background()
	h.agent.hold("c1", h.uid, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	waitFor(t, "a prompt", func() bool { return pc.count(uiv1.PromptEvent_KIND_ADDED) == 1 })

	if _, err := h.ui.PauseProtection(ctx, &uiv1.PauseProtectionRequest{Duration: durationpb.New(0)}); code(err) != codes.InvalidArgument {
		t.Errorf("pause of 0: %v, want InvalidArgument", err)
	}
	if _, err := h.ui.PauseProtection(ctx, &uiv1.PauseProtectionRequest{Duration: durationpb.New(25 * time.Hour)}); code(err) != codes.InvalidArgument {
		t.Errorf("pause of 25h: %v, want InvalidArgument", err)
	}
	start := h.clock.Now()
	resp, err := h.ui.PauseProtection(ctx, &uiv1.PauseProtectionRequest{Duration: durationpb.New(5 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if want := start.Add(5 * time.Minute); !resp.GetPausedUntil().AsTime().Equal(want) {
		t.Errorf("paused until %v, want %v", resp.GetPausedUntil().AsTime(), want)
	}
	if st := h.status(); !st.GetPausedUntil().AsTime().Equal(start.Add(5 * time.Minute)) {
		t.Errorf("status paused_until %v", st.GetPausedUntil())
	}
	waitFor(t, "the open prompt allowed", func() bool { return h.agent.decision("c1") == agentv1.Action_ACTION_ALLOW })

	h.agent.hold("c2", h.uid, curl, 40001, "192.0.2.2", 443, 30*time.Second)
	waitFor(t, "a new connection allowed while paused", func() bool { return h.agent.decision("c2") == agentv1.Action_ACTION_ALLOW })
	if n := pc.count(uiv1.PromptEvent_KIND_ADDED); n != 1 {
		t.Errorf("%d prompts while paused, want only the one before", n)
	}
	h.waitHistory("of the paused decisions", func(es []*uiv1.HistoryEntry) bool {
		n := 0
		for _, e := range es {
			if e.GetDecidedBy() == "paused" && e.GetAction() == rulesv1.Action_ACTION_ALLOW {
				n++
			}
		}
		return n == 2
	})
	if st := h.status(); st.GetRules() != 0 {
		t.Errorf("%d rules stored by a pause, want none", st.GetRules())
	}

	h.clock.Advance(5 * time.Minute)
	waitFor(t, "protection to resume by itself", func() bool { return h.status().GetPausedUntil() == nil })
	h.agent.hold("c3", h.uid, curl, 40002, "192.0.2.3", 443, 30*time.Second)
	waitFor(t, "a prompt again", func() bool { return pc.count(uiv1.PromptEvent_KIND_ADDED) == 2 })
	if a := h.agent.decision("c3"); a != agentv1.Action_ACTION_UNSPECIFIED {
		t.Errorf("c3 decided %v after the pause, want a prompt", a)
	}

	// Resume ends a pause early.
	if _, err := h.ui.PauseProtection(ctx, &uiv1.PauseProtectionRequest{Duration: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ui.ResumeProtection(ctx, &uiv1.ResumeProtectionRequest{}); err != nil {
		t.Fatal(err)
	}
	if st := h.status(); st.GetPausedUntil() != nil {
		t.Errorf("paused until %v after resume", st.GetPausedUntil())
	}
	h.agent.hold("c4", h.uid, curl, 40003, "192.0.2.4", 443, 30*time.Second)
	waitFor(t, "a prompt after resume", func() bool { return pc.count(uiv1.PromptEvent_KIND_ADDED) == 3 })
}
