package deploytest

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/bastion-fw/bastion/internal/testenv"
)

// stage runs deploy/install.sh with env into destdir.
func stage(t testing.TB, action, destdir string, env ...string) string {
	t.Helper()
	root := repoRoot(t)
	cmd := exec.Command(filepath.Join(root, "deploy", "install.sh"), action)
	cmd.Env = append(os.Environ(), append([]string{"DESTDIR=" + destdir}, env...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh %s: %v: %s", action, err, out)
	}
	return string(out)
}

// files lists the regular files under dir, relative to it.
func files(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, "/"+rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// TestInstallUninstall checks `make install` / `make uninstall` in a DESTDIR
// with PREFIX=/usr/local: the files land where systemd and the docs expect
// them, the units run the binaries from PREFIX, and uninstall removes every
// file install put there but keeps an edited configuration.
func TestInstallUninstall(t *testing.T) {
	testenv.RequireE2E(t)
	bin := buildBinaries(t)
	for _, edit := range []bool{false, true} {
		dest := t.TempDir()
		stage(t, "install", dest, "BIN="+bin, "PREFIX=/usr/local")
		got := strings.Join(files(t, dest), "\n")
		for _, want := range []string{
			"/usr/local/bin/bastion-agent", "/usr/local/bin/bastion-uiserver", "/usr/local/bin/bastionctl",
			"/usr/local/lib/systemd/system/bastion-agent.service", "/usr/local/lib/systemd/user/bastion-uiserver.service",
			"/etc/bastion/agent.toml", "/usr/local/share/doc/bastion/user-guide.md",
			"/usr/local/share/bastion/installed-files",
		} {
			if !strings.Contains(got+"\n", want+"\n") {
				t.Errorf("install did not put %s; got:\n%s", want, got)
			}
		}
		unit, _ := os.ReadFile(filepath.Join(dest, "usr/local/lib/systemd/system/bastion-agent.service"))
		if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/bastion-agent ") {
			t.Errorf("installed unit does not run /usr/local/bin/bastion-agent:\n%s", unit)
		}
		conf := filepath.Join(dest, "etc/bastion/agent.toml")
		if edit {
			if err := os.WriteFile(conf, []byte("log_level = \"debug\"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			// A second install keeps the edited file.
			stage(t, "install", dest, "BIN="+bin, "PREFIX=/usr/local")
			if b, _ := os.ReadFile(conf); string(b) != "log_level = \"debug\"\n" {
				t.Errorf("install overwrote an edited agent.toml")
			}
		}
		stage(t, "uninstall", dest, "PREFIX=/usr/local")
		left := files(t, dest)
		want := []string(nil)
		if edit {
			want = []string{"/etc/bastion/agent.toml"}
		}
		if strings.Join(left, " ") != strings.Join(want, " ") {
			t.Errorf("after uninstall (edited config %v): left %v, want %v", edit, left, want)
		}
	}
}

// TestUnitsVerify runs `systemd-analyze verify` on both units as installed
// (the agent's in a staged root with the binary at its ExecStart path; the
// user unit with --user, pointing at the built binary), failing on any
// warning, not only on errors.
func TestUnitsVerify(t *testing.T) {
	testenv.RequireE2E(t)
	sa := lookPath(t, "systemd-analyze")
	bin := buildBinaries(t)
	dest := testenv.TempDir(t)
	stage(t, "install", dest, "BIN="+bin, "PREFIX=/usr", "SYSTEMDUNITDIR=/lib/systemd/system", "USERUNITDIR=/usr/lib/systemd/user")

	verify := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(sa, append([]string{"verify", "--man=no", "--generators=no"}, args...)...)
		rt := t.TempDir()
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+rt, "SYSTEMD_LOG_COLOR=0")
		out, err := cmd.CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
	}
	stageUnitTools(t, dest)
	verify("bastion-agent.service", "--root="+dest, filepath.Join(dest, "lib/systemd/system/bastion-agent.service"))

	// --root does not work with --user: verify a copy that runs the binary
	// where it is.
	unit, err := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/user/bastion-uiserver.service"))
	if err != nil {
		t.Fatal(err)
	}
	copyDir := t.TempDir()
	patched := strings.ReplaceAll(string(unit), "/usr/bin/bastion-uiserver", filepath.Join(bin, "bastion-uiserver"))
	if patched == string(unit) {
		t.Fatal("user unit does not run /usr/bin/bastion-uiserver")
	}
	p := filepath.Join(copyDir, "bastion-uiserver.service")
	if err := os.WriteFile(p, []byte(patched), 0o644); err != nil {
		t.Fatal(err)
	}
	verify("bastion-uiserver.service", "--user", p)

	// And the check itself works: a broken unit fails it.
	bad := filepath.Join(copyDir, "bastion-bad.service")
	os.WriteFile(bad, []byte("[Service]\nExecStart=/nonexistent/bastion\nNoSuchKey=1\n"), 0o644)
	out, err := exec.Command(sa, "verify", "--man=no", "--generators=no", bad).CombinedOutput()
	if err == nil && len(out) == 0 {
		t.Errorf("systemd-analyze verify accepted a broken unit")
	}
}

// stageUnitTools copies the host programs the agent unit runs besides the
// agent (ExecStartPre's touch) into root, where systemd-analyze verify
// --root looks for them.
func stageUnitTools(t *testing.T, root string) {
	t.Helper()
	touch, err := exec.LookPath("touch")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", touch, filepath.Join(root, "usr/bin/touch")).CombinedOutput(); err != nil {
		t.Fatalf("copy touch into %s: %v: %s", root, err, out)
	}
}
