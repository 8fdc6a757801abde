package testenv

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bastion-fw/bastion/internal/kernelfeature"
)

// RequireKernelFeature runs RequireRoot, then probes each feature in the
// running kernel (the probes procid.Detect reports in the agent's status).
// A feature the kernel lacks skips t, saying which, what was probed and the
// error, with BASTION_E2E=1 too: that is the truth about this kernel.
// Any other probe error fails t: a feature the kernel has must work, so a
// skip can never hide a regression.
func RequireKernelFeature(t testing.TB, features ...kernelfeature.Feature) {
	t.Helper()
	RequireRoot(t) // the probes load eBPF programs
	for _, f := range features {
		err := kernelfeature.Probe(f)
		switch {
		case err == nil:
		case errors.Is(err, ebpf.ErrNotSupported):
			t.Skipf("the running kernel lacks %s (probed by %s): %v", f, f.Probed(), err)
		default:
			t.Fatalf("kernel feature %s: probe failed (%s): %v", f, f.Probed(), err)
		}
	}
}
