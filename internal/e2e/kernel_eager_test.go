package e2e

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// TestKernelDecidesExactRulesFromTheFirstConnection: a rule that names one
// program, protocol, address and port is in the kernel as soon as it is
// set, so even the first connection it covers never reaches the queue; and
// an answer that covers one destination and port is, from the next
// connection.
func TestKernelDecidesExactRulesFromTheFirstConnection(t *testing.T) {
	ns := testenv.NewNetNS(t)
	l := ns.Listen(t, "tcp4", "127.0.0.1:0")
	cached := ns.Listen(t, "tcp4", "127.0.0.1:0")
	port := uint32(portOf(l.Addr()))
	a := startPolicyAgent(t, ns, `[policy]
prompt_timeout = "30s"
timeout_action = "deny"
default_action = "ask"
`)
	ctx := testCtx(t, 3*time.Minute)
	if _, err := a.Client.SetRules(ctx, &agentv1.SetRulesRequest{Uid: proto.Uint32(attackerUID), Rules: []*rulesv1.Rule{{
		Id: "exact", Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: bins(t).dialer, Protocol: rulesv1.Protocol_PROTOCOL_TCP,
		Dst: "127.0.0.1", DstPortMin: port, DstPortMax: port, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER,
	}}}); err != nil {
		t.Fatalf("set rules: %v", err)
	}
	r, pid := dialInCgroup(t, ctx, ns, a, attackerUID, "-net", "tcp4", "-addr", l.Addr().String())
	if !r.OK {
		t.Fatalf("first connection: %+v", r)
	}
	if d := waitDecision(t, ctx, a, pid); d.GetProcess().GetIdentifiedBy() != kdecide.Source || d.GetDecidedBy() != "rule:exact" {
		t.Fatalf("first connection decided by %s, identified by %s; want rule:exact in the kernel", d.GetDecidedBy(), d.GetProcess().GetIdentifiedBy())
	}

	// A prompt answered for this destination and port: the next
	// connection is decided in the kernel.
	w := a.Watch(t)
	p := start(t, ns.CommandInCgroup(ctx, a.Cgroup, attackerUID, attackerUID, bins(t).dialer, "-net", "tcp4", "-addr", cached.Addr().String(), "-timeout", "20s"))
	pc := w.WaitAdded(t, 0, 20*time.Second, func(pc *agentv1.PendingConnection) bool { return int(pc.GetProcess().GetTgid()) == p.Pid() })
	a.Decide(t, pc.GetId(), agentv1.Action_ACTION_ALLOW, agentv1.Scope_SCOPE_DESTINATION_PORT)
	if r := p.DialResult(t, 20*time.Second); !r.OK {
		t.Fatalf("answered connection: %+v", r)
	}
	r, pid = dialInCgroup(t, ctx, ns, a, attackerUID, "-net", "tcp4", "-addr", cached.Addr().String())
	if !r.OK {
		t.Fatalf("connection after the answer: %+v", r)
	}
	if d := waitDecision(t, ctx, a, pid); d.GetProcess().GetIdentifiedBy() != kdecide.Source || d.GetDecidedBy()[:6] != "cache:" {
		t.Fatalf("connection after the answer decided by %s, identified by %s; want the cache entry, in the kernel", d.GetDecidedBy(), d.GetProcess().GetIdentifiedBy())
	}
}
