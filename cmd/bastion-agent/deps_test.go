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

// The privilege boundary, the other way: the per-user rules service, the
// desktop client and bastionctl run unprivileged and talk to the agent only
// through its API. They must not link the code that drives the kernel
// (eBPF, NFQUEUE, iptables, conntrack, sock_diag): only the agent may.
func TestUnprivilegedDependencies(t *testing.T) {
	const module = "github.com/bastion-fw/bastion/"
	roots := []string{"uiserver", "gtkclient", "internal/ctl", "cmd/bastion-uiserver", "cmd/bastion-gtk", "cmd/bastionctl"}
	forbidden := []string{
		"github.com/cilium/ebpf",
		module + "agent",
		module + "internal/nfq",
		module + "internal/fw",
		module + "internal/procid",
		module + "internal/kernelfeature",
		module + "internal/conntrack",
		module + "internal/sockdiag",
	}
	args := []string{"list", "-f", "{{.ImportPath}} {{join .Deps \" \"}}"}
	for _, r := range roots {
		args = append(args, module+r)
	}
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(roots) {
		t.Fatalf("go list listed %d packages, want %d:\n%s", len(lines), len(roots), out)
	}
	for _, line := range lines {
		deps := strings.Fields(line)
		if len(deps) < 10 {
			t.Fatalf("go list returned only %d dependencies: %q", len(deps)-1, line)
		}
		for _, d := range deps[1:] {
			for _, f := range forbidden {
				if d == f || strings.HasPrefix(d, f+"/") {
					t.Errorf("%s depends on %s", deps[0], d)
				}
			}
		}
	}
}
