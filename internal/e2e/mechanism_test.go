package e2e

import (
	"os"
	"sync"
	"testing"

	"github.com/bastion-fw/bastion/internal/procid"
	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// mechanismEnv selects the identification mechanism of every agent the
// suite starts without a --mechanism of its own: netfilter-link, sockops or
// procfs. Empty (or auto) leaves the agent's default, auto, which picks the
// best one the kernel offers. `make test` runs the suite once per value, so
// the fallbacks that Debian 12 (sockops) and older kernels (procfs) use are
// tested on this kernel too.
const mechanismEnv = "BASTION_E2E_MECHANISM"

// kernelFeatures is procid.Detect, run once per test binary and only when a
// test needs to know which mechanisms the kernel offers.
var kernelFeatures = sync.OnceValue(procid.Detect)

// mechanismForced is the mechanism BASTION_E2E_MECHANISM forces, or "" for
// the auto run.
func mechanismForced() string {
	if m := os.Getenv(mechanismEnv); m != string(procid.MechAuto) {
		return m
	}
	return ""
}

// mechanism is the mechanism this run's agents use: the forced one, or
// the one auto picks on this kernel.
func mechanism() string {
	if m := mechanismForced(); m != "" {
		return m
	}
	return string(kernelFeatures().Best())
}

// mechanismArgs returns the agent arguments that force this run's
// mechanism (none in the auto run). It skips t when the kernel cannot run
// that mechanism: that run has nothing to test here, and says so. A test
// that passes its own --mechanism after these overrides them.
func mechanismArgs(t testing.TB) []string {
	t.Helper()
	m := mechanismForced()
	if m == "" {
		return nil
	}
	if _, err := procid.ParseMechanism(m); err != nil {
		t.Fatalf("%s: %v", mechanismEnv, err)
	}
	// A kernel without the mechanism skips with the feature it lacks.
	testenv.RequireKernelFeature(t, procid.Mechanism(m).KernelFeatures()...)
	return []string{"--mechanism", m}
}

// seeing is something a test needs the run's mechanism to attribute.
type seeing string

const (
	// seesExited: a process that has exited by the time its packet is
	// looked up (exec records in a BPF map name it, where the kernel
	// offers tp_btf; /proc no longer can).
	seesExited seeing = "a process that exited before the lookup"
	// seesAtFloodRate: each queued packet's process quickly enough that
	// one user's flood does not delay another's prompt (procfs scans
	// /proc for every queued packet, shed ones included).
	seesAtFloodRate seeing = "each packet of a flood at the queue's rate"
)

// mechanismSees says, for each mechanism, what it attributes. What a
// mechanism lacks here is documented in internal/procid's doc and in
// docs/troubleshooting.md.
var mechanismSees = map[string]map[seeing]bool{
	"netfilter-link": {seesExited: true, seesAtFloodRate: true},
	"sockops":        {seesExited: true, seesAtFloodRate: true},
	"procfs":         {},
}

// mechanismCanSee reports whether this run's mechanism attributes what.
// The eBPF mechanisms name exited processes only with exec tracking
// (tp_btf), which they load if the kernel offers it.
func mechanismCanSee(what seeing) bool {
	if what == seesExited && !kernelFeatures().TpBtf {
		return false
	}
	return mechanismSees[mechanism()][what]
}

// checkProcOrUnknown is checkProc for a mechanism that may not see the
// process: the pending connection names want's process exactly, or no
// process at all (TGID 0, no executable) with want's UID, which the kernel
// reports for the socket whatever the mechanism. It never names another.
func checkProcOrUnknown(t *testing.T, p *agentv1.PendingConnection, want wantProc) (named bool) {
	t.Helper()
	pr := p.GetProcess()
	if pr.GetTgid() == 0 && pr.GetExe() == "" && len(pr.GetArgs()) == 0 {
		if pr.GetUid() != want.uid {
			t.Errorf("pending connection of no known process %s: uid %d, want %d", describe(p), pr.GetUid(), want.uid)
		}
		return false
	}
	checkProc(t, p, want)
	return true
}

// requireAutoRun skips t in the runs that force a mechanism, for a test
// that selects its mechanisms itself or whose subject does not depend on
// the mechanism: the auto run covers it, and running it again per
// mechanism would only cost time.
func requireAutoRun(t testing.TB, why string) {
	t.Helper()
	if m := mechanismForced(); m != "" {
		t.Skipf("runs in the auto run only (%s=%s): %s", mechanismEnv, m, why)
	}
}

// TestMechanismOffered starts an agent as the suite does and checks that
// it uses the run's mechanism: the forced one, or in the auto run the best
// the kernel offers. In a run whose mechanism the kernel lacks it skips
// with the reason, and `make e2e-mechanisms` skips that run.
func TestMechanismOffered(t *testing.T) {
	bins(t)
	ns := testenv.NewNetNS(t)
	a := startAgent(t, ns)
	if got, want := a.Status(t).GetMechanism(), mechanism(); got != want {
		t.Fatalf("GetStatus mechanism %q, want %q (%s=%q; kernel: %s)", got, want, mechanismEnv, os.Getenv(mechanismEnv), kernelFeatures())
	}
}
