package deploytest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// testUserName is the unprivileged account the tests run the rules service,
// prompts and clients as, standing in for the person who ran `sudo make run`.
const testUserName = "bastion-test"

// repoRoot is the repository's top directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// buildBinaries builds the CGO_ENABLED=0 programs into a directory every UID
// can read and returns it.
func buildBinaries(t testing.TB) string {
	t.Helper()
	testenv.RequireTools(t, "go")
	dir := testenv.TempDir(t)
	for _, name := range []string{"bastion-agent", "bastion-uiserver", "bastionctl"} {
		if _, err := testenv.GoBuild(dir, name, "github.com/bastion-fw/bastion/cmd/"+name); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// testUser returns the test account's UID and GID, creating the account
// (a system user with no home and no login shell) when it is missing.
func testUser(t testing.TB) (uid, gid uint32) {
	t.Helper()
	u, err := user.Lookup(testUserName)
	if err != nil {
		out, aerr := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
			"--shell", "/usr/sbin/nologin", testUserName).CombinedOutput()
		if aerr != nil {
			t.Fatalf("useradd %s: %v: %s", testUserName, aerr, out)
		}
		if u, err = user.Lookup(testUserName); err != nil {
			t.Fatal(err)
		}
	}
	id, _ := strconv.ParseUint(u.Uid, 10, 32)
	g, _ := strconv.ParseUint(u.Gid, 10, 32)
	return uint32(id), uint32(g)
}

// ownedDir makes a 0700 directory owned by uid:gid inside parent.
func ownedDir(t testing.TB, parent, name string, uid, gid uint32) string {
	t.Helper()
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// waitOutput waits until out contains want, and fails t after timeout.
func waitOutput(t testing.TB, out *testenv.SyncBuffer, want string, timeout time.Duration) {
	t.Helper()
	if !testenv.Poll(timeout, func() bool { return strings.Contains(out.String(), want) }) {
		t.Fatalf("no %q within %v; output so far:\n%s", want, timeout, out.String())
	}
}

// agentStopTimeout is how long an agent may take to remove its rules and
// exit after SIGTERM.
const agentStopTimeout = 45 * time.Second

// pendingWhere waits until a pending connection satisfies match and
// returns it.
func pendingWhere(t testing.TB, c agentv1.AgentServiceClient, timeout time.Duration, match func(*agentv1.PendingConnection) bool) (*agentv1.PendingConnection, error) {
	t.Helper()
	var found *agentv1.PendingConnection
	ok := testenv.Poll(timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := c.ListPending(ctx, &agentv1.ListPendingRequest{})
		if err != nil {
			return false
		}
		for _, p := range r.GetConnections() {
			if match(p) {
				found = p
				return true
			}
		}
		return false
	})
	if !ok {
		return nil, errors.New("no such pending connection")
	}
	return found, nil
}

// lookPath returns where a tool is, after testenv.RequireTools.
func lookPath(t testing.TB, name string) string {
	t.Helper()
	testenv.RequireTools(t, name)
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
