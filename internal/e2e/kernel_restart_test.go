package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
)

// startKernelAgent starts an agent with config as its configuration file,
// on a given socket, queue number and cgroup, so that a test can start
// another in its place after a crash, as the service manager would.
func startKernelAgent(t *testing.T, ns *testenv.NS, config, socket string, queue int, cg *testenv.Cgroup) *Agent {
	t.Helper()
	return &Agent{testenv.StartAgent(t, testenv.Options{
		Bin: bins(t).agent, NetNS: ns.Name, Socket: socket, Config: policyFile(t, config), InterceptLoopback: true,
		QueueNum: queue, LogLevel: "debug", Cgroup: cg, Args: mechanismArgs(t),
	})}
}

// TestKernelDecisionsSurviveRestart: with a remembered allow and a
// remembered deny (made by rules), two loop dialers connect without pause
// while the agent is killed with SIGKILL, stays down, and a new agent
// starts on the same namespace and cgroup; the rules are then pushed to
// it again. With fail_open on and off, every connection of the allowed
// flow gets through in every phase, and none of the denied flow does —
// while the agent is down, each fails with EPERM at connect(). A process
// started while the agent is down is decided the same way.
func TestKernelDecisionsSurviveRestart(t *testing.T) {
	loopBin := loopDialerBin(t)
	for _, failOpen := range []bool{true, false} {
		t.Run(fmt.Sprintf("fail_open=%v", failOpen), func(t *testing.T) {
			ns := testenv.NewNetNS(t)
			allowedL, deniedL := ns.Listen(t, "tcp4", "127.0.0.1:0"), ns.Listen(t, "tcp4", "127.0.0.1:0")
			allowed, denied := allowedL.Addr().String(), deniedL.Addr().String()
			// No decision about this one is remembered: while the agent
			// is down it passes or not by fail_open alone.
			other := ns.Listen(t, "tcp4", "127.0.0.1:0").Addr().String()
			config := fmt.Sprintf("fail_open = %v\n\n%s", failOpen, kernelPolicy)
			socket := filepath.Join(testenv.TempDir(t), "agent.sock")
			q, cg := queueNum(), testenv.NewCgroup(t)
			ctx := testCtx(t, 5*time.Minute)

			a := startKernelAgent(t, ns, config, socket, q, cg)
			log := recordDecisions(t, a)
			push := func(a *Agent) {
				setRules(t, a, attackerUID,
					portRule("allow-loop", rAllow, loopBin, portOf(allowedL.Addr())),
					portRule("deny-loop", rDeny, loopBin, portOf(deniedL.Addr())))
			}
			push(a)
			la := startLoop(t, ctx, ns, cg, attackerUID, allowed, "-interval", "2ms")
			ld := startLoop(t, ctx, ns, cg, attackerUID, denied, "-interval", "2ms")
			for _, l := range []struct {
				p    *loop
				want string
			}{{la, "ACTION_ALLOW"}, {ld, "ACTION_DENY"}} {
				testenv.WaitFor(t, 20*time.Second, "a "+l.want+" decided in the kernel", func() bool {
					for _, d := range log.of(l.p.Pid()) {
						if byKernel(d) && d.GetAction().String() == l.want {
							return true
						}
					}
					return false
				})
			}
			more := func(what string, from time.Time, n int) {
				t.Helper()
				for _, l := range []*loop{la, ld} {
					l.WaitFor(t, time.Minute, what, func(as []attempt) bool { return len(since(as, from, time.Time{})) >= n })
				}
			}

			tKill := time.Now()
			a.Kill(t)
			tDown := time.Now()
			more("200 connections while the agent is down", tDown, 200)
			// A new process, while the agent is down.
			for _, c := range []struct {
				addr, want string
			}{{allowed, "ok"}, {denied, "permission"}} {
				p := startLoop(t, ctx, ns, cg, attackerUID, c.addr, "-n", "50")
				as := p.Stop(t)
				if got := tally(as); got[c.want] != len(as) {
					t.Errorf("a new process to %s while the agent is down: %v, want %d %s", c.addr, got, len(as), c.want)
				} else {
					t.Logf("a new process to %s while the agent is down: %v", c.addr, got)
				}
			}

			// The control: what fail_open does for a connection the
			// kernel has no decision for.
			wantOther := map[bool]string{true: "ok", false: "timeout"}[failOpen]
			if got := tally(startLoop(t, ctx, ns, cg, attackerUID, other, "-n", "3").Stop(t)); got[wantOther] != 3 {
				t.Errorf("a destination with no remembered decision, while the agent is down: %v, want 3 %s", got, wantOther)
			}

			tStart := time.Now()
			a2 := startKernelAgent(t, ns, config, socket, q, cg)
			tUp := time.Now()
			more("200 connections to the new agent before the rules are pushed", tUp, 200)
			tPush := time.Now()
			log2 := recordDecisions(t, a2)
			push(a2)
			tPushed := time.Now()
			more("200 connections after the rules were pushed again", tPushed, 200)
			testenv.WaitFor(t, 20*time.Second, "the new agent's kernel decisions", func() bool {
				n := 0
				for _, l := range []*loop{la, ld} {
					for _, d := range log2.of(l.Pid()) {
						if byKernel(d) && d.GetTime().AsTime().After(tPushed) {
							n++
							break
						}
					}
				}
				return n == 2
			})
			all := map[string][]attempt{"allowed": la.Stop(t), "denied": ld.Stop(t)}

			phases := []struct {
				name     string
				from, to time.Time
			}{
				{"agent up", time.Time{}, tKill},
				{"being killed", tKill, tDown},
				{"agent down", tDown, tStart},
				{"new agent starting", tStart, tUp},
				{"new agent, rules not pushed", tUp, tPush},
				{"rules being pushed", tPush, tPushed},
				{"rules pushed again", tPushed, time.Time{}},
			}
			t.Logf("killed at +0; down %v later; new agent started %v later, up after %v; rules pushed %v after it was up",
				tDown.Sub(tKill).Round(time.Millisecond), tStart.Sub(tKill).Round(time.Millisecond),
				tUp.Sub(tStart).Round(time.Millisecond), tPushed.Sub(tUp).Round(time.Millisecond))
			for _, ph := range phases {
				ok := since(all["allowed"], ph.from, ph.to)
				no := since(all["denied"], ph.from, ph.to)
				ta, td := tally(ok), tally(no)
				t.Logf("%-28s allowed flow: %4d connections %v; denied flow: %4d connections %v", ph.name+":", len(ok), ta, len(no), td)
				if ta["ok"] != len(ok) {
					t.Errorf("%s: %d of %d connections of the allowed flow got through: %v", ph.name, ta["ok"], len(ok), ta)
				}
				if td["ok"] != 0 {
					t.Errorf("%s: %d of %d connections of the denied flow got through", ph.name, td["ok"], len(no))
				}
				if ph.name == "agent down" && td["permission"] != len(no) {
					t.Errorf("agent down: the denied flow's connections failed %v; want each with EPERM at connect()", td)
				}
			}
		})
	}
}
