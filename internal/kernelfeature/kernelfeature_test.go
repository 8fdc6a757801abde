package kernelfeature_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bastion-fw/bastion/internal/kernelfeature"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// TestProbeUnknown: a name that is not a feature is an error, never
// "not supported" (which would make a test skip).
func TestProbeUnknown(t *testing.T) {
	err := kernelfeature.Probe("no_such_feature")
	if err == nil || errors.Is(err, ebpf.ErrNotSupported) {
		t.Fatalf("Probe(no_such_feature) = %v, want an error that is not ErrNotSupported", err)
	}
}

// TestProbeAll runs every probe: each either works or says the kernel lacks
// the feature. As root any other error is a broken probe. (The probes
// themselves are checked against the real programs by procid's TestDetect.)
func TestProbeAll(t *testing.T) {
	testenv.RequireRoot(t) // the probes load eBPF programs
	for _, f := range kernelfeature.All() {
		err := kernelfeature.Probe(f)
		t.Logf("%s (%s): %v", f, f.Probed(), err)
		if err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
			t.Errorf("probe %s: %v", f, err)
		}
	}
}
