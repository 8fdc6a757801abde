package procfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// dialerEnv turns the test binary into a dialer child (see runDialer).
const dialerEnv = "BASTION_PROCFS_DIALER"

func TestMain(m *testing.M) {
	if os.Getenv(dialerEnv) == "1" {
		if err := runDialer(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "dialer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runDialer opens one socket as args say, prints "ready <local address>"
// and holds the socket until stdin closes.
func runDialer(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("want mode and address, got %q", args)
	}
	mode, addr := args[0], args[1]
	var local string
	switch mode {
	case "tcp4", "tcp6", "udp4", "udp6":
		c, err := net.Dial(mode, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		local = c.LocalAddr().String()
	case "udp4-unconnected", "udp6-unconnected":
		network := strings.TrimSuffix(mode, "-unconnected")
		c, err := net.ListenPacket(network, ":0")
		if err != nil {
			return err
		}
		defer c.Close()
		dst, err := net.ResolveUDPAddr(network, addr)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo([]byte("x"), dst); err != nil {
			return err
		}
		local = c.LocalAddr().String()
	case "tcp4-synsent":
		// A non-blocking connect towards a black hole stays in
		// SYN_SENT, the state of a flow the firewall holds.
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ap := netip.MustParseAddrPort(addr)
		err = unix.Connect(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())})
		if !errors.Is(err, unix.EINPROGRESS) {
			return fmt.Errorf("connect: %v, want EINPROGRESS", err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		sa4 := sa.(*unix.SockaddrInet4)
		local = netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(sa4.Port)).String()
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	fmt.Printf("ready %s\n", local)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// testNetns creates a network namespace with lo up and 192.0.2.0/24 a
// black hole, and deletes it when the test ends.
func testNetns(t testing.TB) *os.File {
	t.Helper()
	ns := testenv.NewNetNS(t)
	// Packets to 192.0.2.0/24 loop back through lo and are dropped as not
	// local (forwarding is off): a black hole without extra interfaces.
	if out, err := exec.Command("ip", "-n", ns.Name, "route", "add", "192.0.2.0/24", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip route add 192.0.2.0/24 dev lo in %s: %v\n%s", ns.Name, err, out)
	}
	return ns.File
}

// helperBinary copies the test binary where UID 1000 can run it.
func helperBinary(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "bastion-procfs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "dialer")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

type dialer struct {
	cmd   *exec.Cmd
	local netip.AddrPort
}

// startDialer runs the helper as UID/GID 1000 inside ns and waits, with a
// deadline, until its socket is open.
func startDialer(t *testing.T, ns *os.File, exe, mode, addr string) dialer {
	t.Helper()
	cmd := exec.Command(exe, mode, addr)
	cmd.Env = []string{dialerEnv + "=1"}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: 1000, Gid: 1000, NoSetGroups: true},
		Pdeathsig:  syscall.SIGKILL,
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Forked from a thread inside ns, the child lives in ns.
	if err := netns.Do(ns, cmd.Start); err != nil {
		t.Fatalf("start dialer: %v", err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("dialer %s %s: %v", mode, addr, err)
		}
	})
	if f, ok := stdout.(*os.File); ok {
		_ = f.SetReadDeadline(time.Now().Add(10 * time.Second))
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("dialer %s %s did not get ready: %v", mode, addr, err)
	}
	local, err := netip.ParseAddrPort(strings.TrimSpace(strings.TrimPrefix(line, "ready ")))
	if err != nil {
		t.Fatalf("dialer said %q: %v", line, err)
	}
	return dialer{cmd: cmd, local: local}
}

func TestResolveE2E(t *testing.T) {
	testenv.RequireRoot(t)
	ns := testNetns(t)
	exe := helperBinary(t)

	// Listeners the dialers connect to, inside ns.
	var tcp4, tcp6 net.Listener
	var udp4, udp6 net.PacketConn
	err := netns.Do(ns, func() error {
		var err error
		if tcp4, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			return err
		}
		if tcp6, err = net.Listen("tcp6", "[::1]:0"); err != nil {
			return err
		}
		if udp4, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			return err
		}
		udp6, err = net.ListenPacket("udp6", "[::1]:0")
		return err
	})
	if err != nil {
		t.Fatalf("listen in test netns: %v", err)
	}
	for _, c := range []io.Closer{tcp4, tcp6, udp4, udp6} {
		t.Cleanup(func() { c.Close() })
	}

	r, err := New(ns, os.DirFS("/proc"))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })

	tests := []struct {
		mode  string
		proto flow.Proto
		dst   string
		src   netip.Addr // flow source when the socket is bound to a wildcard
	}{
		{"tcp4", flow.TCP, tcp4.Addr().String(), netip.Addr{}},
		{"tcp6", flow.TCP, tcp6.Addr().String(), netip.Addr{}},
		{"udp4", flow.UDP, udp4.LocalAddr().String(), netip.Addr{}},
		{"udp6", flow.UDP, udp6.LocalAddr().String(), netip.Addr{}},
		{"udp4-unconnected", flow.UDP, udp4.LocalAddr().String(), netip.MustParseAddr("127.0.0.1")},
		{"udp6-unconnected", flow.UDP, udp6.LocalAddr().String(), netip.MustParseAddr("::1")},
		{"tcp4-synsent", flow.TCP, "192.0.2.2:80", netip.Addr{}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			d := startDialer(t, ns, exe, tt.mode, tt.dst)
			dst := netip.MustParseAddrPort(tt.dst)
			src := d.local.Addr()
			if tt.src.IsValid() {
				src = tt.src
			}
			tuple := flow.Tuple{Proto: tt.proto, Src: src, SrcPort: d.local.Port(), Dst: dst.Addr(), DstPort: dst.Port()}
			p, err := r.Resolve(tuple)
			if err != nil {
				t.Fatalf("Resolve(%v): %v", tuple, err)
			}
			want := flow.Process{
				PID: uint32(d.cmd.Process.Pid), TGID: uint32(d.cmd.Process.Pid), PPID: uint32(os.Getpid()),
				UID: 1000, GID: 1000, Comm: "dialer", Exe: exe,
				Args: []string{exe, tt.mode, tt.dst}, Source: "procfs",
			}
			p.StartTime = 0
			if !equalProcess(p, want) {
				t.Errorf("Resolve(%v) =\n%+v\nwant\n%+v", tuple, p, want)
			}

			// The same flow with another port is nobody's.
			tuple.SrcPort ^= 1
			if p, err := r.Resolve(tuple); !errors.Is(err, ErrNotFound) {
				t.Errorf("Resolve(%v) = %+v, %v; want ErrNotFound", tuple, p, err)
			}
		})
	}
}

// TestResolveV4Mapped checks an AF_INET6 dual-stack socket talking IPv4:
// the kernel reports v4-mapped addresses, the firewall sees IPv4.
func TestResolveV4Mapped(t *testing.T) {
	testenv.RequireRoot(t)
	ns := testNetns(t)
	var ln net.Listener
	var c net.Conn
	err := netns.Do(ns, func() error {
		var err error
		if ln, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		mapped := netip.AddrFrom16(netip.MustParseAddr("::ffff:127.0.0.1").As16())
		if err := unix.Connect(fd, &unix.SockaddrInet6{Addr: mapped.As16(), Port: port}); err != nil {
			unix.Close(fd)
			return err
		}
		f := os.NewFile(uintptr(fd), "mapped")
		defer f.Close()
		c, err = net.FileConn(f)
		return err
	})
	if err != nil {
		t.Fatalf("connect v4-mapped in test netns: %v", err)
	}
	t.Cleanup(func() { c.Close(); ln.Close() })

	r, err := New(ns, os.DirFS("/proc"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	remote := netip.MustParseAddrPort(c.RemoteAddr().String())
	for _, tuple := range []flow.Tuple{
		{Proto: flow.TCP, Src: local.Addr().Unmap(), SrcPort: local.Port(), Dst: remote.Addr().Unmap(), DstPort: remote.Port()},
		{Proto: flow.TCP, Src: local.Addr(), SrcPort: local.Port(), Dst: remote.Addr(), DstPort: remote.Port()},
	} {
		p, err := r.Resolve(tuple)
		if err != nil || p.TGID != uint32(os.Getpid()) {
			t.Errorf("Resolve(%v) = %+v, %v; want this process (%d)", tuple, p, err, os.Getpid())
		}
	}
}

// TestResolveICMP finds a ping socket, v4 and v6, connected or not.
func TestResolveICMP(t *testing.T) {
	testenv.RequireRoot(t)
	ns := testNetns(t)
	fd, fd6 := -1, -1
	err := netns.Do(ns, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0); err != nil {
			return err
		}
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: 4321}); err != nil {
			return err
		}
		fd6, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd6, &unix.SockaddrInet6{Port: 4322}); err != nil {
			return err
		}
		return unix.Connect(fd6, &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()})
	})
	t.Cleanup(func() { unix.Close(fd); unix.Close(fd6) })
	if err != nil {
		t.Fatalf("open ping sockets in test netns: %v", err)
	}
	r, err := New(ns, os.DirFS("/proc"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	tuple := flow.Tuple{Proto: flow.ICMP, Src: netip.MustParseAddr("127.0.0.1"), SrcPort: 4321, Dst: netip.MustParseAddr("127.0.0.2")}
	p, err := r.Resolve(tuple)
	if err != nil || p.TGID != uint32(os.Getpid()) {
		t.Errorf("Resolve(%v) = %+v, %v; want this process (%d)", tuple, p, err, os.Getpid())
	}
	tuple6 := flow.Tuple{Proto: flow.ICMPv6, Src: netip.MustParseAddr("::1"), SrcPort: 4322, Dst: netip.MustParseAddr("::1")}
	if p, err := r.Resolve(tuple6); err != nil || p.TGID != uint32(os.Getpid()) {
		t.Errorf("Resolve(%v) = %+v, %v; want this process (%d)", tuple6, p, err, os.Getpid())
	}
	tuple.SrcPort++
	if p, err := r.Resolve(tuple); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve(%v) = %+v, %v; want ErrNotFound", tuple, p, err)
	}
}

func BenchmarkResolve(b *testing.B) {
	testenv.RequireRoot(b)
	ns := testNetns(b)
	var ln net.Listener
	var c net.Conn
	err := netns.Do(ns, func() error {
		var err error
		if ln, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			return err
		}
		c, err = net.Dial("tcp4", ln.Addr().String())
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(); ln.Close() })
	r, err := New(ns, os.DirFS("/proc"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	remote := netip.MustParseAddrPort(c.RemoteAddr().String())
	tuple := flow.Tuple{Proto: flow.TCP, Src: local.Addr(), SrcPort: local.Port(), Dst: remote.Addr(), DstPort: remote.Port()}

	// Baseline: reading the process alone, the part no method avoids.
	b.Run("ReadProcess", func(b *testing.B) {
		fsys := os.DirFS("/proc")
		for b.Loop() {
			if _, err := ReadProcess(fsys, uint32(os.Getpid())); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := r.Resolve(tuple); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold-scan", func(b *testing.B) {
		for b.Loop() {
			clear(r.fds.cache)
			if _, err := r.Resolve(tuple); err != nil {
				b.Fatal(err)
			}
		}
	})
}
