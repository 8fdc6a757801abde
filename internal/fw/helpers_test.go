package fw

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// newNetNS creates a network namespace with loopback up
// (testenv.NewNetNS), deleted when the test ends, and returns its name.
func newNetNS(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
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
