package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/netns"
)

// NS is a named network namespace made for one test or benchmark, with
// loopback up for IPv4 (127.0.0.1) and IPv6 (::1).
type NS struct {
	Name  string   // name under /run/netns, "bastion-<random>"
	Path  string   // /run/netns/<Name>
	File  *os.File // open namespace file; keep it open while the namespace is used
	Inode uint64   // the namespace's identity, as in /proc/PID/ns/net

	dir string // 0755 scratch dir holding per-UID home directories
}

// NewNetNS creates a fresh network namespace that is deleted when t ends.
func NewNetNS(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, "ip", "nsenter")
	ns, err := CreateNetNS("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Errorf("delete network namespace: %v", err)
		}
	})
	return ns
}

// CreateNetNS is NewNetNS for programs: it creates the namespace name (a
// random "bastion-<hex>" when empty) and the caller must Delete it.
func CreateNetNS(name string) (*NS, error) {
	if name == "" {
		name = "bastion-" + randomSuffix(4)
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	ns := &NS{Name: name, Path: filepath.Join(netns.RunDir, name)}
	if err := ns.setUp(); err != nil {
		return nil, errors.Join(err, ns.Delete())
	}
	return ns, nil
}

func (ns *NS) setUp() error {
	f, err := netns.Open(ns.Name)
	if err != nil {
		return err
	}
	ns.File = f
	if ns.Inode, err = netns.Inode(f); err != nil {
		return err
	}
	if ns.dir, err = MakeTempDir("bastion-" + ns.Name + "-"); err != nil {
		return err
	}
	// IPv6 may be disabled by default on the host (sysctl defaults are
	// copied into new namespaces): enable it before lo comes up so that
	// ::1 is assigned. Unprivileged ICMP echo sockets need ping_group_range.
	for _, kv := range [][2]string{
		{"net/ipv6/conf/all/disable_ipv6", "0"},
		{"net/ipv6/conf/default/disable_ipv6", "0"},
		{"net/ipv6/conf/lo/disable_ipv6", "0"},
		{"net/ipv4/ping_group_range", "0\t2147483647"},
	} {
		if err := ns.Sysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	if out, err := exec.Command("ip", "-n", ns.Name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s link set lo up: %w: %s", ns.Name, err, strings.TrimSpace(string(out)))
	}
	// lo is usable once both loopback addresses accept a bind.
	ok := Poll(5*time.Second, func() bool {
		return ns.Do(func() error {
			for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
				l, err := net.Listen("tcp", addr)
				if err != nil {
					return err
				}
				l.Close()
			}
			return nil
		}) == nil
	})
	if !ok {
		return fmt.Errorf("loopback in %s: 127.0.0.1 and ::1 not usable within 5s", ns.Name)
	}
	return nil
}

// Delete removes the namespace and its scratch directory. Sockets and
// processes still inside keep the namespace itself alive until they end.
func (ns *NS) Delete() error {
	var errs []error
	if ns.File != nil {
		// What a killed agent left pinned for the namespace (kernel
		// decisions: maps, links, programs) goes with it; a clean stop
		// has removed it already.
		if ino, err := netns.Inode(ns.File); err == nil {
			errs = append(errs, removeAgentPins(filepath.Join(agentPinRoot, "netns-"+strconv.FormatUint(ino, 10))))
		}
		ns.File.Close()
	}
	if out, err := exec.Command("ip", "netns", "delete", ns.Name).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("ip netns delete %s: %w: %s", ns.Name, err, strings.TrimSpace(string(out))))
	}
	if ns.dir != "" {
		if err := os.RemoveAll(ns.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// agentPinRoot is kdecide.DefaultPinRoot (which testenv cannot import:
// kdecide's tests import testenv).
const agentPinRoot = "/sys/fs/bpf/bastion"

// removeAgentPins removes the pins in dir and dir; none is no error.
func removeAgentPins(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var errs []error
	for _, e := range ents {
		errs = append(errs, os.Remove(filepath.Join(dir, e.Name())))
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Do runs fn on an OS thread inside the namespace (see netns.Do).
func (ns *NS) Do(fn func() error) error { return netns.Do(ns.File, fn) }

// Sysctl sets a per-namespace sysctl such as "net/ipv4/ping_group_range"
// (dots are accepted too) inside the namespace and checks it took effect.
func (ns *NS) Sysctl(key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	err := ns.Do(func() error {
		// /proc/sys/net resolves against the opening thread's namespace.
		if err := os.WriteFile(path, []byte(value+"\n"), 0o644); err != nil {
			return err
		}
		got, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Join(strings.Fields(string(got)), " ") != strings.Join(strings.Fields(value), " ") {
			return fmt.Errorf("reads back %q", strings.TrimSpace(string(got)))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sysctl %s=%q in %s: %w", key, value, ns.Name, err)
	}
	return nil
}

// Listen opens a stream listener inside the namespace ("tcp", "tcp4",
// "tcp6"; addr such as "127.0.0.1:0" or "[::1]:0") and serves it until t
// ends: each connection gets back what it sends and is closed at EOF, so a
// client that connects and closes at once sees an accept-and-close server.
func (ns *NS) Listen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	return ns.Serve(t, network, addr, func(c net.Conn) {
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			io.Copy(c, c)
		}()
	})
}

// Serve is Listen with handle for each accepted connection, called on the
// accepting goroutine in the order of the accepts; handle owns the
// connection.
func (ns *NS) Serve(t testing.TB, network, addr string, handle func(net.Conn)) net.Listener {
	t.Helper()
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns.Name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			handle(c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return l
}

// ListenPacket opens a datagram socket inside the namespace ("udp",
// "udp4", "udp6") that echoes every datagram to its sender until t ends.
func (ns *NS) ListenPacket(t testing.TB, network, addr string) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns.Name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc
}

// HTTPBody is what HTTPServer answers to every GET.
const HTTPBody = "bastion testenv says hello\n"

// HTTPServer serves HTTPBody over HTTP on addr ("127.0.0.1:0", "[::1]:0")
// inside the namespace until t ends and returns its URL, e.g.
// "http://[::1]:40123/".
func (ns *NS) HTTPServer(t testing.TB, addr string) string {
	t.Helper()
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen http %s in %s: %v", addr, ns.Name, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, HTTPBody)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "http://" + l.Addr().String() + "/"
}

// Command returns a command that runs name inside the namespace as uid:gid
// with no supplementary groups, while staying in the root mount namespace
// (so /sys/fs/cgroup stays visible, unlike with `ip netns exec`).
//
// It execs through `nsenter --net=PATH --setuid --setgid`, which replaces
// itself with name: cmd.Process.Pid is the PID of name itself. HOME and the
// working directory are a private home directory owned by uid, so curl and
// wget find a writable HOME. Use it like any exec.Cmd (Run, Output, Start).
func (ns *NS) Command(ctx context.Context, uid, gid uint32, name string, args ...string) *exec.Cmd {
	argv := append([]string{
		"--net=" + ns.Path,
		"--setuid=" + strconv.FormatUint(uint64(uid), 10),
		"--setgid=" + strconv.FormatUint(uint64(gid), 10),
		"--", name,
	}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	home, err := ns.home(uid, gid)
	if err != nil {
		// Start reports it: exec.Cmd fails Start when Err is set.
		cmd.Err = err
		return cmd
	}
	cmd.Dir = home
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home,
		"LANG=C",
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// CommandInCgroup is Command with the process started directly inside cg
// (clone3 with CLONE_INTO_CGROUP), so it never runs outside it.
func (ns *NS) CommandInCgroup(ctx context.Context, cg *Cgroup, uid, gid uint32, name string, args ...string) *exec.Cmd {
	cmd := ns.Command(ctx, uid, gid, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.FD()}
	return cmd
}

// Start starts cmd from a thread inside the namespace: the child inherits
// that thread's network namespace, with no nsenter in between. Set
// cmd.SysProcAttr.Credential to change UID and GID.
func (ns *NS) Start(cmd *exec.Cmd) error {
	return ns.Do(cmd.Start)
}

// home returns a home directory owned by uid:gid inside the namespace's
// scratch directory, creating it on first use.
func (ns *NS) home(uid, gid uint32) (string, error) {
	dir := filepath.Join(ns.dir, "home-"+strconv.FormatUint(uint64(uid), 10))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("make home for uid %d: %w", uid, err)
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		return "", fmt.Errorf("make home for uid %d: %w", uid, err)
	}
	return dir, nil
}

// ProcNetNSInode returns the inode of the network namespace that process
// pid is in, to compare with NS.Inode.
func ProcNetNSInode(pid int) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/"+strconv.Itoa(pid)+"/ns/net", &st); err != nil {
		return 0, fmt.Errorf("stat network namespace of pid %d: %w", pid, err)
	}
	return st.Ino, nil
}

// ProcIDs returns the real UID and GID of process pid from /proc/PID/status.
func ProcIDs(pid int) (uid, gid uint32, err error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, fmt.Errorf("read ids of pid %d: %w", pid, err)
	}
	defer f.Close()
	var found int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(v)
		if len(fields) == 0 || (k != "Uid" && k != "Gid") {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("read ids of pid %d: %s: %w", pid, k, err)
		}
		if k == "Uid" {
			uid = uint32(n)
		} else {
			gid = uint32(n)
		}
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("read ids of pid %d: Uid or Gid missing", pid)
	}
	return uid, gid, sc.Err()
}

// SocketInode returns the inode number of socket c, the number sock_diag
// and /proc/PID/fd name it by.
func SocketInode(t testing.TB, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

// SocketCookie returns the cookie of socket c (SO_COOKIE), the number
// sock_diag and the eBPF programs name it by.
func SocketCookie(t testing.TB, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cookie uint64
	var serr error
	if err := rc.Control(func(fd uintptr) { cookie, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return cookie
}
