package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// DialerPackage is the import path of the Go dialer program.
const DialerPackage = "github.com/bastion-fw/bastion/internal/testenv/dialer"

// DialResult is the JSON line the dialer prints.
type DialResult struct {
	OK bool `json:"ok"`
	// Kind classifies a failure: "refused", "timeout", "permission"
	// (EPERM/EACCES), "unreachable" or "other"; empty when OK.
	Kind      string `json:"kind"`
	Error     string `json:"error"`
	ElapsedUS int64  `json:"elapsed_us"`
	PID       int    `json:"pid"`
	UID       int    `json:"uid"`
	// Local is the local address and port (echo identifier for ping),
	// empty when no socket got that far.
	Local   string `json:"local"`
	Network string `json:"network"`
	Addr    string `json:"addr"`
}

// BuildDialer builds the dialer into a fresh 0755 directory removed when t
// ends, and returns its path; any UID can run it. With a warm build cache
// this takes about half a second.
func BuildDialer(t testing.TB) string {
	t.Helper()
	RequireTools(t, "go")
	path, err := BuildDialerTo(TempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// BuildDialerTo builds the dialer as dir/bastion-dialer, mode 0755, from
// the module that contains the working directory.
func BuildDialerTo(dir string) (string, error) {
	return GoBuild(dir, "bastion-dialer", DialerPackage)
}

// GoBuild runs `go build -o dir/name pkg` with CGO_ENABLED=0 and makes the
// result executable by every UID.
func GoBuild(dir, name, pkg string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go build %s: %w", pkg, err)
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command(goTool, "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w: %s", pkg, err, strings.TrimSpace(string(msg)))
	}
	if err := os.Chmod(out, 0o755); err != nil {
		return "", fmt.Errorf("go build %s: %w", pkg, err)
	}
	return out, nil
}

// RunDialer runs the dialer at bin inside the namespace as uid:gid with
// args such as "-net", "tcp6", "-addr", "[::1]:80" and returns its result.
// A failed dial is a result (OK false), not an error; err means the dialer
// itself could not run or printed no result.
func (ns *NS) RunDialer(ctx context.Context, bin string, uid, gid uint32, args ...string) (DialResult, error) {
	cmd := ns.Command(ctx, uid, gid, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	var r DialResult
	if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil {
		return r, errors.Join(fmt.Errorf("dialer %v: no result: %w: stdout %q stderr %q", args, err, out, stderr.String()), runErr)
	}
	return r, nil
}
