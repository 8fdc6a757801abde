package e2e

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// kernelPolicy rejects UID 1001's connections unless a rule allows them.
const kernelPolicy = masqueradePolicy

// dialInCgroup runs the dialer as uid in the agent's cgroup, where the
// kernel decision programs see it, and returns its result.
func dialInCgroup(t *testing.T, ctx context.Context, ns *testenv.NS, a *Agent, uid uint32, args ...string) (testenv.DialResult, int) {
	t.Helper()
	p := start(t, ns.CommandInCgroup(ctx, a.Cgroup, uid, uid, bins(t).dialer, args...))
	return p.DialResult(t, 20*time.Second), p.Pid()
}

// TestKernelDecisionsFromRules: a rule's decision is made in userspace for
// the first connection and in the kernel for the next ones, with the same
// action and rule in the record; a remembered deny fails connect() at once.
func TestKernelDecisionsFromRules(t *testing.T) {
	ns := testenv.NewNetNS(t)
	allowedL := ns.Listen(t, "tcp4", "127.0.0.1:0")
	deniedL := ns.Listen(t, "tcp4", "127.0.0.1:0")
	allowed, denied := allowedL.Addr().String(), deniedL.Addr().String()
	a := startPolicyAgent(t, ns, kernelPolicy)
	ctx := testCtx(t, 3*time.Minute)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := a.Client.SetRules(rctx, &agentv1.SetRulesRequest{Uid: proto.Uint32(attackerUID), Rules: []*rulesv1.Rule{
		{Id: "allow-dialer", Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: bins(t).dialer, DstPortMin: uint32(portOf(allowedL.Addr())), DstPortMax: uint32(portOf(allowedL.Addr())), Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER},
		{Id: "deny-dialer", Enabled: true, Action: rulesv1.Action_ACTION_DENY, Exe: bins(t).dialer, DstPortMin: uint32(portOf(deniedL.Addr())), DstPortMax: uint32(portOf(deniedL.Addr())), Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER},
	}}); err != nil {
		t.Fatalf("set rules: %v", err)
	}
	for i := range 3 {
		r, pid := dialInCgroup(t, ctx, ns, a, attackerUID, "-net", "tcp4", "-addr", allowed)
		if !r.OK {
			t.Fatalf("connection %d to the allowed port: %+v", i, r)
		}
		d := waitDecision(t, ctx, a, pid)
		want := "netfilter-link"
		if i > 0 {
			want = kdecide.Source
		}
		t.Logf("connection %d: %v by %s, identified by %s", i, d.GetAction(), d.GetDecidedBy(), d.GetProcess().GetIdentifiedBy())
		if d.GetDecidedBy() != "rule:allow-dialer" || d.GetAction() != agentv1.Action_ACTION_ALLOW {
			t.Errorf("connection %d: %v by %s", i, d.GetAction(), d.GetDecidedBy())
		}
		if i > 0 && d.GetProcess().GetIdentifiedBy() != want {
			t.Errorf("connection %d decided by %q, want %q", i, d.GetProcess().GetIdentifiedBy(), want)
		}
	}
	for i := range 3 {
		r, _ := dialInCgroup(t, ctx, ns, a, attackerUID, "-net", "tcp4", "-addr", denied, "-timeout", "3s")
		t.Logf("denied connection %d: %+v", i, r)
		if r.OK {
			t.Fatalf("denied connection %d got through", i)
		}
	}
}
