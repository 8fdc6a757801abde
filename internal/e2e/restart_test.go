package e2e

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/procid"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// TestCrashRestartKeepsNetfilterLink kills the agent with SIGKILL and
// starts it again at once, 20 times in one namespace. Each new agent must
// attach its netfilter link (the killed one's link is torn down by the
// kernel as the process dies, possibly a moment later; see
// procid.attachNetfilter) instead of falling back to sockops, and must
// name the process of a held connection through that link.
func TestCrashRestartKeepsNetfilterLink(t *testing.T) {
	requireAutoRun(t, "it tests auto's choice of the netfilter link after a crash")
	bins(t)
	testenv.RequireKernelFeature(t, procid.MechNetfilterLink.KernelFeatures()...)
	const cycles = 20
	ns := testenv.NewNetNS(t)
	s := startServers(t, ns)
	socket := filepath.Join(testenv.TempDir(t), "agent.sock")
	began := time.Now()
	lost := 0
	for i := range cycles {
		a := startAgentOn(t, ns, socket)
		if got := a.Status(t).GetMechanism(); got != "netfilter-link" {
			lost++
			t.Errorf("cycle %d: GetStatus mechanism %q after a crash restart, want netfilter-link", i, got)
			a.LogTo(t)
		} else {
			ctx := testCtx(t, time.Minute)
			args := []string{"-net", "tcp4", "-addr", hostPort(false, s.tcp4), "-reply", "-timeout", "20s"}
			p := start(t, dialer(ctx, ns, 1000, args...))
			conn := a.WaitPending(t, 10*time.Second, flowTo(tcp, 4, s.tcp4))
			checkProc(t, conn, wantProc{pid: p.Pid(), uid: 1000, exe: realExe(t, builtBins.dialer),
				args: append([]string{builtBins.dialer}, args...), by: "netfilter-link"})
			a.Decide(t, conn.GetId(), allow, scopeConn)
			if r := p.DialResult(t, 20*time.Second); !r.OK {
				t.Errorf("cycle %d: allowed dialer failed: %+v", i, r)
			}
		}
		a.Kill(t)
	}
	t.Logf("%d SIGKILL-and-restart cycles in %v; %d came back without the netfilter link", cycles, time.Since(began).Round(time.Millisecond), lost)
}
