package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/fw"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// ruleset is the namespace's iptables and ip6tables rules in both the nft
// and the legacy backend, counters stripped.
func ruleset(t *testing.T, ns *testenv.NS) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b strings.Builder
	for _, backend := range []fw.Backend{fw.BackendNFT, fw.BackendLegacy} {
		snap, err := fw.Snapshot(ctx, fw.Config{NetNS: ns.Name, Backend: backend})
		if err != nil {
			t.Fatalf("snapshot %s rules: %v", backend, err)
		}
		b.WriteString(snap)
	}
	return b.String()
}

// addUserRules adds rules that have nothing to do with Bastion, in both
// families and both backends, as an administrator's own firewall would.
func addUserRules(t *testing.T, ns *testenv.NS) {
	t.Helper()
	for _, cmd := range [][]string{
		{"iptables-nft", "-w", "-A", "OUTPUT", "-p", "tcp", "--dport", "9", "-j", "DROP"},
		{"ip6tables-nft", "-w", "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "REJECT"},
		{"iptables-legacy", "-w", "-A", "OUTPUT", "-p", "tcp", "--dport", "7", "-j", "DROP"},
		{"ip6tables-legacy", "-w", "-N", "ADMIN-OUT"},
	} {
		out, err := exec.Command("nsenter", append([]string{"--net=" + ns.Path, "--"}, cmd...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", cmd, err, out)
		}
	}
}

// TestCleanStopRestoresRuleset checks that after SIGTERM the namespace's
// ruleset, in both backends and both families, is exactly what it was
// before the agent started, an unrelated rule of the administrator's
// included.
func TestCleanStopRestoresRuleset(t *testing.T) {
	bins(t)
	ns := testenv.NewNetNS(t)
	addUserRules(t, ns)
	before := ruleset(t, ns)
	if !strings.Contains(before, "--dport 9 -j DROP") || !strings.Contains(before, ":ADMIN-OUT") {
		t.Fatalf("user rules missing from the snapshot:\n%s", before)
	}
	a := startAgent(t, ns)
	if during := ruleset(t, ns); during == before || !strings.Contains(during, "-A OUTPUT -j "+fw.DefaultChain) {
		t.Fatalf("agent running, but its chain is not in the ruleset:\n%s", during)
	}
	a.Stop(t)
	if after := ruleset(t, ns); after != before {
		t.Errorf("ruleset after a clean stop differs from before the start\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := os.Lstat(a.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket %s left after a clean stop: %v", a.Socket, err)
	}
}

// TestCrashFailOpenAndFailClosed kills the agent with SIGKILL and checks
// what its rules do without it: with --fail-open=true new connections pass
// (queue bypass), with --fail-open=false they time out. A new agent then
// starts on the same namespace and socket (cleaning up the crashed one's
// chain and stale socket), works, and a clean stop leaves the namespace as
// it was.
func TestCrashFailOpenAndFailClosed(t *testing.T) {
	bins(t)
	for _, tc := range []struct {
		name     string
		failOpen string
	}{
		{"fail-open", "--fail-open=true"},
		{"fail-closed", "--fail-open=false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testenv.NewNetNS(t)
			s := startServers(t, ns)
			addUserRules(t, ns)
			before := ruleset(t, ns)
			socket := filepath.Join(testenv.TempDir(t), "agent.sock")
			ctx := testCtx(t, 2*time.Minute)

			a := startAgentOn(t, ns, socket, tc.failOpen)
			a.Kill(t)
			if _, err := os.Lstat(socket); err != nil {
				t.Fatalf("precondition: the killed agent's socket should be left behind: %v", err)
			}
			if !strings.Contains(ruleset(t, ns), "-A OUTPUT -j "+fw.DefaultChain) {
				t.Fatal("precondition: the killed agent's rules should be left behind")
			}
			r, err := ns.RunDialer(ctx, builtBins.dialer, 1000, 1000, "-net", "tcp4", "-addr", hostPort(false, s.tcp4), "-reply", "-timeout", "2s")
			if err != nil {
				t.Fatal(err)
			}
			if tc.failOpen == "--fail-open=true" && !r.OK {
				t.Errorf("fail-open, agent killed: dialer %+v, want it to pass", r)
			}
			if tc.failOpen == "--fail-open=false" && (r.OK || r.Kind != "timeout") {
				t.Errorf("fail-closed, agent killed: dialer %+v, want a time-out", r)
			}

			// A new agent starts over the leftovers and works.
			a2 := startAgentOn(t, ns, socket, tc.failOpen)
			if got := strings.Count(ruleset(t, ns), "-A OUTPUT -j "+fw.DefaultChain); got != 2 {
				// One jump per family in the agent's backend.
				t.Errorf("after restart, %d jumps to %s, want one per family", got, fw.DefaultChain)
			}
			p := start(t, dialer(ctx, ns, 1000, "-net", "tcp4", "-addr", hostPort(false, s.tcp4), "-reply", "-timeout", "20s"))
			c := a2.WaitPending(t, 10*time.Second, flowTo(tcp, 4, s.tcp4))
			a2.Decide(t, c.GetId(), allow, scopeConn)
			if r := p.DialResult(t, 30*time.Second); !r.OK {
				t.Errorf("restarted agent, allowed: dialer %+v", r)
			}

			a2.Stop(t)
			if after := ruleset(t, ns); after != before {
				t.Errorf("ruleset after crash, restart and clean stop differs from before\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket %s left after a clean stop: %v", socket, err)
			}
		})
	}
}
