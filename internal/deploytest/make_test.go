package deploytest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
)

// TestMakeHelp checks that `make help` lists every target the Makefile
// declares phony, each with its line.
func TestMakeHelp(t *testing.T) {
	testenv.RequireTools(t, "make")
	root := repoRoot(t)
	out, err := exec.Command("make", "-s", "-C", root, "help").CombinedOutput()
	if err != nil {
		t.Fatalf("make help: %v: %s", err, out)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Errorf("make help: a target without its line: %q", line)
			continue
		}
		listed[f[0]] = true
	}
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	phony := 0
	for _, m := range regexp.MustCompile(`(?m)^\.PHONY:(.*)$`).FindAllStringSubmatch(string(mk), -1) {
		for _, target := range strings.Fields(m[1]) {
			phony++
			if !listed[target] {
				t.Errorf("make help does not list %q (add `## what it does` after its name in the Makefile)", target)
			}
		}
	}
	if phony < 10 {
		t.Errorf("found only %d phony targets in the Makefile", phony)
	}
}

// TestMakeRun is `sudo make run NETNS=...` as a person types it in a fresh
// clone they own, with no display: it builds, prints in the terminal what
// to try (the README's commands) and where bastionctl is, and Ctrl-C
// stops it with no error from make. Everything the build wrote into the
// clone belongs to the person, so `make deb` and `make build` as them work
// afterwards; `sudo make deb` leaves the clone theirs too, and its package
// (bastion-gtk included when GTK 3 headers are installed) passes lintian.
// The log gives the time from `make run` to the first prompt.
func TestMakeRun(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nsenter", "iptables", "curl", "make", "git", "python3", "runuser", "go")
	uid, gid := testUser(t)
	clone := userClone(t, uid, gid)
	ns := testenv.NewNetNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	tmp := testenv.TempDir(t)
	data := ownedDir(t, tmp, "data", uid, gid)
	agentSock := filepath.Join(tmp, "agent.sock")
	home, _ := os.UserHomeDir()
	// What sudo leaves in the environment of `sudo make run`.
	env := []string{
		"PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home, "LANG=C.UTF-8", "TERM=dumb",
		"SUDO_USER=" + testUserName, fmt.Sprintf("SUDO_UID=%d", uid), fmt.Sprintf("SUDO_GID=%d", gid),
		"BASTION_AGENT_SOCKET=" + agentSock,
		"BASTION_DATA_DIR=" + filepath.Join(data, "bastion"),
		"BASTION_LOG_DIR=" + filepath.Join(tmp, "logs"),
	}
	cmd := exec.CommandContext(ctx, "make", "run", "NETNS="+ns.Name)
	cmd.Dir, cmd.Env = clone, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			<-done
		}
	})

	waitOutput(t, out, "prompts appear below", 10*time.Minute)
	t.Logf("make run NETNS=%s: Bastion ready to prompt %v after the command started (build included)", ns.Name, time.Since(started).Round(time.Second))
	// The hints follow that line, each its own write: the PATH hint is
	// the last (a check at once read the output between two of them).
	waitOutput(t, out, "in another terminal: export PATH=", 30*time.Second)
	for _, want := range []string{
		"sudo ip netns exec " + ns.Name + " python3 -m http.server 8000 --bind 127.0.0.1",
		"sudo ip netns exec " + ns.Name + " runuser -u " + testUserName + " -- curl -sS -m 60 -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:8000/",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("make run does not print %q:\n%s", want, out.String())
		}
	}

	// The first prompt: the README's commands, as printed.
	srv := exec.Command("ip", "netns", "exec", ns.Name, "python3", "-m", "http.server", "8000", "--bind", "127.0.0.1")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	testenv.WaitFor(t, 30*time.Second, "the web server in the namespace", func() bool {
		return exec.Command("ip", "netns", "exec", ns.Name, "curl", "-s", "-o", "/dev/null", "http://127.0.0.1:8000/").Run() == nil
	})
	curl := exec.Command("ip", "netns", "exec", ns.Name, "runuser", "-u", testUserName, "--",
		"curl", "-sS", "-m", "60", "-o", "/dev/null", "-w", `%{http_code}\n`, "http://127.0.0.1:8000/")
	curlOut := &testenv.SyncBuffer{}
	curl.Stdout, curl.Stderr = curlOut, curlOut
	if err := curl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { curl.Process.Kill(); curl.Wait() })
	waitOutput(t, out, "curl wants to connect to 127.0.0.1", 30*time.Second)
	t.Logf("time from `make run` to the first prompt: %v", time.Since(started).Round(time.Second))

	// Ctrl-C, unanswered: a normal stop.
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-done:
		stopped = true
	case <-time.After(2 * time.Minute):
		t.Fatalf("make run still running 2 minutes after SIGINT:\n%s", out.String())
	}
	// make itself gets the SIGINT too and ends by it, silently; what it
	// must not do is report its recipe as failed.
	if strings.Contains(out.String(), "make: ***") || strings.Contains(out.String(), "Error 130") {
		t.Errorf("make reports an error after a normal Ctrl-C:\n%s", out.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Errorf("make run: %v", err)
	}
	if !strings.Contains(out.String(), "agent stopped and removed its firewall rules") {
		t.Errorf("no clean agent stop:\n%s", out.String())
	}
	checkOwned(t, clone, uid)

	// `sudo make deb` in the same clone: still the person's afterwards, and
	// the package (what `make build` built, bastion-gtk included) is clean
	// of lintian errors.
	deb := exec.CommandContext(ctx, "make", "-s", "deb")
	deb.Dir, deb.Env = clone, env
	var debErr testenv.SyncBuffer
	deb.Stderr = &debErr
	b, err := deb.Output()
	b = append(b, debErr.String()...)
	if err != nil {
		t.Fatalf("sudo make deb: %v: %s", err, b)
	}
	checkOwned(t, clone, uid)
	debs, _ := filepath.Glob(filepath.Join(clone, "bin", "bastion_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v", debs)
	}
	if _, err := exec.LookPath("pkg-config"); err == nil && exec.Command("pkg-config", "--exists", "gtk+-3.0").Run() == nil {
		if c := run(t, "dpkg-deb", "-c", debs[0]); !strings.Contains(c, "./usr/bin/bastion-gtk") {
			t.Errorf("GTK 3 headers are installed, yet the package has no bastion-gtk:\n%s", c)
		}
	}
	testLintian(t, debs[0])
}

// userClone copies the repository's files (tracked and untracked, not
// ignored: no bin/ or .tools/) into a new directory owned by uid:gid, as
// the person's own clone.
func userClone(t *testing.T, uid, gid uint32) string {
	t.Helper()
	root := repoRoot(t)
	files, err := exec.Command("git", "-C", root, "ls-files", "-co", "--exclude-standard", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	clone := filepath.Join(testenv.TempDir(t), "bastion")
	for _, f := range strings.Split(strings.TrimRight(string(files), "\x00"), "\x00") {
		src := filepath.Join(root, f)
		fi, err := os.Lstat(src)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the working tree, or not a file
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(clone, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", uid, gid), filepath.Dir(clone)).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	return clone
}

// checkOwned fails t for every file or directory under dir not owned by
// uid.
func checkOwned(t *testing.T, dir string, uid uint32) {
	t.Helper()
	bad := 0
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid {
			if bad++; bad <= 10 {
				t.Errorf("%s belongs to uid %d, not to the clone's owner (%d)", path, st.Uid, uid)
			}
		}
		return nil
	})
}
