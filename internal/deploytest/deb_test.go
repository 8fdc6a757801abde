package deploytest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/fw"
	"github.com/bastion-fw/bastion/internal/procid"
	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// buildDeb runs deploy/deb.sh (what `make deb` runs) and returns the .deb.
func buildDeb(t testing.TB) string {
	t.Helper()
	lookPath(t, "dpkg-deb")
	root := repoRoot(t)
	bin := buildBinaries(t)
	out := testenv.TempDir(t)
	cmd := exec.Command(filepath.Join(root, "deploy", "deb.sh"))
	cmd.Env = append(os.Environ(), "BIN="+bin, "OUT="+out, "DEB_VERSION=1.2.3~test")
	var stderr testenv.SyncBuffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("deb.sh: %v: %s", err, stderr.String())
	}
	deb := strings.TrimSpace(string(b))
	if !strings.HasSuffix(deb, "_1.2.3~test_"+debArch(t)+".deb") {
		t.Fatalf("deb.sh printed %q", deb)
	}
	return deb
}

func debArch(t testing.TB) string {
	b, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDeb builds the package and checks what is in it: files, owners and
// modes, control fields, the conffile, and the maintainer scripts' behaviour
// (with a recording systemctl, in a private mount namespace so that /etc and
// /run are scratch), then lintian when it is installed.
func TestDeb(t *testing.T) {
	testenv.RequireE2E(t)
	deb := buildDeb(t)

	contents := run(t, "dpkg-deb", "-c", deb)
	byPath := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(contents), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 {
			byPath[strings.TrimPrefix(f[5], ".")] = f[0] + " " + f[1]
		}
	}
	for path, want := range map[string]string{
		"/usr/bin/bastion-agent":                         "-rwxr-xr-x root/root",
		"/usr/bin/bastion-uiserver":                      "-rwxr-xr-x root/root",
		"/usr/bin/bastionctl":                            "-rwxr-xr-x root/root",
		"/lib/systemd/system/bastion-agent.service":      "-rw-r--r-- root/root",
		"/usr/lib/systemd/user/bastion-uiserver.service": "-rw-r--r-- root/root",
		"/etc/bastion/agent.toml":                        "-rw-r--r-- root/root",
		"/usr/share/doc/bastion/copyright":               "-rw-r--r-- root/root",
		"/usr/share/doc/bastion/README.md":               "-rw-r--r-- root/root",
		"/usr/share/doc/bastion/user-guide.md":           "-rw-r--r-- root/root",
		"/usr/share/doc/bastion/security.md":             "-rw-r--r-- root/root",
	} {
		if got := byPath[path]; got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
	for path := range byPath {
		if strings.Contains(path, "installed-files") || strings.HasPrefix(path, "/usr/local") || strings.HasPrefix(path, "/tmp") {
			t.Errorf("package holds %s", path)
		}
	}
	if _, ok := byPath["/usr/bin/bastion-gtk"]; ok {
		for _, p := range []string{"/usr/share/applications/bastion-gtk.desktop", "/etc/xdg/autostart/bastion-gtk.desktop"} {
			if _, ok := byPath[p]; !ok {
				t.Errorf("bastion-gtk packaged without %s", p)
			}
		}
	}

	info := run(t, "dpkg-deb", "-I", deb)
	for _, want := range []string{"Package: bastion", "Version: 1.2.3~test", "Depends: iptables", "postinst", "prerm", "postrm", "conffiles"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	ctrl := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, ctrl)
	if b, _ := os.ReadFile(filepath.Join(ctrl, "conffiles")); strings.TrimSpace(string(b)) != "/etc/bastion/agent.toml" {
		t.Errorf("conffiles: %q", b)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		run(t, "sh", "-n", filepath.Join(ctrl, s))
	}

	t.Run("maintainer scripts", func(t *testing.T) { testMaintainerScripts(t, deb, ctrl) })
	t.Run("lintian", func(t *testing.T) { testLintian(t, deb) })
}

// fakeSystemctl stands in for systemctl where no systemd runs (PID 1 is not
// systemd on the test machines): it records its arguments in $CALLS, acts
// on unit files for real (preset and is-enabled run the real systemctl,
// which needs no manager for them), lists a running user manager for each
// UID in $USER_MANAGERS, and says every unit is inactive.
const fakeSystemctl = `#!/bin/sh
echo "$*" >>"$CALLS"
for last; do :; done
case " $* " in
*" --version "*) echo "systemd 252 (252.39-1~deb12u1)" ;;
*" list-units "*)
	for u in $USER_MANAGERS; do
		echo "  user@$u.service loaded active running User Manager for UID $u"
	done
	;;
*" preset "*) exec /usr/bin/systemctl "$@" ;;
*" --user "*" is-enabled "*) exec /usr/bin/systemctl --global is-enabled "$last" ;;
*" is-enabled "*) exec /usr/bin/systemctl --root=/ is-enabled "$last" ;;
*" is-active "*) exit 3 ;;
esac
exit 0
`

// testMaintainerScripts runs the package's scripts as dpkg would, each in a
// private mount namespace where /etc, /run and /var/lib/systemd are scratch,
// the package's units are in place, and systemctl is fakeSystemctl, with
// two users' systemd user managers running (UIDs 1000 and 1001). It checks
// what a person who installs the package meets: the agent and the rules
// service of every logged-in user start at once (so nobody's connections
// are held for want of a rules service until the next login), they restart
// on upgrade, stop on removal, and a policy-rc.d that forbids starting
// services (containers, chroots) is obeyed.
func testMaintainerScripts(t *testing.T, deb, ctrl string) {
	testenv.RequireRoot(t)
	lookPath(t, "unshare")
	for _, tool := range []string{"deb-systemd-helper", "deb-systemd-invoke", "/usr/bin/systemctl"} {
		lookPath(t, tool)
	}
	pkg := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, pkg)
	fake := t.TempDir()
	calls := filepath.Join(t.TempDir(), "calls")
	os.WriteFile(filepath.Join(fake, "systemctl"), []byte(fakeSystemctl), 0o755)
	policy := filepath.Join(t.TempDir(), "policy-rc.d")

	const (
		agentEnabled = "/etc/systemd/system/multi-user.target.wants/bastion-agent.service"
		uiEnabled    = "/etc/systemd/user/default.target.wants/bastion-uiserver.service"
	)
	type step struct {
		script string
		args   []string
	}
	tests := []struct {
		name    string
		steps   []step
		systemd bool
		deny    bool     // policy-rc.d forbids starting services
		calls   []string // systemctl calls that act on a manager, in order
		exist   []string // paths that exist afterwards
		gone    []string // paths that do not
	}{
		{name: "install", systemd: true,
			steps: []step{{"postinst", []string{"configure", ""}}},
			calls: []string{
				"--system daemon-reload",
				"--quiet --system start bastion-agent.service",
				"--quiet --user --machine 1000@ start bastion-uiserver.service",
				"--quiet --user --machine 1001@ start bastion-uiserver.service",
			},
			exist: []string{agentEnabled, uiEnabled, "/etc/bastion"}},
		{name: "install, policy-rc.d forbids starting", systemd: true, deny: true,
			steps: []step{{"postinst", []string{"configure", ""}}},
			calls: []string{"--system daemon-reload"},
			exist: []string{agentEnabled, uiEnabled}},
		{name: "install without systemd running",
			steps: []step{{"postinst", []string{"configure", ""}}},
			exist: []string{agentEnabled, uiEnabled}},
		{name: "upgrade", systemd: true,
			steps: []step{{"postinst", []string{"configure", ""}}, {"prerm", []string{"upgrade", "1.2.4"}}, {"postinst", []string{"configure", "1.2.2"}}},
			calls: []string{
				"--system daemon-reload",
				"--quiet --system start bastion-agent.service",
				"--quiet --user --machine 1000@ start bastion-uiserver.service",
				"--quiet --user --machine 1001@ start bastion-uiserver.service",
				"--system daemon-reload",
				"try-restart bastion-agent.service",
				"--quiet --user --machine 1000@ restart bastion-uiserver.service",
				"--quiet --user --machine 1001@ restart bastion-uiserver.service",
			},
			exist: []string{agentEnabled, uiEnabled}},
		{name: "remove", systemd: true,
			steps: []step{{"postinst", []string{"configure", ""}}, {"prerm", []string{"remove"}}, {"postrm", []string{"remove"}}},
			calls: []string{
				"--system daemon-reload",
				"--quiet --system start bastion-agent.service",
				"--quiet --user --machine 1000@ start bastion-uiserver.service",
				"--quiet --user --machine 1001@ start bastion-uiserver.service",
				"stop bastion-agent.service",
				"--quiet --user --machine 1000@ stop bastion-uiserver.service",
				"--quiet --user --machine 1001@ stop bastion-uiserver.service",
				"--system daemon-reload",
				"daemon-reload", // deb-systemd-helper mask
			},
			exist: []string{"/etc/bastion"}},
		{name: "purge",
			steps: []step{{"postinst", []string{"configure", ""}}, {"prerm", []string{"remove"}}, {"postrm", []string{"remove"}}, {"postrm", []string{"purge"}}},
			gone:  []string{"/etc/bastion", agentEnabled, uiEnabled, "/var/lib/systemd/deb-systemd-helper-enabled/bastion-agent.service.dsh-also"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(calls)
			policyRC := "#!/bin/sh\nexit 0\n"
			if tc.deny {
				policyRC = "#!/bin/sh\nexit 101\n"
			}
			os.WriteFile(policy, []byte(policyRC), 0o755)
			// The package as dpkg unpacks it: its units where systemd looks.
			setup := `set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /etc
mount -t tmpfs tmpfs /var/lib/systemd
mount -t tmpfs tmpfs /usr/lib/systemd/system
mount -t tmpfs tmpfs /usr/lib/systemd/user
cp "$PKG"/lib/systemd/system/* /usr/lib/systemd/system/
cp "$PKG"/usr/lib/systemd/user/* /usr/lib/systemd/user/
mount --bind "$POLICY" /usr/sbin/policy-rc.d
mkdir -p /etc/bastion && echo x >/etc/bastion/agent.toml
`
			if tc.systemd {
				setup += "mkdir -p /run/systemd/system\n"
			}
			for _, st := range tc.steps {
				// As dpkg runs them: deb-systemd-helper insists.
				setup += fmt.Sprintf("DPKG_MAINTSCRIPT_PACKAGE=bastion DPKG_MAINTSCRIPT_NAME=%s sh %q %s\n", st.script, filepath.Join(ctrl, st.script), strings.Join(quoteAll(st.args), " "))
			}
			for _, p := range append(append([]string{}, tc.exist...), tc.gone...) {
				setup += fmt.Sprintf("if [ -e %[1]q ]; then echo EXISTS %[1]s; else echo MISSING %[1]s; fi\n", p)
			}
			cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", setup)
			cmd.Env = []string{"PATH=" + fake + ":/usr/sbin:/usr/bin:/sbin:/bin", "CALLS=" + calls,
				"USER_MANAGERS=1000 1001", "PKG=" + pkg, "POLICY=" + policy}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			b, _ := os.ReadFile(calls)
			var got []string
			for _, c := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				if c == "" || regexp.MustCompile(`--version|list-units|is-enabled|is-active| preset `).MatchString(c) {
					continue
				}
				// deb-systemd-invoke (init-system-helpers 1.65) names a unit
				// once more for each further user manager; systemctl starts
				// it once.
				got = append(got, dedupWords(c))
			}
			if strings.Join(got, "\n") != strings.Join(tc.calls, "\n") {
				t.Errorf("systemctl calls:\n%s\nwant:\n%s\n(output: %s)", strings.Join(got, "\n"), strings.Join(tc.calls, "\n"), out)
			}
			for _, p := range tc.exist {
				if !strings.Contains(string(out), "EXISTS "+p+"\n") {
					t.Errorf("%s missing afterwards (output: %s)", p, out)
				}
			}
			for _, p := range tc.gone {
				if !strings.Contains(string(out), "MISSING "+p+"\n") {
					t.Errorf("%s still there afterwards (output: %s)", p, out)
				}
			}
		})
	}
}

// dedupWords drops the repeats of a word in a command line.
func dedupWords(line string) string {
	seen := map[string]bool{}
	var out []string
	for _, w := range strings.Fields(line) {
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return strings.Join(out, " ")
}

// quoteAll quotes each argument for sh ("" stays an empty argument).
func quoteAll(args []string) []string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return q
}

// lintianWarningsAccepted are the lintian warnings this package has for
// now, each with why. Errors are never accepted here: a finding that is
// intended is overridden, with its reason, in deploy/debian/lintian-overrides,
// which the package ships.
var lintianWarningsAccepted = map[string]string{}

// testLintian runs lintian on the package and fails on every error it
// reports, and on warnings not accepted above. It logs the summary.
func testLintian(t *testing.T, deb string) {
	t.Helper()
	testenv.RequireTools(t, "lintian")
	lintian, err := exec.LookPath("lintian")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(lintian, "--tag-display-limit", "0", "--display-info", "--show-overrides", deb).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("lintian: %v: %s", err, out)
	}
	count := map[string]int{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.HasSuffix(f[0], ":") || len(f[0]) != 2 {
			continue
		}
		count[f[0]]++
		switch f[0] {
		case "E:":
			t.Errorf("lintian error: %s", line)
		case "W:":
			if _, ok := lintianWarningsAccepted[f[2]]; !ok {
				t.Errorf("lintian warning: %s", line)
			}
		}
	}
	t.Logf("lintian %s: %d errors, %d warnings, %d overridden (deploy/debian/lintian-overrides), %d info:\n%s",
		filepath.Base(deb), count["E:"], count["W:"], count["O:"], count["I:"], out)
}

// TestDebAgentRuns extracts the package into a throwaway root (dpkg -x) and
// runs the agent from there, with the packaged configuration, confined to a
// fresh network namespace; the packaged bastionctl talks to it, and the
// packaged unit verifies against that root.
func TestDebAgentRuns(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nsenter", "iptables")
	deb := buildDeb(t)
	root := testenv.TempDir(t)
	run(t, "dpkg", "-x", deb, root)
	sa := lookPath(t, "systemd-analyze")
	stageUnitTools(t, root)
	verify, err := exec.Command(sa, "verify", "--man=no", "--generators=no", "--root="+root,
		filepath.Join(root, "lib/systemd/system/bastion-agent.service")).CombinedOutput()
	if err != nil || len(verify) > 0 {
		t.Errorf("systemd-analyze verify (extracted package): %v: %s", err, verify)
	}
	ns := testenv.NewNetNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before, err := fw.Snapshot(ctx, fw.Config{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(testenv.TempDir(t), "agent.sock")
	a := testenv.StartAgent(t, testenv.Options{Bin: filepath.Join(root, "usr/bin/bastion-agent"), Config: filepath.Join(root, "etc/bastion/agent.toml"),
		NetNS: ns.Name, Socket: sock, StopTimeout: agentStopTimeout})
	st, err := a.Client.GetStatus(ctx, &agentv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	mech := procid.Detect().Best()
	if st.GetMechanism() != string(mech) {
		t.Errorf("packaged agent identifies with %q, want %s on this kernel", st.GetMechanism(), mech)
	}
	out := run(t, filepath.Join(root, "usr/bin/bastionctl"), "--agent-socket", sock, "--ui-socket", filepath.Join(root, "none.sock"), "status")
	if !strings.Contains(out, "identification: "+string(mech)) || !strings.Contains(out, "network namespace "+ns.Name) {
		t.Errorf("packaged bastionctl status:\n%s", out)
	}
	if err := a.Stop(); err != nil {
		t.Errorf("agent: %v: %s", err, a.Log())
	}
	after, err := fw.Snapshot(ctx, fw.Config{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("packaged agent left rules:\n%s", after)
	}
}
