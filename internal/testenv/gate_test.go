package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// gateChildEnv makes TestGateChild* run their gate: they are run, as
// another user, by TestGates.
const gateChildEnv = "BASTION_TESTENV_GATE_CHILD"

func TestGateChildRoot(t *testing.T) {
	if os.Getenv(gateChildEnv) != "1" {
		t.Skip("run by TestGates as another user")
	}
	RequireRoot(t)
}

func TestGateChildE2E(t *testing.T) {
	if os.Getenv(gateChildEnv) != "1" {
		t.Skip("run by TestGates as another user")
	}
	RequireE2E(t)
}

func TestGateChildTool(t *testing.T) {
	if os.Getenv(gateChildEnv) != "1" {
		t.Skip("run by TestGates as another user")
	}
	RequireTools(t, "bastion-no-such-tool")
}

// TestGates runs the gates as UID 1000 and as root, with and without
// BASTION_E2E=1 and -short, and checks each decision.
func TestGates(t *testing.T) {
	RequireRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A copy every UID may run: the test binary's own directory is 0700.
	bin := filepath.Join(TempDir(t), "testenv.test")
	CopyExecutable(t, self, bin)
	for _, tc := range []struct {
		name  string
		uid   uint32
		test  string
		e2e   bool
		short bool
		want  string // "ok", "SKIP" or "FAIL"
	}{
		{"not root: skip", 1000, "TestGateChildRoot", false, false, "SKIP"},
		{"not root, BASTION_E2E=1: fail", 1000, "TestGateChildRoot", true, false, "FAIL"},
		{"root: run", 0, "TestGateChildRoot", false, false, "ok"},
		{"root, -short: skip", 0, "TestGateChildRoot", false, true, "SKIP"},
		{"root, -short, BASTION_E2E=1: skip", 0, "TestGateChildRoot", true, true, "SKIP"},
		{"end-to-end, not root: run", 1000, "TestGateChildE2E", false, false, "ok"},
		{"end-to-end, -short: skip", 1000, "TestGateChildE2E", true, true, "SKIP"},
		{"missing tool, not root: skip", 1000, "TestGateChildTool", false, false, "SKIP"},
		{"missing tool, not root, BASTION_E2E=1: fail", 1000, "TestGateChildTool", true, false, "FAIL"},
		{"missing tool, root: fail", 0, "TestGateChildTool", false, false, "FAIL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-test.run=^" + tc.test + "$", "-test.v", "-test.count=1"}
			if tc.short {
				args = append(args, "-test.short")
			}
			cmd := exec.Command(bin, args...)
			cmd.Dir = filepath.Dir(bin)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), gateChildEnv + "=1"}
			if tc.e2e {
				cmd.Env = append(cmd.Env, E2EEnv+"=1")
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{
				Credential: &syscall.Credential{Uid: tc.uid, Gid: tc.uid, Groups: []uint32{}},
				Pdeathsig:  syscall.SIGKILL,
			}
			out, _ := cmd.CombinedOutput()
			got := "ok"
			switch {
			case strings.Contains(string(out), "--- FAIL: "+tc.test):
				got = "FAIL"
			case strings.Contains(string(out), "--- SKIP: "+tc.test):
				got = "SKIP"
			case !strings.Contains(string(out), "--- PASS: "+tc.test):
				got = "no result"
			}
			if got != tc.want {
				t.Errorf("%s as uid %d: %s, want %s\n%s", tc.test, tc.uid, got, tc.want, out)
			}
		})
	}
}
