package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent runs as root: it must stay small, build without cgo, and never
// pull in the desktop client, the rules store or the per-user service.
func TestAgentDependencies(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", ".")
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps with CGO_ENABLED=0: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/gotk3/",
		"github.com/bastion-fw/bastion/uiserver",
		"github.com/bastion-fw/bastion/gtkclient",
		"modernc.org/sqlite",
		"github.com/mattn/go-sqlite3",
		"go.etcd.io/bbolt",
		"runtime/cgo",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list returned only %d packages: %q", len(deps), out)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("bastion-agent depends on %s", d)
			}
		}
	}
}
