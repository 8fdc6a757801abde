package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// TestKernelDecisionsInStatus: after a rule's decision is remembered in
// the kernel and applied there, GetStatus and `bastionctl status` say so —
// the mechanism, the user's remembered decision and the last minute's
// split — to that user; another user sees none of it, and root sees the
// kernel's counters.
func TestKernelDecisionsInStatus(t *testing.T) {
	ns := testenv.NewNetNS(t)
	l := ns.Listen(t, "tcp4", "127.0.0.1:0")
	port := uint32(portOf(l.Addr()))
	a := startPolicyAgent(t, ns, kernelPolicy)
	ctx := testCtx(t, 3*time.Minute)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := a.Client.SetRules(rctx, &agentv1.SetRulesRequest{Uid: proto.Uint32(attackerUID), Rules: []*rulesv1.Rule{
		{Id: "allow-dialer", Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: bins(t).dialer, DstPortMin: port, DstPortMax: port,
			Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER},
	}}); err != nil {
		t.Fatalf("set rules: %v", err)
	}
	// The first connection is decided in userspace and remembered; the
	// next two in the kernel.
	for i := range 3 {
		r, pid := dialInCgroup(t, ctx, ns, a, attackerUID, "-net", "tcp4", "-addr", l.Addr().String())
		if !r.OK {
			t.Fatalf("connection %d: %+v", i, r)
		}
		d := waitDecision(t, ctx, a, pid)
		if kern := d.GetProcess().GetIdentifiedBy() == kdecide.Source; kern != (i > 0) {
			t.Fatalf("connection %d identified by %q", i, d.GetProcess().GetIdentifiedBy())
		}
	}

	const mech = "cgroup-sock-addr+xt-bpf"
	status := func(uid uint32) (*agentv1.GetStatusResponse, string) {
		t.Helper()
		cmd := ns.Command(ctx, uid, uid, bins(t).ctl, "--agent-socket", a.Socket, "--ui-socket", "/nonexistent", "--json", "status")
		out, _, code := runSplit(t, cmd)
		if code != 0 {
			t.Fatalf("bastionctl --json status as uid %d: exit %d", uid, code)
		}
		var st agentv1.GetStatusResponse
		if err := protojson.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &st); err != nil {
			t.Fatalf("bastionctl --json status as uid %d: %v: %s", uid, err, out)
		}
		text, _, _ := runSplit(t, ns.Command(ctx, uid, uid, bins(t).ctl, "--agent-socket", a.Socket, "--ui-socket", "/nonexistent", "status"))
		return &st, text
	}

	// The agent counts remembered decisions at most once a second (every
	// caller in that second shares the count): wait for a count made
	// after the decision was remembered.
	testenv.WaitFor(t, 10*time.Second, "the remembered decision in root's status", func() bool {
		return a.Status(t).GetKernelDecisions().GetEntries() == 1
	})
	st, text := status(attackerUID)
	want := &agentv1.KernelDecisions{Mechanism: mech, Entries: 1, LastMinuteKernel: 2, LastMinuteUserspace: 1}
	if !proto.Equal(st.GetKernelDecisions(), want) || st.GetCounters().GetKernelDecisions() != 2 || st.GetCounters().GetRuleDecisions() != 3 {
		t.Errorf("uid %d's status: kernel decisions %v, counters %v; want %v, 2 kernel and 3 rule decisions",
			attackerUID, st.GetKernelDecisions(), st.GetCounters(), want)
	}
	for _, s := range []string{
		"kernel decisions: " + mech + "; 1 remembered decisions in force\n",
		"  last minute: 2 in the kernel, 1 in userspace (66% in the kernel)\n",
		"  in the kernel: 2 of those by rules and the cache",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("bastionctl status as uid %d does not say %q:\n%s", attackerUID, s, text)
		}
	}
	if strings.Contains(text, "kernel counters") {
		t.Errorf("bastionctl status as uid %d shows the kernel's counters:\n%s", attackerUID, text)
	}

	// Another user sees none of it.
	st, _ = status(1000)
	if want := (&agentv1.KernelDecisions{Mechanism: mech}); !proto.Equal(st.GetKernelDecisions(), want) || st.GetCounters().GetKernelDecisions() != 0 {
		t.Errorf("uid 1000's status: kernel decisions %v, counters %v; want %v and none", st.GetKernelDecisions(), st.GetCounters(), want)
	}

	// Root sees every UID's, and the kernel's counters.
	kd := a.Status(t).GetKernelDecisions()
	if kd.GetMechanism() != mech || kd.GetEntries() != 1 || kd.GetLastMinuteKernel() != 2 || kd.GetAllowed() != 2 ||
		kd.GetDenied() != 0 || kd.GetLost() != 0 || kd.GetPackets() < 2 {
		t.Errorf("root's status: %v; want 1 entry, 2 in the kernel in the last minute, 2 allowed, 0 lost, at least 2 packets", kd)
	}
	t.Logf("root's view: %v", kd)
}
