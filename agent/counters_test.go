package agent

import (
	"testing"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/rules"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// decidedSum adds up the buckets every packet falls in: each decided
// packet in exactly one "decided by" counter, the others held.
func decidedSum(k *agentv1.Counters) uint64 {
	return k.GetRuleDecisions() + k.GetCacheHits() + k.GetPolicyDecisions() + k.GetApiDecisions() +
		k.GetDeadlineDecisions() + k.GetSilentDecisions() + k.GetRetransmitDecisions() + k.GetOtherDecisions() +
		k.GetShed() + k.GetMalformed() + k.GetHeldPackets()
}

// TestDecidedByAddsUp runs packets through every way of deciding them (a
// rule, the cache, the system policy, an answer, the agent's deadline, a
// rules service's deadline and silent action, a retransmission, the
// kernel, an unreadable packet) and leaves one held: GetStatus's buckets
// add up to the packets, for root and for the user, and a deadline the
// rules service reached counts as a deadline, not an answer.
func TestDecidedByAddsUp(t *testing.T) {
	e, r, clk := newRuleEngine(t)
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{allowRule("web", "/usr/bin/curl", "192.0.2.1/32", 443)}}); err != nil {
		t.Fatal(err)
	}
	s := &apiServer{engine: e, reuse: &udpReuseState{}}
	id := uint32(0)
	send := func(p flow.Process, dst string, sport uint16) uint32 {
		id++
		e.Handle(PacketRef{ID: id}, tcp(dst, sport, 443), p)
		return id
	}
	pendingTo := func(dst string) string {
		t.Helper()
		e.waitRulesIdle()
		for _, p := range e.ListPending(alice) {
			if p.Tuple.Dst.String() == dst {
				return p.ID
			}
		}
		t.Fatalf("nothing pending to %s", dst)
		return ""
	}
	decide := func(dst string, a flow.Action, sc Scope, reason DecideReason) {
		t.Helper()
		if _, _, err := e.Decide(alice, DecideRequest{ID: pendingTo(dst), Action: a, Scope: sc, Reason: reason}); err != nil {
			t.Fatal(err)
		}
	}

	send(curl1000, "192.0.2.1", 40001) // rule
	send(root, "192.0.2.1", 40002)     // policy
	// An answer for two held packets, cached for the destination.
	send(curl1000, "192.0.2.2", 40003)
	send(curl1000, "192.0.2.2", 40004)
	decide("192.0.2.2", flow.ActionAllow, ScopeDestinationPort, ReasonAnswer)
	send(curl1000, "192.0.2.2", 40005) // cache
	// The agent's own deadline, then a retransmission of its packet.
	send(curl1000, "192.0.2.3", 40006)
	pendingTo("192.0.2.3")
	clk.Advance(e.pol.PromptTimeout)
	send(curl1000, "192.0.2.3", 40006)
	// A rules service's deadline and silent action.
	send(curl1000, "192.0.2.4", 40007)
	decide("192.0.2.4", flow.ActionReject, ScopeConnection, ReasonDeadline)
	send(curl1000, "192.0.2.5", 40008)
	decide("192.0.2.5", flow.ActionAllow, ScopeConnection, ReasonSilent)
	// The kernel, by a rule and by the cache.
	kev := func(by string) kdecide.Event {
		p := curl1000
		p.Exe, p.Source = "", kdecide.Source
		return kdecide.Event{Time: clk.Now(), Process: p, Tuple: tcp("192.0.2.1", 0, 443), Action: flow.ActionAllow, By: by}
	}
	e.RecordKernel([]kdecide.Event{kev("rule:web"), kev("cache:c1")})
	e.HandleUnparsed(PacketRef{ID: 1000})
	held := send(curl1000, "192.0.2.6", 40009)
	e.waitRulesIdle()
	if r.rawVerdict(held) != flow.ActionNone {
		t.Fatal("the last packet was decided; it should be held")
	}

	status := func(uid uint32) *agentv1.Counters {
		t.Helper()
		ctx, cancel := callCtx(uid)
		defer cancel()
		st, err := s.GetStatus(ctx, &agentv1.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetCounters()
	}
	for _, tc := range []struct {
		name string
		uid  uint32
		want *agentv1.Counters
	}{
		{"root", 0, &agentv1.Counters{RuleDecisions: 2, CacheHits: 2, PolicyDecisions: 1, ApiDecisions: 2,
			DeadlineDecisions: 2, SilentDecisions: 1, RetransmitDecisions: 1, Malformed: 1, HeldPackets: 1, KernelDecisions: 2}},
		{"alice", 1000, &agentv1.Counters{RuleDecisions: 2, CacheHits: 2, ApiDecisions: 2,
			DeadlineDecisions: 2, SilentDecisions: 1, RetransmitDecisions: 1, HeldPackets: 1, KernelDecisions: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := status(tc.uid)
			if sum := decidedSum(k); sum != k.GetPackets() {
				t.Errorf("buckets add up to %d, packets %d: %v", sum, k.GetPackets(), k)
			}
			got := &agentv1.Counters{RuleDecisions: k.GetRuleDecisions(), CacheHits: k.GetCacheHits(), PolicyDecisions: k.GetPolicyDecisions(),
				ApiDecisions: k.GetApiDecisions(), DeadlineDecisions: k.GetDeadlineDecisions(), SilentDecisions: k.GetSilentDecisions(),
				RetransmitDecisions: k.GetRetransmitDecisions(), OtherDecisions: k.GetOtherDecisions(), Malformed: k.GetMalformed(),
				HeldPackets: k.GetHeldPackets(), KernelDecisions: k.GetKernelDecisions()}
			if got.String() != tc.want.String() {
				t.Errorf("buckets\n%v\nwant\n%v", got, tc.want)
			}
		})
	}

	// The records name who decided.
	var bys []string
	e.mu.Lock()
	for _, d := range e.history {
		bys = append(bys, d.DecidedBy)
	}
	e.mu.Unlock()
	for _, want := range []string{"deadline:uid=1000", "default:uid=1000", "api:uid=1000", "deadline"} {
		found := false
		for _, by := range bys {
			found = found || by == want
		}
		if !found {
			t.Errorf("no decision by %q in %q", want, bys)
		}
	}

	// Shutdown decides the held packet: it counts as "other".
	e.Close(flow.ActionDeny)
	if k := status(0); decidedSum(k) != k.GetPackets() || k.GetOtherDecisions() != 1 || k.GetHeldPackets() != 0 {
		t.Errorf("after shutdown: %v", k)
	}
}

// TestDecideReasonFromProto: each reason a client may give maps to how the
// decision is recorded; an unknown one is refused.
func TestDecideReasonFromProto(t *testing.T) {
	for _, tc := range []struct {
		reason agentv1.DecideReason
		by     string
		ok     bool
	}{
		{agentv1.DecideReason_DECIDE_REASON_UNSPECIFIED, "api:uid=1000", true},
		{agentv1.DecideReason_DECIDE_REASON_DEADLINE, "deadline:uid=1000", true},
		{agentv1.DecideReason_DECIDE_REASON_SILENT, "default:uid=1000", true},
		{agentv1.DecideReason(99), "", false},
	} {
		req, err := decideFromProto(&agentv1.DecideRequest{Id: "c1", Action: agentv1.Action_ACTION_REJECT, Reason: tc.reason})
		if (err == nil) != tc.ok {
			t.Errorf("reason %v: err %v, want ok=%v", tc.reason, err, tc.ok)
			continue
		}
		if tc.ok && req.Reason.decidedBy(1000) != tc.by {
			t.Errorf("reason %v recorded as %q, want %q", tc.reason, req.Reason.decidedBy(1000), tc.by)
		}
	}
}
