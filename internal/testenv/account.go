package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Account is a user's set of directories for a test: a home with its own
// XDG runtime, data and config directories, all owned by the user, under
// a root-owned directory for logs. Programs run with Env see only these.
type Account struct {
	UID uint32
	// Dir is root-owned (0755) and holds Home; tests keep logs here.
	Dir                                    string
	Home, RuntimeDir, DataHome, ConfigHome string
}

// NewAccount makes uid's directories and writes config as its
// $XDG_CONFIG_HOME/bastion/config.toml (the rules service's config).
func NewAccount(t testing.TB, uid uint32, config string) *Account {
	t.Helper()
	a, err := MakeAccount(TempDir(t), uid, config)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// MakeAccount is NewAccount for programs: dir is the account's Dir, an
// existing root-owned directory that every UID may traverse.
func MakeAccount(dir string, uid uint32, config string) (*Account, error) {
	a := &Account{UID: uid, Dir: dir}
	a.Home = filepath.Join(a.Dir, "home")
	a.RuntimeDir = filepath.Join(a.Home, "run")
	a.DataHome = filepath.Join(a.Home, "data")
	a.ConfigHome = filepath.Join(a.Home, "config")
	for _, d := range []string{a.Home, a.RuntimeDir, a.DataHome, a.ConfigHome, filepath.Join(a.ConfigHome, "bastion")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, fmt.Errorf("make account of uid %d: %w", uid, err)
		}
		if err := os.Chown(d, int(uid), int(uid)); err != nil {
			return nil, fmt.Errorf("make account of uid %d: %w", uid, err)
		}
	}
	cfg := filepath.Join(a.ConfigHome, "bastion", "config.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return nil, fmt.Errorf("make account of uid %d: %w", uid, err)
	}
	if err := os.Chown(cfg, int(uid), int(uid)); err != nil {
		return nil, fmt.Errorf("make account of uid %d: %w", uid, err)
	}
	return a, nil
}

// UISocket is where the account's rules service listens by default.
func (a *Account) UISocket() string { return filepath.Join(a.RuntimeDir, "bastion", "ui.sock") }

// Env is the account's whole environment.
func (a *Account) Env() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + a.Home,
		"XDG_RUNTIME_DIR=" + a.RuntimeDir,
		"XDG_DATA_HOME=" + a.DataHome,
		"XDG_CONFIG_HOME=" + a.ConfigHome,
		"LANG=C",
	}
}

// AsUser makes cmd run as the account's user (its UID as GID, no
// supplementary groups), in its home, with Env plus env; it is killed if
// the test process dies.
func (a *Account) AsUser(cmd *exec.Cmd, env ...string) *exec.Cmd {
	cmd.Env, cmd.Dir = append(a.Env(), env...), a.Home
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: a.UID, Gid: a.UID, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL, // never outlive the test
	}
	return cmd
}
