package deploytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/fw"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// TestRunScript runs deploy/run.sh as `sudo make run NETNS=...` does, as if
// the test user had typed it with no display: the agent comes up confined to
// a fresh namespace, the user's rules service and terminal prompt come up as
// that user, a connection by the user is prompted for and answered on the
// prompt's stdin, and SIGINT to the foreground process group (what Ctrl-C
// sends) stops everything and leaves the namespace's ruleset as it was.
func TestRunScript(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nsenter", "iptables", "curl")
	lookPath(t, "setpriv")
	lookPath(t, "setsid")
	root := repoRoot(t)
	bin := buildBinaries(t)
	uid, gid := testUser(t)
	ns := testenv.NewNetNS(t)
	url := ns.HTTPServer(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	fwCfg := fw.Config{NetNS: ns.Name}
	before, err := fw.Snapshot(ctx, fwCfg)
	if err != nil {
		t.Fatal(err)
	}
	rt := fmt.Sprintf("/run/user/%d", uid)
	_, statErr := os.Stat(rt)
	rtExisted := statErr == nil

	tmp := testenv.TempDir(t)
	data := ownedDir(t, tmp, "data", uid, gid)
	agentSock := filepath.Join(tmp, "agent.sock")
	cmd := exec.Command(filepath.Join(root, "deploy", "run.sh"))
	cmd.Dir = root
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LANG=C.UTF-8", "TERM=dumb",
		"BIN=" + bin, "NETNS=" + ns.Name, "SUDO_USER=" + testUserName,
		"BASTION_AGENT_SOCKET=" + agentSock,
		"BASTION_DATA_DIR=" + filepath.Join(data, "bastion"),
		"BASTION_LOG_DIR=" + filepath.Join(tmp, "logs"),
	}
	// Its own process group, as a terminal's foreground job: Ctrl-C is a
	// SIGINT to the whole group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
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
		if t.Failed() {
			for _, f := range []string{"agent.log", "uiserver.log"} {
				b, _ := os.ReadFile(filepath.Join(tmp, "logs", f))
				t.Logf("%s:\n%s", f, b)
			}
		}
	})

	waitOutput(t, out, "Waiting for prompts", 90*time.Second)
	agentPID := pidFrom(t, out.String(), `bastion-agent pid (\d+)`)
	uiPID := pidFrom(t, out.String(), `bastion-uiserver pid (\d+)`)
	checkProcess(t, agentPID, 0, "bastion-agent")
	checkProcess(t, uiPID, uid, "bastion-uiserver")
	if ino, err := testenv.ProcNetNSInode(agentPID); err != nil {
		t.Fatal(err)
	} else if ino == ns.Inode {
		t.Error("the agent itself runs inside the namespace; it should stay in the host's and confine only its rules (--netns)")
	}
	if fi, err := os.Stat(rt); err != nil {
		t.Fatalf("runtime dir: %v", err)
	} else if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: owner %d mode %v, want %d and 0700", rt, st.Uid, fi.Mode().Perm(), uid)
	}

	// The PATH hint, as the user types it in another terminal, puts the
	// bastionctl that runs here on their PATH.
	m := regexp.MustCompile(`(?m)in another terminal: (export PATH=.*)$`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("run.sh prints no PATH hint:\n%s", out.String())
	}
	script := m[1] + fmt.Sprintf("\ncommand -v bastionctl\nbastionctl --agent-socket %s --ui-socket %s status >/dev/null\n", agentSock, filepath.Join(rt, "bastion", "ui.sock"))
	if b, err := exec.Command("setpriv", "--reuid", fmt.Sprint(uid), "--regid", fmt.Sprint(gid), "--clear-groups", "--",
		"env", "-i", "PATH=/usr/bin:/bin", "HOME=/", "bash", "-c", script).CombinedOutput(); err != nil {
		t.Errorf("the PATH hint %q: %v: %s", m[1], err, b)
	} else if strings.TrimSpace(string(b)) != filepath.Join(bin, "bastionctl") {
		t.Errorf("after the PATH hint, bastionctl is %q, want %s", b, filepath.Join(bin, "bastionctl"))
	}
	if !strings.Contains(out.String(), "http://127.0.0.1:8000/") {
		t.Errorf("run.sh's try-hint does not use the README's port 8000:\n%s", out.String())
	}

	// The user connects; the terminal prompt asks; the test answers "allow,
	// once, this destination and port, any command line, confirm".
	curl := ns.Command(ctx, uid, gid, "curl", "-sS", "-m", "60", url)
	curlOut := &testenv.SyncBuffer{}
	curl.Stdout, curl.Stderr = curlOut, curlOut
	if err := curl.Start(); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, out, "curl wants to connect to 127.0.0.1", 30*time.Second)
	io.WriteString(stdin, "a\n1\n1\nn\ny\n")
	if err := curl.Wait(); err != nil {
		t.Fatalf("curl after allowing it: %v: %s\nrun.sh:\n%s", err, curlOut.String(), out.String())
	}
	if curlOut.String() != testenv.HTTPBody {
		t.Errorf("curl got %q", curlOut.String())
	}
	waitOutput(t, out, ": allow once", 10*time.Second)

	// Ctrl-C.
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-done:
		stopped = true
	case <-time.After(90 * time.Second):
		t.Fatalf("run.sh still running 90s after SIGINT:\n%s", out.String())
	}
	if err != nil {
		t.Errorf("run.sh after SIGINT (Ctrl-C is the normal way to stop it): %v, want exit status 0", err)
	}
	if !strings.Contains(out.String(), "agent stopped and removed its firewall rules") {
		t.Errorf("run.sh did not report a clean agent stop:\n%s", out.String())
	}
	for _, pid := range []int{agentPID, uiPID} {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after run.sh ended (kill 0: %v)", pid, err)
		}
	}
	after, err := fw.Snapshot(ctx, fwCfg)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("ruleset changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := os.Stat(rt); !rtExisted && err == nil {
		t.Errorf("run.sh made %s and left it behind", rt)
	}
}

func pidFrom(t *testing.T, out, re string) int {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %s in run.sh output:\n%s", re, out)
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// checkProcess checks that pid runs exe name as uid.
func checkProcess(t *testing.T, pid int, uid uint32, name string) {
	t.Helper()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	if filepath.Base(exe) != name {
		t.Errorf("pid %d runs %s, want %s", pid, exe, name)
	}
	ruid, _, err := testenv.ProcIDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	if ruid != uid {
		t.Errorf("%s (pid %d) runs as uid %d, want %d", name, pid, ruid, uid)
	}
}

// TestRunScriptDesktopHints runs deploy/run.sh as `sudo make run NETNS=...`
// does from a desktop (DISPLAY set, bastion-gtk built): it names the
// namespace and prints the same try-hint and PATH hint as in the terminal,
// and Ctrl-C ends it with status 0. bastion-gtk is a stand-in here that
// waits to be stopped: the desktop client itself is tested in gtkclient.
func TestRunScriptDesktopHints(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nsenter", "iptables")
	lookPath(t, "setpriv")
	lookPath(t, "setsid")
	root := repoRoot(t)
	bin := buildBinaries(t)
	if err := os.WriteFile(filepath.Join(bin, "bastion-gtk"), []byte("#!/bin/sh\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	uid, gid := testUser(t)
	ns := testenv.NewNetNS(t)
	tmp := testenv.TempDir(t)
	data := ownedDir(t, tmp, "data", uid, gid)
	cmd := exec.Command(filepath.Join(root, "deploy", "run.sh"))
	cmd.Dir = root
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LANG=C.UTF-8", "TERM=dumb", "DISPLAY=:9999",
		"BIN=" + bin, "NETNS=" + ns.Name, "SUDO_USER=" + testUserName,
		"BASTION_AGENT_SOCKET=" + filepath.Join(tmp, "agent.sock"),
		"BASTION_DATA_DIR=" + filepath.Join(data, "bastion"),
		"BASTION_LOG_DIR=" + filepath.Join(tmp, "logs"),
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
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
	waitOutput(t, out, "export PATH=", 90*time.Second)
	for _, want := range []string{
		"bastion-gtk pid",
		"Bastion is running in network namespace " + ns.Name + "; prompts appear on your desktop",
		"sudo ip netns exec " + ns.Name + " python3 -m http.server 8000 --bind 127.0.0.1",
		"sudo ip netns exec " + ns.Name + " runuser -u " + testUserName + " -- curl -sS -m 60 -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:8000/",
		`in another terminal: export PATH="` + bin + `:$PATH"`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("run.sh with a desktop does not print %q:\n%s", want, out.String())
		}
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Errorf("run.sh after Ctrl-C: %v, want exit status 0\n%s", err, out.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("run.sh still running 90s after SIGINT:\n%s", out.String())
	}
}
