package fw

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// newNetNS creates a network namespace bastion-t-<random> with loopback up,
// deleted when the test ends, and returns its name.
func newNetNS(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	var r [6]byte
	_, _ = rand.Read(r[:])
	name := "bastion-t-" + hex.EncodeToString(r[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("set lo up: %v: %s", err, out)
	}
	return name
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
