package fw

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// requireE2E skips unless root; with BASTION_E2E=1 not being root fails.
func requireE2E(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("BASTION_E2E") == "1" {
		t.Fatalf("BASTION_E2E=1 but not root (euid %d)", os.Geteuid())
	}
	t.Skip("run as root or with BASTION_E2E=1")
}

// newNetNS creates a network namespace with loopback up
// (testenv.NewNetNS), deleted when the test ends, and returns its name.
func newNetNS(t *testing.T) string {
	t.Helper()
	requireE2E(t)
	return testenv.NewNetNS(t).Name
}

// nsRun runs a command inside the namespace and fails the test on error.
func nsRun(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + filepath.Join(netns.RunDir, ns), "--"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
	return string(out)
}
