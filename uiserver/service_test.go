package uiserver

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/flow"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

const curl = "/usr/bin/curl"

func (h *harness) addRule(r *rulesv1.Rule) *rulesv1.Rule {
	h.t.Helper()
	resp, err := h.ui.AddRule(context.Background(), &uiv1.AddRuleRequest{Rule: r})
	if err != nil {
		h.t.Fatalf("AddRule: %v", err)
	}
	return resp.GetRule()
}

func (h *harness) waitPushed(what string, cond func(ids map[string]bool) bool) {
	h.t.Helper()
	waitFor(h.t, what, func() bool {
		ids, ok := h.agent.lastRuleIDs()
		return ok && cond(ids)
	})
}

func TestRuleDecidesWithoutPrompt(t *testing.T) {
	h := newHarness(t, nil)
	pc := h.watchPrompts()
	r := h.addRule(forever(rulesv1.Action_ACTION_REJECT, curl))
	if r.GetId() == "" || r.GetCreated() == nil {
		t.Fatalf("added rule has no id or created: %v", r)
	}
	h.waitPushed("the rule pushed to the agent", func(ids map[string]bool) bool { return ids[r.GetId()] })

	// The agent held it anyway (SetRules raced with the connection).
	h.agent.hold("c1", h.uid, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	waitFor(t, "the rule to decide c1", func() bool { return h.agent.decision("c1") == agentv1.Action_ACTION_REJECT })
	if n := pc.count(uiv1.PromptEvent_KIND_ADDED); n != 0 {
		t.Errorf("%d prompts for a connection a rule covers", n)
	}
	h.waitHistory("of the rule's decision", func(es []*uiv1.HistoryEntry) bool {
		for _, e := range es {
			if e.GetDecidedBy() == "rule:"+r.GetId() && e.GetRuleId() == r.GetId() && e.GetAction() == rulesv1.Action_ACTION_REJECT {
				return true
			}
		}
		return false
	})
}

func TestOtherUsersConnectionsAreIgnored(t *testing.T) {
	h := newHarness(t, nil)
	h.agent.hold("c1", h.uid+1, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	h.agent.hold("c2", h.uid, curl, 40001, "192.0.2.1", 443, 30*time.Second)
	waitFor(t, "c2 decided silently", func() bool { return h.agent.decision("c2") == agentv1.Action_ACTION_ALLOW })
	if a := h.agent.decision("c1"); a != agentv1.Action_ACTION_UNSPECIFIED {
		t.Errorf("another user's connection was decided: %v", a)
	}
}

func TestPromptGroupsParallelConnections(t *testing.T) {
	h := newHarness(t, nil)
	pc := h.watchPrompts()
	const n = 500
	for i := range n {
		h.agent.hold(fmt.Sprintf("c%d", i), h.uid, curl, uint32(30000+i), "192.0.2.7", 443, 30*time.Second)
	}
	waitFor(t, "a prompt covering all connections", func() bool {
		evs := pc.snapshot()
		return len(evs) > 0 && evs[len(evs)-1].GetPrompt().GetConnections() == n
	})
	if got := pc.count(uiv1.PromptEvent_KIND_ADDED); got != 1 {
		t.Fatalf("%d prompts for %d connections of one program to one destination, want 1", got, n)
	}
	if st := h.status(); st.GetPendingPrompts() != 1 {
		t.Errorf("status says %d pending prompts, want 1", st.GetPendingPrompts())
	}
	added := pc.find(uiv1.PromptEvent_KIND_ADDED).GetPrompt()
	if added.GetProcess().GetExe() != curl || added.GetFlow().GetDstIp() != "192.0.2.7" || added.GetFlow().GetDstPort() != 443 {
		t.Errorf("prompt shows %v", added)
	}
	once := &rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: curl, Lifetime: rulesv1.Lifetime_LIFETIME_ONCE}
	resp, err := h.ui.AnswerPrompt(context.Background(), &uiv1.AnswerPromptRequest{PromptId: added.GetId(), Rule: once})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRule().GetId() != "" {
		t.Errorf("a once rule got id %q", resp.GetRule().GetId())
	}
	waitFor(t, "all connections allowed", func() bool { return h.agent.decidedCount() == n })
	for i := range n {
		if a := h.agent.decision(fmt.Sprintf("c%d", i)); a != agentv1.Action_ACTION_ALLOW {
			t.Fatalf("c%d got %v", i, a)
		}
	}
	rs, err := h.ui.ListRules(context.Background(), &uiv1.ListRulesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.GetRules()) != 0 {
		t.Errorf("a once answer left rules: %v", rs.GetRules())
	}
}

func TestFirstAnswerWins(t *testing.T) {
	h := newHarness(t, nil)
	a, b := h.watchPrompts(), h.watchPrompts()
	h.agent.hold("c1", h.uid, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	waitFor(t, "both clients prompted", func() bool {
		return a.find(uiv1.PromptEvent_KIND_ADDED) != nil && b.find(uiv1.PromptEvent_KIND_ADDED) != nil
	})
	id := a.find(uiv1.PromptEvent_KIND_ADDED).GetPrompt().GetId()
	if id2 := b.find(uiv1.PromptEvent_KIND_ADDED).GetPrompt().GetId(); id2 != id {
		t.Fatalf("clients see different prompts %q and %q", id, id2)
	}
	deny := forever(rulesv1.Action_ACTION_DENY, curl)
	resp, err := h.ui.AnswerPrompt(context.Background(), &uiv1.AnswerPromptRequest{PromptId: id, Rule: deny})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.ui.AnswerPrompt(context.Background(), &uiv1.AnswerPromptRequest{PromptId: id, Rule: forever(rulesv1.Action_ACTION_ALLOW, curl)})
	if code(err) != codes.NotFound {
		t.Fatalf("second answer: %v, want NotFound", err)
	}
	for name, c := range map[string]*promptClient{"a": a, "b": b} {
		waitFor(t, "client "+name+" told the prompt was answered", func() bool {
			ev := c.find(uiv1.PromptEvent_KIND_WITHDRAWN)
			return ev != nil && ev.GetPrompt().GetId() == id && ev.GetReason() == "answered" && ev.GetAction() == rulesv1.Action_ACTION_DENY
		})
	}
	if got := h.agent.decision("c1"); got != agentv1.Action_ACTION_DENY {
		t.Errorf("c1 got %v, want deny", got)
	}
	// The answer decides the connection before its rule is pushed: else
	// the agent decides it by the rule, and the history has that line too.
	if by := h.agent.decidedBy("c1"); !strings.HasPrefix(by, "api:") {
		t.Errorf("c1 decided by %q, want the answer (api:...)", by)
	}
	ruleID := resp.GetRule().GetId()
	h.waitPushed("the answer's rule pushed", func(ids map[string]bool) bool { return ids[ruleID] })
	h.waitHistory("of the answer", func(es []*uiv1.HistoryEntry) bool {
		for _, e := range es {
			if e.GetDecidedBy() == "prompt" && e.GetRuleId() == ruleID {
				return true
			}
		}
		return false
	})
	// The agent's own record of our Decide is not recorded a second time.
	es := h.waitHistory("complete", func(es []*uiv1.HistoryEntry) bool { return len(es) >= 1 })
	for _, e := range es {
		if strings.HasPrefix(e.GetDecidedBy(), "api:") {
			t.Errorf("our own answer recorded twice: %v", e)
		}
	}
	// The agent decided c1 by our answer, not by the rule pushed after it
	// (that was issue 14's second history line, "rule:ID" after "prompt").
	if n := len(es); n != 1 {
		t.Errorf("%d history lines for one answered prompt, want 1: %v", n, es)
	}
}

func TestAnswerMustBeValidAndCoverThePrompt(t *testing.T) {
	h := newHarness(t, nil)
	pc := h.watchPrompts()
	h.agent.hold("c1", h.uid, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	waitFor(t, "a prompt", func() bool { return pc.find(uiv1.PromptEvent_KIND_ADDED) != nil })
	id := pc.find(uiv1.PromptEvent_KIND_ADDED).GetPrompt().GetId()
	tests := []struct {
		name string
		rule *rulesv1.Rule
		want string
	}{
		{"other program", forever(rulesv1.Action_ACTION_ALLOW, "/usr/bin/wget"), "does not cover"},
		{"other port", &rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: curl, DstPortMin: 80, DstPortMax: 80,
			Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}, "does not cover"},
		{"no action", &rulesv1.Rule{Exe: curl, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}, "action"},
		{"bad regexp", &rulesv1.Rule{Action: rulesv1.Action_ACTION_ALLOW, Cmdline: "(", Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}, "cmdline"},
		{"huge exe", forever(rulesv1.Action_ACTION_ALLOW, "/"+strings.Repeat("a", 100000)), "longer than"},
		{"no rule", nil, "rule is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.ui.AnswerPrompt(context.Background(), &uiv1.AnswerPromptRequest{PromptId: id, Rule: tt.rule})
			if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want InvalidArgument mentioning %q", err, tt.want)
			}
		})
	}
	if st := h.status(); st.GetPendingPrompts() != 1 {
		t.Errorf("a rejected answer closed the prompt")
	}
	_, err := h.ui.AnswerPrompt(context.Background(), &uiv1.AnswerPromptRequest{PromptId: "nope", Rule: forever(rulesv1.Action_ACTION_ALLOW, curl)})
	if code(err) != codes.NotFound {
		t.Errorf("unknown prompt: %v, want NotFound", err)
	}
}

func TestNoPromptClientAppliesSilentAction(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.SilentAction = flow.ActionReject })
	h.agent.hold("c1", h.uid, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	h.agent.hold("c2", h.uid, curl, 40001, "192.0.2.1", 443, 30*time.Second)
	waitFor(t, "silent decisions", func() bool {
		return h.agent.decision("c1") == agentv1.Action_ACTION_REJECT && h.agent.decision("c2") == agentv1.Action_ACTION_REJECT
	})
	resp, err := h.ui.ListDecideLater(context.Background(), &uiv1.ListDecideLaterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetEntries()) != 1 {
		t.Fatalf("%d decide-later entries for one program and destination, want 1: %v", len(resp.GetEntries()), resp.GetEntries())
	}
	e := resp.GetEntries()[0]
	if e.GetProcess().GetExe() != curl || e.GetApplied() != rulesv1.Action_ACTION_REJECT || e.GetFlow().GetDstPort() != 443 {
		t.Errorf("entry %v", e)
	}
	h.waitHistory("of the default decisions", func(es []*uiv1.HistoryEntry) bool {
		n := 0
		for _, e := range es {
			if e.GetDecidedBy() == "default" {
				n++
			}
		}
		return n == 2
	})
	if st := h.status(); st.GetDecideLater() != 1 || st.GetSilentAction() != rulesv1.Action_ACTION_REJECT {
		t.Errorf("status %v", st)
	}
}

func TestPromptDeadline(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.TimeoutAction = flow.ActionReject })
	pc := h.watchPrompts()
	start := h.clock.Now()
	h.agent.hold("c1", h.uid, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	// The agent gives the second destination less time than the prompt
	// timeout: its prompt must end a second before the agent's deadline.
	h.agent.hold("c2", h.uid, curl, 40001, "192.0.2.2", 443, 10*time.Second)
	waitFor(t, "two prompts", func() bool { return pc.count(uiv1.PromptEvent_KIND_ADDED) == 2 })
	deadlines := map[string]time.Time{}
	ids := map[string]string{}
	for _, ev := range pc.snapshot() {
		p := ev.GetPrompt()
		deadlines[p.GetFlow().GetDstIp()] = p.GetDeadline().AsTime()
		ids[p.GetFlow().GetDstIp()] = p.GetId()
		if p.GetDeadlineAction() != rulesv1.Action_ACTION_REJECT {
			t.Errorf("deadline action %v", p.GetDeadlineAction())
		}
	}
	if got, want := deadlines["192.0.2.1"], start.Add(25*time.Second); !got.Equal(want) {
		t.Errorf("deadline %v, want now+prompt_timeout %v", got, want)
	}
	if got, want := deadlines["192.0.2.2"], start.Add(9*time.Second); !got.Equal(want) {
		t.Errorf("deadline %v, want the agent's deadline - 1s %v", got, want)
	}

	h.clock.Advance(9 * time.Second)
	waitFor(t, "c2 decided at its deadline", func() bool { return h.agent.decision("c2") == agentv1.Action_ACTION_REJECT })
	h.clock.Advance(15 * time.Second)
	// A round trip through the service; c1's time is not up yet.
	h.status()
	if a := h.agent.decision("c1"); a != agentv1.Action_ACTION_UNSPECIFIED {
		t.Fatalf("c1 decided %v before its deadline", a)
	}
	h.clock.Advance(time.Second)
	waitFor(t, "c1 decided at its deadline", func() bool { return h.agent.decision("c1") == agentv1.Action_ACTION_REJECT })
	waitFor(t, "both prompts withdrawn", func() bool {
		n := 0
		for _, ev := range pc.snapshot() {
			if ev.GetKind() == uiv1.PromptEvent_KIND_WITHDRAWN && ev.GetReason() == "deadline" {
				n++
			}
		}
		return n == 2
	})
	h.waitHistory("of the deadline decisions", func(es []*uiv1.HistoryEntry) bool {
		n := 0
		for _, e := range es {
			if e.GetDecidedBy() == "deadline" && e.GetAction() == rulesv1.Action_ACTION_REJECT {
				n++
			}
		}
		return n == 2
	})
	// The agent is told why, so that it counts deadlines as deadlines,
	// not as answers.
	for _, id := range []string{"c1", "c2"} {
		if got := h.agent.reason(id); got != agentv1.DecideReason_DECIDE_REASON_DEADLINE {
			t.Errorf("%s decided with reason %v, want deadline", id, got)
		}
	}
	// The agent's record of c1's is this service's own: not recorded
	// twice. (c2's echo may arrive after the clock moved past its echo
	// window.) A decision sent after it marks that it was read.
	h.agent.emitDecision(&agentv1.DecisionEvent{Time: timestamppb.New(h.clock.Now()), Process: &agentv1.Process{Pid: 101, Tgid: 101, Uid: h.uid, Comm: "curl", Exe: curl},
		Flow:   &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 4, SrcIp: "10.0.0.1", SrcPort: 40009, DstIp: "192.0.2.9", DstPort: 443},
		Action: agentv1.Action_ACTION_ALLOW, DecidedBy: "policy"})
	es := h.waitHistory("of the marker", func(es []*uiv1.HistoryEntry) bool {
		return slices.ContainsFunc(es, func(e *uiv1.HistoryEntry) bool { return e.GetFlow().GetDstIp() == "192.0.2.9" })
	})
	for _, e := range es {
		if e.GetDecidedBy() == "deadline:uid="+strconv.FormatUint(uint64(h.uid), 10) && e.GetFlow().GetDstIp() == "192.0.2.1" {
			t.Errorf("the agent's record of a deadline decision was recorded too: %v", e)
		}
	}
}

func TestResolvedElsewhereWithdrawsPrompt(t *testing.T) {
	h := newHarness(t, nil)
	pc := h.watchPrompts()
	h.agent.hold("c1", h.uid, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	waitFor(t, "a prompt", func() bool { return pc.find(uiv1.PromptEvent_KIND_ADDED) != nil })
	h.agent.resolveElsewhere("c1", agentv1.Action_ACTION_ALLOW)
	waitFor(t, "the prompt withdrawn", func() bool {
		ev := pc.find(uiv1.PromptEvent_KIND_WITHDRAWN)
		return ev != nil && ev.GetReason() == "agent"
	})
	if st := h.status(); st.GetPendingPrompts() != 0 {
		t.Errorf("%d prompts left", st.GetPendingPrompts())
	}
}

func TestLastPromptClientLeavingAppliesSilentAction(t *testing.T) {
	h := newHarness(t, nil)
	pc := h.watchPrompts()
	h.agent.hold("c1", h.uid, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	waitFor(t, "a prompt", func() bool { return pc.find(uiv1.PromptEvent_KIND_ADDED) != nil })
	pc.cancel()
	waitFor(t, "the silent action", func() bool { return h.agent.decision("c1") == agentv1.Action_ACTION_ALLOW })
	waitFor(t, "a decide-later entry", func() bool { return h.status().GetDecideLater() == 1 })
}

func TestAgentRestartGetsAllRulesAgain(t *testing.T) {
	h := newHarness(t, nil)
	stored := h.addRule(forever(rulesv1.Action_ACTION_ALLOW, curl))
	session := h.addRule(&rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_DENY, Exe: "/usr/bin/wget",
		Lifetime: rulesv1.Lifetime_LIFETIME_SESSION})
	disabled := h.addRule(&rulesv1.Rule{Action: rulesv1.Action_ACTION_DENY, Exe: "/usr/bin/nc", Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER})
	h.waitPushed("both rules", func(ids map[string]bool) bool { return ids[stored.GetId()] && ids[session.GetId()] })

	pc := h.watchPrompts()
	h.agent.hold("c1", h.uid, "/usr/bin/ssh", 40000, "192.0.2.1", 22, 30*time.Second)
	waitFor(t, "a prompt", func() bool { return pc.find(uiv1.PromptEvent_KIND_ADDED) != nil })

	h.agent.stop()
	waitFor(t, "the service to notice", func() bool { return !h.status().GetAgentConnected() })
	waitFor(t, "the prompt withdrawn", func() bool {
		ev := pc.find(uiv1.PromptEvent_KIND_WITHDRAWN)
		return ev != nil && ev.GetReason() == "agent"
	})
	h.agent = startFakeAgent(t, h.cfg.AgentSocket, h.clock)
	h.waitPushed("all rules pushed to the new agent", func(ids map[string]bool) bool {
		return ids[stored.GetId()] && ids[session.GetId()] && len(ids) == 2
	})
	if ids, _ := h.agent.lastRuleIDs(); ids[disabled.GetId()] {
		t.Error("a disabled rule was pushed")
	}
	waitFor(t, "the service reconnected", func() bool { return h.status().GetAgentConnected() && h.agent.watching() })
	if st := h.status(); st.GetAgent().GetVersion() != "fake" || st.GetAgent().GetCallerUid() != h.uid {
		t.Errorf("agent status %v", st.GetAgent())
	}
}

func TestRestartKeepsStoredRulesOnly(t *testing.T) {
	h := newHarness(t, nil)
	stored := h.addRule(forever(rulesv1.Action_ACTION_ALLOW, curl))
	h.addRule(&rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_DENY, Exe: "/usr/bin/wget", Lifetime: rulesv1.Lifetime_LIFETIME_SESSION})
	// A rule hit reported by the agent is counted and kept.
	h.agent.emitDecision(&agentv1.DecisionEvent{
		Time: timestamppb.Now(), Process: &agentv1.Process{Uid: h.uid, Exe: curl},
		Flow:   &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, DstIp: "192.0.2.1", DstPort: 443},
		Action: agentv1.Action_ACTION_ALLOW, DecidedBy: "rule:" + stored.GetId(), RuleId: stored.GetId(),
	})
	h.waitHistory("of the rule hit", func(es []*uiv1.HistoryEntry) bool {
		return len(es) == 1 && es[0].GetRuleId() == stored.GetId()
	})
	h.stop()
	h.start()
	rs, err := h.ui.ListRules(context.Background(), &uiv1.ListRulesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.GetRules()) != 1 || rs.GetRules()[0].GetId() != stored.GetId() {
		t.Fatalf("after restart: %v, want only the stored rule", rs.GetRules())
	}
	if got := rs.GetRules()[0]; got.GetHits() != 1 || got.GetLastHit() == nil {
		t.Errorf("hits %d last %v, want 1 hit kept", got.GetHits(), got.GetLastHit())
	}
	h.waitPushed("the stored rule only", func(ids map[string]bool) bool { return len(ids) == 1 && ids[stored.GetId()] })
	// The agent replays its recent decisions to a new watcher; the history
	// must not get them twice.
	h.agent.emitDecision(&agentv1.DecisionEvent{
		Time: timestamppb.New(time.Now().Add(-time.Minute)), Process: &agentv1.Process{Uid: h.uid, Exe: curl},
		Flow: &agentv1.Flow{DstIp: "192.0.2.1"}, Action: agentv1.Action_ACTION_ALLOW, DecidedBy: "policy",
	})
	h.agent.emitDecision(&agentv1.DecisionEvent{
		Time: timestamppb.Now(), Process: &agentv1.Process{Uid: h.uid, Exe: curl},
		Flow: &agentv1.Flow{DstIp: "192.0.2.9"}, Action: agentv1.Action_ACTION_ALLOW, DecidedBy: "policy",
	})
	es := h.waitHistory("of the new decision", func(es []*uiv1.HistoryEntry) bool {
		return len(es) > 0 && es[len(es)-1].GetFlow().GetDstIp() == "192.0.2.9"
	})
	if len(es) != 2 {
		t.Errorf("history has %d entries, want the hit and the new decision: %v", len(es), es)
	}
}

func TestResolveDecideLater(t *testing.T) {
	h := newHarness(t, nil)
	h.agent.hold("c1", h.uid, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	h.agent.hold("c2", h.uid, "/usr/bin/wget", 40001, "192.0.2.1", 80, 30*time.Second)
	var entries []*uiv1.DecideLaterEntry
	waitFor(t, "two decide-later entries", func() bool {
		resp, err := h.ui.ListDecideLater(context.Background(), &uiv1.ListDecideLaterRequest{})
		entries = resp.GetEntries()
		return err == nil && len(entries) == 2
	})
	byExe := map[string]string{}
	for _, e := range entries {
		byExe[e.GetProcess().GetExe()] = e.GetId()
	}
	ctx := context.Background()
	_, err := h.ui.ResolveDecideLater(ctx, &uiv1.ResolveDecideLaterRequest{Id: byExe[curl], Rule: forever(rulesv1.Action_ACTION_DENY, "/usr/bin/wget")})
	if code(err) != codes.InvalidArgument {
		t.Errorf("a rule not covering the entry: %v, want InvalidArgument", err)
	}
	resp, err := h.ui.ResolveDecideLater(ctx, &uiv1.ResolveDecideLaterRequest{Id: byExe[curl], Rule: forever(rulesv1.Action_ACTION_DENY, curl)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRule().GetId() == "" {
		t.Fatal("no rule made")
	}
	h.waitPushed("the new rule", func(ids map[string]bool) bool { return ids[resp.GetRule().GetId()] })
	if _, err := h.ui.ResolveDecideLater(ctx, &uiv1.ResolveDecideLaterRequest{Id: byExe["/usr/bin/wget"]}); err != nil {
		t.Fatalf("remove only: %v", err)
	}
	left, err := h.ui.ListDecideLater(ctx, &uiv1.ListDecideLaterRequest{})
	if err != nil || len(left.GetEntries()) != 0 {
		t.Errorf("entries left: %v %v", left.GetEntries(), err)
	}
	rs, _ := h.ui.ListRules(ctx, &uiv1.ListRulesRequest{})
	if len(rs.GetRules()) != 1 {
		t.Errorf("rules %v, want the one made", rs.GetRules())
	}
	if _, err := h.ui.ResolveDecideLater(ctx, &uiv1.ResolveDecideLaterRequest{Id: byExe[curl]}); code(err) != codes.NotFound {
		t.Errorf("resolving twice: %v, want NotFound", err)
	}
}

func TestRulesAPI(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	r := h.addRule(forever(rulesv1.Action_ACTION_ALLOW, curl))
	r.Action = rulesv1.Action_ACTION_DENY
	r.Note = "changed"
	up, err := h.ui.UpdateRule(ctx, &uiv1.UpdateRuleRequest{Rule: r})
	if err != nil {
		t.Fatal(err)
	}
	if up.GetRule().GetAction() != rulesv1.Action_ACTION_DENY || !up.GetRule().GetCreated().AsTime().Equal(r.GetCreated().AsTime()) {
		t.Errorf("updated %v", up.GetRule())
	}
	// Forever -> session -> forever keeps the ID.
	r.Lifetime = rulesv1.Lifetime_LIFETIME_SESSION
	if _, err := h.ui.UpdateRule(ctx, &uiv1.UpdateRuleRequest{Rule: r}); err != nil {
		t.Fatal(err)
	}
	r.Lifetime = rulesv1.Lifetime_LIFETIME_FOREVER
	if _, err := h.ui.UpdateRule(ctx, &uiv1.UpdateRuleRequest{Rule: r}); err != nil {
		t.Fatal(err)
	}
	en, err := h.ui.SetRuleEnabled(ctx, &uiv1.SetRuleEnabledRequest{Id: r.GetId(), Enabled: false})
	if err != nil || en.GetRule().GetEnabled() {
		t.Fatalf("disable: %v %v", en, err)
	}
	h.waitPushed("the disabled rule withdrawn from the agent", func(ids map[string]bool) bool { return !ids[r.GetId()] })

	exp, err := h.ui.ExportRules(ctx, &uiv1.ExportRulesRequest{Format: uiv1.Format_FORMAT_TOML})
	if err != nil {
		t.Fatal(err)
	}
	imp, err := h.ui.ImportRules(ctx, &uiv1.ImportRulesRequest{Format: uiv1.Format_FORMAT_TOML, Data: exp.GetData()})
	if err != nil {
		t.Fatal(err)
	}
	// The exported rule is there already: importing it changes nothing.
	if len(imp.GetImported()) != 0 || imp.GetUnchanged() != 1 {
		t.Errorf("imported %v, %d unchanged; want none imported, 1 unchanged", imp.GetImported(), imp.GetUnchanged())
	}
	if _, err := h.ui.DeleteRule(ctx, &uiv1.DeleteRuleRequest{Id: r.GetId()}); err != nil {
		t.Fatal(err)
	}
	// Deleted, it comes back under its id.
	imp, err = h.ui.ImportRules(ctx, &uiv1.ImportRulesRequest{Format: uiv1.Format_FORMAT_TOML, Data: exp.GetData()})
	if err != nil {
		t.Fatal(err)
	}
	if len(imp.GetImported()) != 1 || imp.GetAdded() != 1 || imp.GetImported()[0].GetId() != r.GetId() || imp.GetImported()[0].GetNote() != "changed" {
		t.Errorf("imported %v (added %d)", imp.GetImported(), imp.GetAdded())
	}
	rs, _ := h.ui.ListRules(ctx, &uiv1.ListRulesRequest{})
	if len(rs.GetRules()) != 1 || rs.GetRules()[0].GetId() != r.GetId() {
		t.Errorf("rules %v", rs.GetRules())
	}

	errs := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"delete unknown", func() error {
			_, err := h.ui.DeleteRule(ctx, &uiv1.DeleteRuleRequest{Id: "0123456789abcdef"})
			return err
		}, codes.NotFound},
		{"delete no id", func() error { _, err := h.ui.DeleteRule(ctx, &uiv1.DeleteRuleRequest{}); return err }, codes.InvalidArgument},
		{"update unknown", func() error {
			u := forever(rulesv1.Action_ACTION_ALLOW, curl)
			u.Id = "0123456789abcdef"
			_, err := h.ui.UpdateRule(ctx, &uiv1.UpdateRuleRequest{Rule: u})
			return err
		}, codes.NotFound},
		{"add once", func() error {
			_, err := h.ui.AddRule(ctx, &uiv1.AddRuleRequest{Rule: &rulesv1.Rule{Action: rulesv1.Action_ACTION_ALLOW, Lifetime: rulesv1.Lifetime_LIFETIME_ONCE}})
			return err
		}, codes.InvalidArgument},
		{"add relative exe", func() error {
			_, err := h.ui.AddRule(ctx, &uiv1.AddRuleRequest{Rule: forever(rulesv1.Action_ACTION_ALLOW, "curl")})
			return err
		}, codes.InvalidArgument},
		{"export opensnitch", func() error {
			_, err := h.ui.ExportRules(ctx, &uiv1.ExportRulesRequest{Format: uiv1.Format_FORMAT_OPENSNITCH})
			return err
		}, codes.InvalidArgument},
		{"import garbage", func() error {
			_, err := h.ui.ImportRules(ctx, &uiv1.ImportRulesRequest{Format: uiv1.Format_FORMAT_JSON, Data: []byte("{not json")})
			return err
		}, codes.InvalidArgument},
		{"import too big", func() error {
			_, err := h.ui.ImportRules(ctx, &uiv1.ImportRulesRequest{Format: uiv1.Format_FORMAT_JSON, Data: make([]byte, MaxImportBytes+1)})
			return err
		}, codes.InvalidArgument},
		{"import no format", func() error {
			_, err := h.ui.ImportRules(ctx, &uiv1.ImportRulesRequest{Data: []byte("[]")})
			return err
		}, codes.InvalidArgument},
		{"huge id", func() error {
			_, err := h.ui.SetRuleEnabled(ctx, &uiv1.SetRuleEnabledRequest{Id: strings.Repeat("x", 1000)})
			return err
		}, codes.InvalidArgument},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); code(err) != tt.want {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestImportTwiceAddsNothing: an exported file imported twice (issue 14:
// 3 rules became 6, then 9) adds nothing the second time, an edited rule
// in the file changes the rule with its id, and id-less rules that say
// what an existing rule says are left alone.
func TestImportTwiceAddsNothing(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	a := h.addRule(forever(rulesv1.Action_ACTION_ALLOW, curl))
	h.addRule(forever(rulesv1.Action_ACTION_DENY, "/usr/bin/wget"))
	session := forever(rulesv1.Action_ACTION_REJECT, "/usr/bin/nc")
	session.Lifetime = rulesv1.Lifetime_LIFETIME_SESSION
	h.addRule(session)
	h.addRule(&rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: "/usr/bin/ssh",
		Lifetime: rulesv1.Lifetime_LIFETIME_DURATION, Expires: timestamppb.New(h.clock.Now().Add(time.Hour))})
	for _, f := range []uiv1.Format{uiv1.Format_FORMAT_JSON, uiv1.Format_FORMAT_TOML} {
		exp, err := h.ui.ExportRules(ctx, &uiv1.ExportRulesRequest{Format: f})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			imp, err := h.ui.ImportRules(ctx, &uiv1.ImportRulesRequest{Format: f, Data: exp.GetData()})
			if err != nil {
				t.Fatal(err)
			}
			if imp.GetAdded() != 0 || imp.GetChanged() != 0 || imp.GetUnchanged() != 4 || len(imp.GetImported()) != 0 {
				t.Errorf("%v import %d: added %d changed %d unchanged %d, want 0 0 4", f, i+1, imp.GetAdded(), imp.GetChanged(), imp.GetUnchanged())
			}
		}
	}
	rs, _ := h.ui.ListRules(ctx, &uiv1.ListRulesRequest{})
	if len(rs.GetRules()) != 4 {
		t.Fatalf("%d rules after importing twice, want 4", len(rs.GetRules()))
	}

	// An edited file changes the rule with the id; a new id-less rule is
	// added; an id-less copy of an existing rule is not.
	edited := strings.Replace(string(mustExport(t, h, uiv1.Format_FORMAT_TOML)), `action = "allow"`+"\n"+`exe = "`+curl+`"`,
		`action = "reject"`+"\n"+`exe = "`+curl+`"`, 1)
	edited += "\n[[rule]]\naction = \"deny\"\nexe = \"/usr/bin/wget\"\nlifetime = \"forever\"\n" +
		"\n[[rule]]\naction = \"allow\"\nexe = \"/usr/bin/ftp\"\nlifetime = \"forever\"\n"
	imp, err := h.ui.ImportRules(ctx, &uiv1.ImportRulesRequest{Format: uiv1.Format_FORMAT_TOML, Data: []byte(edited)})
	if err != nil {
		t.Fatalf("%v\n%s", err, edited)
	}
	if imp.GetAdded() != 1 || imp.GetChanged() != 1 || imp.GetUnchanged() != 4 {
		t.Errorf("added %d changed %d unchanged %d, want 1 1 4\n%s", imp.GetAdded(), imp.GetChanged(), imp.GetUnchanged(), edited)
	}
	rs, _ = h.ui.ListRules(ctx, &uiv1.ListRulesRequest{})
	if len(rs.GetRules()) != 5 {
		t.Errorf("%d rules, want 5", len(rs.GetRules()))
	}
	for _, r := range rs.GetRules() {
		if r.GetId() == a.GetId() && (r.GetAction() != rulesv1.Action_ACTION_REJECT || !r.GetCreated().AsTime().Equal(a.GetCreated().AsTime())) {
			t.Errorf("the edited rule is %v, want reject with its created time kept", r)
		}
	}
}

func mustExport(t *testing.T, h *harness, f uiv1.Format) []byte {
	t.Helper()
	exp, err := h.ui.ExportRules(context.Background(), &uiv1.ExportRulesRequest{Format: f})
	if err != nil {
		t.Fatal(err)
	}
	return exp.GetData()
}

// TestAddRuleWithClientIDIsIdempotent: a client that retries an add whose
// answer it lost (the connection dropped) sends the same id, and the
// retry returns the rule stored the first time instead of a second one.
func TestAddRuleWithClientIDIsIdempotent(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	r := forever(rulesv1.Action_ACTION_ALLOW, curl)
	r.Id = "c0ffee0123456789"
	first, err := h.ui.AddRule(ctx, &uiv1.AddRuleRequest{Rule: r})
	if err != nil {
		t.Fatal(err)
	}
	if first.GetRule().GetId() != r.GetId() {
		t.Errorf("stored under %q, want the client's id %q", first.GetRule().GetId(), r.GetId())
	}
	again, err := h.ui.AddRule(ctx, &uiv1.AddRuleRequest{Rule: r})
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if !again.GetRule().GetCreated().AsTime().Equal(first.GetRule().GetCreated().AsTime()) {
		t.Errorf("retry returned %v, want the first rule", again.GetRule())
	}
	rs, _ := h.ui.ListRules(ctx, &uiv1.ListRulesRequest{})
	if len(rs.GetRules()) != 1 {
		t.Errorf("%d rules after a retried add, want 1", len(rs.GetRules()))
	}
	other := forever(rulesv1.Action_ACTION_DENY, curl)
	other.Id = r.GetId()
	if _, err := h.ui.AddRule(ctx, &uiv1.AddRuleRequest{Rule: other}); code(err) != codes.AlreadyExists {
		t.Errorf("a different rule under a taken id: %v, want AlreadyExists", err)
	}
	bad := forever(rulesv1.Action_ACTION_DENY, curl)
	bad.Id = "no spaces"
	if _, err := h.ui.AddRule(ctx, &uiv1.AddRuleRequest{Rule: bad}); code(err) != codes.InvalidArgument {
		t.Errorf("an id with a space: %v, want InvalidArgument", err)
	}
	_, err = h.ui.DeleteRule(ctx, &uiv1.DeleteRuleRequest{Id: "nope"})
	if msg := status.Convert(err).Message(); code(err) != codes.NotFound || strings.Count(msg, "nope") != 1 {
		t.Errorf("delete unknown: %v, want NotFound naming the id once", err)
	}
}

func TestImportOpenSnitchReportsProblems(t *testing.T) {
	h := newHarness(t, nil)
	data := `{"name":"allow-curl","enabled":true,"action":"allow","duration":"always",
	  "operator":{"type":"simple","operand":"process.path","data":"/usr/bin/curl"}}`
	resp, err := h.ui.ImportRules(context.Background(), &uiv1.ImportRulesRequest{Format: uiv1.Format_FORMAT_OPENSNITCH, Data: []byte(data)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetImported()) != 1 || resp.GetImported()[0].GetExe() != curl {
		t.Errorf("imported %v problems %v", resp.GetImported(), resp.GetProblems())
	}
	h.waitPushed("the imported rule", func(ids map[string]bool) bool { return ids[resp.GetImported()[0].GetId()] })
}

func TestExpiredDurationRulesAreSwept(t *testing.T) {
	h := newHarness(t, nil)
	r := h.addRule(&rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: curl,
		Lifetime: rulesv1.Lifetime_LIFETIME_DURATION, Expires: timestamppb.New(h.clock.Now().Add(time.Minute))})
	h.waitPushed("the duration rule", func(ids map[string]bool) bool { return ids[r.GetId()] })
	h.clock.Advance(2 * time.Minute)
	// The sweep runs on a real ticker every minute; call it directly.
	svc := h.service()
	if err := svc.sweepExpired(context.Background()); err != nil {
		t.Fatal(err)
	}
	rs, _ := h.ui.ListRules(context.Background(), &uiv1.ListRulesRequest{})
	if len(rs.GetRules()) != 0 {
		t.Errorf("expired rule kept: %v", rs.GetRules())
	}
	h.waitPushed("the expired rule withdrawn", func(ids map[string]bool) bool { return !ids[r.GetId()] })
}

func TestHealthAndStatus(t *testing.T) {
	h := newHarness(t, nil)
	resp, err := healthpb.NewHealthClient(h.conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: uiv1.UIService_ServiceDesc.ServiceName})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v", resp, err)
	}
	st := h.status()
	if st.GetUid() != h.uid || st.GetVersion() != Version || st.GetStorePath() == "" ||
		st.GetPromptTimeout().AsDuration() != 25*time.Second || st.GetTimeoutAction() != rulesv1.Action_ACTION_DENY {
		t.Errorf("status %v", st)
	}
}

func TestAgentRefusingRulesStillWorks(t *testing.T) {
	h := newHarness(t, nil)
	h.agent.stop()
	waitFor(t, "the service to notice", func() bool { return !h.status().GetAgentConnected() })
	h.agent = startFakeAgent(t, h.cfg.AgentSocket, h.clock)
	h.agent.mu.Lock()
	h.agent.refuseRules = true
	h.agent.mu.Unlock()
	waitFor(t, "the service connected anyway", func() bool { return h.status().GetAgentConnected() && h.agent.watching() })
	h.addRule(forever(rulesv1.Action_ACTION_DENY, curl))
	h.agent.hold("c1", h.uid, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	waitFor(t, "the rule to decide here", func() bool { return h.agent.decision("c1") == agentv1.Action_ACTION_DENY })
}

// The agent groups parallel connections into one entry and announces its
// growing count; the prompt must show every connection the answer releases.
func TestPromptCountsConnectionsTheAgentGrouped(t *testing.T) {
	h := newHarness(t, nil)
	pc := h.watchPrompts()
	h.agent.hold("c1", h.uid, curl, 30000, "192.0.2.7", 443, 30*time.Second)
	waitFor(t, "the prompt", func() bool { return pc.count(uiv1.PromptEvent_KIND_ADDED) == 1 })
	h.agent.grow("c1", 500)
	waitFor(t, "the prompt to count 500 connections", func() bool {
		evs := pc.snapshot()
		return evs[len(evs)-1].GetKind() == uiv1.PromptEvent_KIND_UPDATED && evs[len(evs)-1].GetPrompt().GetConnections() == 500
	})
	if got := pc.count(uiv1.PromptEvent_KIND_ADDED); got != 1 {
		t.Fatalf("%d prompts, want 1", got)
	}
}

// TestHostRulesMatchTheAgentsNames: the agent names a destination from DNS;
// a *.domain rule then decides it without a prompt, the prompt for another
// name shows that name, an answer with a host rule covers it, and history
// keeps the names. A name that is not a plain host name is dropped.
func TestHostRulesMatchTheAgentsNames(t *testing.T) {
	h := newHarness(t, nil)
	pc := h.watchPrompts()
	r := forever(rulesv1.Action_ACTION_ALLOW, curl)
	r.Host = "*.example.test"
	r = h.addRule(r)
	h.waitPushed("the host rule pushed", func(ids map[string]bool) bool { return ids[r.GetId()] })

	h.agent.holdNamed("c1", h.uid, curl, 40000, "192.0.2.80", 443, 30*time.Second, "www.example.test")
	waitFor(t, "the host rule to decide c1", func() bool { return h.agent.decision("c1") == agentv1.Action_ACTION_ALLOW })
	if n := pc.count(uiv1.PromptEvent_KIND_ADDED); n != 0 {
		t.Errorf("%d prompts for a connection a host rule covers", n)
	}

	// Another name: a prompt that shows it, answered with a host rule.
	h.agent.holdNamed("c2", h.uid, curl, 40001, "198.51.100.9", 443, 30*time.Second, "API.Other.TEST.")
	waitFor(t, "a prompt for c2", func() bool { return pc.find(uiv1.PromptEvent_KIND_ADDED) != nil })
	pr := pc.find(uiv1.PromptEvent_KIND_ADDED).GetPrompt()
	if pr.GetHost() != "api.other.test" {
		t.Errorf("prompt host %q, want api.other.test", pr.GetHost())
	}
	wrong := forever(rulesv1.Action_ACTION_ALLOW, curl)
	wrong.Host = "*.example.test"
	if _, err := h.ui.AnswerPrompt(context.Background(), &uiv1.AnswerPromptRequest{PromptId: pr.GetId(), Rule: wrong}); code(err) != codes.InvalidArgument {
		t.Errorf("answer with a host rule for another name: %v, want InvalidArgument", err)
	}
	right := forever(rulesv1.Action_ACTION_DENY, curl)
	right.Host = "api.other.test"
	if _, err := h.ui.AnswerPrompt(context.Background(), &uiv1.AnswerPromptRequest{PromptId: pr.GetId(), Rule: right}); err != nil {
		t.Fatalf("answer with the prompt's host: %v", err)
	}
	if got := h.agent.decision("c2"); got != agentv1.Action_ACTION_DENY {
		t.Errorf("c2 got %v, want deny", got)
	}

	// The same address as c1 with no name, or a hostile name: asked about.
	h.agent.holdNamed("c3", h.uid, curl, 40002, "192.0.2.80", 443, 30*time.Second, "www.example.test\x1b[0m")
	waitFor(t, "a prompt for c3", func() bool { return pc.count(uiv1.PromptEvent_KIND_ADDED) == 2 })
	for _, ev := range pc.snapshot() {
		if ev.GetKind() == uiv1.PromptEvent_KIND_ADDED && ev.GetPrompt().GetFlow().GetSrcPort() == 40002 && ev.GetPrompt().GetHost() != "" {
			t.Errorf("hostile name reached the prompt: %q", ev.GetPrompt().GetHost())
		}
	}
	h.waitHistory("with the names", func(es []*uiv1.HistoryEntry) bool {
		hosts := map[string]bool{}
		for _, e := range es {
			hosts[e.GetHost()] = true
		}
		return hosts["www.example.test"] && hosts["api.other.test"]
	})
}
