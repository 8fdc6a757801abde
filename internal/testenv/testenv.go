package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// E2EEnv is the environment variable that makes end-to-end tests mandatory:
// with BASTION_E2E=1 a test that would skip for lack of root or of a tool
// fails instead (see the package documentation, "Gates").
const E2EEnv = "BASTION_E2E"

// MustRun reports whether a test must run rather than skip when the machine
// lacks a tool it needs: as root, or with BASTION_E2E=1.
func MustRun() bool { return os.Geteuid() == 0 || os.Getenv(E2EEnv) == "1" }

// skipOrFail skips t with msg, or fails it when BASTION_E2E=1.
func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv(E2EEnv) == "1" {
		t.Fatalf("%s (%s=1: the test must run)", msg, E2EEnv)
	}
	t.Skipf("%s (%s=1 makes this a failure)", msg, E2EEnv)
}

// RequireE2E marks t as an end-to-end test, one that builds or runs
// Bastion's real programs: -short (make unit-test) skips it.
func RequireE2E(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped under -short; run it without -short (sudo make test)")
	}
}

// RequireRoot skips t under -short (RequireE2E) and unless it runs as root.
// With BASTION_E2E=1 the test must run, so not being root is a failure
// rather than a skip.
func RequireRoot(t testing.TB) {
	t.Helper()
	RequireE2E(t)
	if os.Geteuid() == 0 {
		return
	}
	skipOrFail(t, fmt.Sprintf("root end-to-end test: not running as root (euid %d); run it as root (sudo make test)", os.Geteuid()))
}

// toolPackages names the Debian package that provides each tool the
// end-to-end tests run.
var toolPackages = map[string]string{
	"curl":     "curl",
	"wget":     "wget",
	"nc":       "netcat-openbsd",
	"ping":     "iputils-ping",
	"ip":       "iproute2",
	"nsenter":  "util-linux",
	"iptables": "iptables",
	"go":       "golang (or put the Go toolchain in PATH)",
	"python3":  "python3",
	"lintian":  "lintian",
	"unshare":  "util-linux",
	"setpriv":  "util-linux",
	"setsid":   "util-linux",
	"dpkg-deb": "dpkg",

	"iptables-legacy": "iptables",
	"systemd-analyze": "systemd",

	"dbus-daemon":           "dbus-daemon",
	"desktop-file-validate": "desktop-file-utils",
}

// RequireTools stops t, saying which package to install, when one of the
// named programs is not in PATH: it fails as root or with BASTION_E2E=1 (a
// machine that runs the tests must have them; deploy/install-deps.sh test
// installs them), and skips otherwise.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := toolPackages[tool]
			if pkg == "" {
				pkg = tool
			}
			missing = append(missing, fmt.Sprintf("%s (apt-get install %s)", tool, pkg))
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "test needs missing tools: " + strings.Join(missing, ", ")
	if MustRun() {
		t.Fatalf("%s; as root or with %s=1 the test must run (deploy/install-deps.sh test)", msg, E2EEnv)
	}
	t.Skip(msg)
}

// WaitFor polls cond until it returns true and fails t, saying what it
// waited for, when timeout passes first. The poll interval starts at 1ms
// and backs off to 50ms.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Poll is WaitFor for code without a testing.TB: it reports whether cond
// became true within timeout.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	interval := time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
		interval = min(interval*2, 50*time.Millisecond)
	}
}

// TempDir returns a new directory, removed at cleanup, that every UID may
// read and traverse (mode 0755, parents included): unlike t.TempDir, whose
// directories are 0700, programs run as UID 1000 can execute binaries
// placed in it.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := MakeTempDir("bastion-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// CopyExecutable copies the file src to the new file dst (mode 0755), for
// a program every UID may run or one the agent sees under another path. It
// fails t on any error.
func CopyExecutable(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatalf("copy executable: %v", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatalf("copy executable: %v", err)
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("copy executable %s to %s: %v", src, dst, err)
	}
}

// MakeTempDir is TempDir for code without a testing.TB; the caller removes
// the directory.
func MakeTempDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", fmt.Errorf("make temp dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("make temp dir: %w", err)
	}
	return dir, nil
}

// randomSuffix returns n random bytes in hex, for unique names.
func randomSuffix(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// SyncBuffer is an io.Writer that several goroutines (a process's stdout
// and stderr copiers) write while a test reads what has arrived so far.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
