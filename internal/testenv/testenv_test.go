package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/netns"
)

func TestNetNSLoopbackV4V6(t *testing.T) {
	ns := NewNetNS(t)
	host, err := ProcNetNSInode(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if ns.Inode == host {
		t.Fatalf("namespace %s has the host's inode %d", ns.Name, host)
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		l := ns.Listen(t, "tcp", addr)
		err := ns.Do(func() error {
			c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("ping")); err != nil {
				return err
			}
			buf := make([]byte, 4)
			if _, err := c.Read(buf); err != nil || string(buf) != "ping" {
				return fmt.Errorf("echo read %q, %v", buf, err)
			}
			return nil
		})
		if err != nil {
			t.Errorf("echo over %s in %s: %v", l.Addr(), ns.Name, err)
		}
		// The listener lives in ns: the host's loopback has no such port
		// (a refused or failed dial), unless by chance the host uses it.
	}
}

func TestCurlAndWgetAsUsers(t *testing.T) {
	RequireRoot(t)
	RequireTools(t, "curl", "wget")
	ns := NewNetNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		url := ns.HTTPServer(t, addr)
		out, err := ns.Command(ctx, 1000, 1000, "curl", "-sS", "--max-time", "5", url).CombinedOutput()
		if err != nil || string(out) != HTTPBody {
			t.Errorf("curl %s as uid 1000: %v: %q", url, err, out)
		}
		out, err = ns.Command(ctx, 1001, 1001, "wget", "-q", "-T", "5", "-O", "-", url).CombinedOutput()
		if err != nil || string(out) != HTTPBody {
			t.Errorf("wget %s as uid 1001: %v: %q", url, err, out)
		}
	}
}

func TestNetcatAsUser(t *testing.T) {
	RequireRoot(t)
	RequireTools(t, "nc")
	ns := NewNetNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := ns.Listen(t, "tcp6", "[::1]:0")
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	cmd := ns.Command(ctx, 1000, 1000, "nc", "-N", "-w", "5", "::1", port)
	cmd.Stdin = strings.NewReader("hello\n")
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("nc to echo server as uid 1000: %v: %q", err, out)
	}
}

// freePort returns a port on which nothing listens inside ns.
func freePort(t *testing.T, ns *NS, network, addr string) string {
	t.Helper()
	var port int
	err := ns.Do(func() error {
		l, err := net.Listen(network, addr)
		if err != nil {
			return err
		}
		port = l.Addr().(*net.TCPAddr).Port
		return l.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(port)
}

func TestDialer(t *testing.T) {
	RequireRoot(t)
	ns := NewNetNS(t)
	bin := BuildDialer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	tcp4 := ns.Listen(t, "tcp4", "127.0.0.1:0").Addr().String()
	tcp6 := ns.Listen(t, "tcp6", "[::1]:0").Addr().String()
	udp4 := ns.ListenPacket(t, "udp4", "127.0.0.1:0").LocalAddr().String()
	udp6 := ns.ListenPacket(t, "udp6", "[::1]:0").LocalAddr().String()
	closed4 := net.JoinHostPort("127.0.0.1", freePort(t, ns, "tcp4", "127.0.0.1:0"))
	closed6 := net.JoinHostPort("::1", freePort(t, ns, "tcp6", "[::1]:0"))

	for _, tc := range []struct {
		uid      uint32
		args     []string
		wantOK   bool
		wantKind string
	}{
		{1000, []string{"-net", "tcp4", "-addr", tcp4}, true, ""},
		{1001, []string{"-net", "tcp6", "-addr", tcp6, "-reply"}, true, ""},
		{0, []string{"-net", "udp4", "-addr", udp4, "-reply"}, true, ""},
		{1000, []string{"-net", "udp6", "-addr", udp6, "-reply"}, true, ""},
		{1001, []string{"-net", "ping4", "-addr", "127.0.0.1"}, true, ""},
		{1001, []string{"-net", "ping6", "-addr", "::1"}, true, ""},
		{1000, []string{"-net", "tcp4", "-addr", closed4}, false, "refused"},
		{1000, []string{"-net", "tcp6", "-addr", closed6}, false, "refused"},
		{1000, []string{"-net", "udp4", "-addr", closed4, "-reply"}, false, "refused"},
	} {
		r, err := ns.RunDialer(ctx, bin, tc.uid, tc.uid, tc.args...)
		if err != nil {
			t.Errorf("dialer %v: %v", tc.args, err)
			continue
		}
		if r.OK != tc.wantOK || r.Kind != tc.wantKind || r.UID != int(tc.uid) || r.PID == 0 {
			t.Errorf("dialer %v as uid %d = %+v; want ok %v kind %q", tc.args, tc.uid, r, tc.wantOK, tc.wantKind)
		}
	}
}

// checkProcess checks that pid runs inside ns as uid:gid.
func checkProcess(t *testing.T, ns *NS, pid int, uid, gid uint32) {
	t.Helper()
	ino, err := ProcNetNSInode(pid)
	if err != nil {
		t.Fatal(err)
	}
	if ino != ns.Inode {
		t.Errorf("pid %d is in network namespace %d, want %s (%d)", pid, ino, ns.Name, ns.Inode)
	}
	gotUID, gotGID, err := ProcIDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	if gotUID != uid || gotGID != gid {
		t.Errorf("pid %d runs as %d:%d, want %d:%d", pid, gotUID, gotGID, uid, gid)
	}
}

// startSleeper starts cmd (a long sleep) and ends it, by PID, at cleanup.
func startSleeper(t *testing.T, cmd *exec.Cmd, start func(*exec.Cmd) error) int {
	t.Helper()
	if err := start(cmd); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	pid := cmd.Process.Pid
	// nsenter replaces itself with sleep: wait until the exec happened so
	// that the credentials checked are the final ones.
	WaitFor(t, 5*time.Second, "nsenter to exec sleep", func() bool {
		comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		return err == nil && strings.TrimSpace(string(comm)) == "sleep"
	})
	return pid
}

func TestCommandRunsInNamespaceAsUID(t *testing.T) {
	ns := NewNetNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pid := startSleeper(t, ns.Command(ctx, 1001, 1002, "sleep", "60"), (*exec.Cmd).Start)
	checkProcess(t, ns, pid, 1001, 1002)
}

// TestStartInheritsThreadNamespace checks that a child forked by os/exec
// from a thread inside the namespace lands in it, with Go's own credential
// switch instead of nsenter.
func TestStartInheritsThreadNamespace(t *testing.T) {
	ns := NewNetNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	pid := startSleeper(t, cmd, ns.Start)
	checkProcess(t, ns, pid, 1000, 1000)
	// The starting goroutine is back in the host namespace afterwards.
	self, err := netns.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	if ino, _ := netns.Inode(self); ino == ns.Inode {
		t.Errorf("caller's thread stayed in %s", ns.Name)
	}
}

func TestCommandInCgroup(t *testing.T) {
	ns := NewNetNS(t)
	cg := NewCgroup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := ns.CommandInCgroup(ctx, cg, 1000, 1000, "sleep", "60")
	pid := startSleeper(t, cmd, (*exec.Cmd).Start)
	checkProcess(t, ns, pid, 1000, 1000)
	pids, err := cg.PIDs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pids, pid) {
		t.Errorf("cgroup %s holds %v, want pid %d", cg.Path, pids, pid)
	}
}

func TestCgroupDeleteKillsItsProcesses(t *testing.T) {
	RequireRoot(t)
	cg, err := CreateCgroup()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.FD()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	if err := cg.Delete(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("process in deleted cgroup still running")
	}
	if _, err := os.Stat(cg.Path); !os.IsNotExist(err) {
		t.Errorf("cgroup %s still exists: %v", cg.Path, err)
	}
}
