package procid

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
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/kernelfeature"
	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// The test binary doubles as the client process: with helperEnv set it
// sends one flow, prints its local address, and exits (or waits for stdin to
// close when holdEnv is set).
const (
	helperEnv = "BASTION_PROCID_HELPER" // "tcp4", "tcp6", "udp4", "udp6", "ping4", "ping6", "rawping6"
	addrEnv   = "BASTION_PROCID_ADDR"   // destination host:port
	lportEnv  = "BASTION_PROCID_LPORT"  // optional fixed source port
	holdEnv   = "BASTION_PROCID_HOLD"
	// extHdrEnv asks for IPv6 extension headers on every packet, set as
	// sticky socket options before connect: "hop", "dst" or "hop,dst".
	extHdrEnv = "BASTION_PROCID_EXTHDR"
	// unlinkSelfEnv makes the helper delete its own executable first.
	unlinkSelfEnv = "BASTION_PROCID_UNLINK_SELF"
)

// init keeps a helper process's main goroutine on the main thread, where it
// starts: its sockets must come from the thread whose ID is the process ID,
// as the tests expect PID == TGID. Locked in TestMain, it could already have
// moved.
func init() {
	if os.Getenv(helperEnv) != "" {
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := helperMain(mode); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helperMain(mode string) error {
	if os.Getenv(unlinkSelfEnv) != "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		if err := os.Remove(self); err != nil {
			return err
		}
	}
	dst := os.Getenv(addrEnv)
	var local string
	switch mode {
	case "tcp4", "tcp6", "udp4", "udp6":
		d := net.Dialer{Timeout: 5 * time.Second}
		if eh := os.Getenv(extHdrEnv); eh != "" {
			d.Control = func(_, _ string, c syscall.RawConn) error { return setExtHeaders(c, eh) }
		}
		if lp := os.Getenv(lportEnv); lp != "" {
			port, _ := strconv.Atoi(lp)
			if mode[:3] == "tcp" {
				d.LocalAddr = &net.TCPAddr{Port: port}
			} else {
				d.LocalAddr = &net.UDPAddr{Port: port}
			}
		}
		c, err := d.Dial(mode, dst)
		if err != nil {
			return err
		}
		if mode[:3] == "udp" {
			if _, err := c.Write([]byte("hello")); err != nil {
				return err
			}
		}
		local = c.LocalAddr().String()
		defer c.Close()
	case "udp4-sendto", "udp6-sendto":
		// An unconnected, unbound socket: the destination goes with
		// each datagram (sendto) and the kernel picks the source port
		// on the first one, as for many DNS, NTP and QUIC clients.
		ap := netip.MustParseAddrPort(dst)
		family := unix.AF_INET6
		var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
		if mode == "udp4-sendto" {
			family = unix.AF_INET
			sa = &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
		}
		fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Sendto(fd, []byte("hello"), 0, sa); err != nil {
			return fmt.Errorf("sendto: %w", err)
		}
		name, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		// Unbound: the source address was chosen by the route,
		// loopback here, and getsockname reports the wildcard.
		var port int
		switch n := name.(type) {
		case *unix.SockaddrInet4:
			port = n.Port
		case *unix.SockaddrInet6:
			port = n.Port
		}
		local = netip.AddrPortFrom(ap.Addr(), uint16(port)).String()
	case "rawping6":
		// An echo request from a raw ICMPv6 socket, as setuid ping
		// sends it: unlike ping sockets, raw sockets honour sticky
		// extension headers. The identifier is ours to choose.
		ap := netip.MustParseAddrPort(dst)
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		if err != nil {
			return fmt.Errorf("raw ICMPv6 socket: %w", err)
		}
		defer unix.Close(fd)
		if eh := os.Getenv(extHdrEnv); eh != "" {
			if err := setExtHeadersFD(fd, eh); err != nil {
				return err
			}
		}
		if err := unix.Connect(fd, &unix.SockaddrInet6{Addr: ap.Addr().As16()}); err != nil {
			return fmt.Errorf("connect raw socket: %w", err)
		}
		id := uint16(os.Getpid())
		// The kernel computes the ICMPv6 checksum.
		msg := []byte{128, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'b', 'a', 's'}
		if _, err := unix.Write(fd, msg); err != nil {
			return fmt.Errorf("send echo: %w", err)
		}
		name, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		local = netip.AddrPortFrom(netip.AddrFrom16(name.(*unix.SockaddrInet6).Addr), id).String()
	case "ping4", "ping6":
		ap := netip.MustParseAddrPort(dst)
		family, proto, typ := unix.AF_INET, unix.IPPROTO_ICMP, byte(8)
		var sa unix.Sockaddr
		if mode == "ping6" {
			family, proto, typ = unix.AF_INET6, unix.IPPROTO_ICMPV6, 128
			sa = &unix.SockaddrInet6{Addr: ap.Addr().As16()}
		} else {
			sa = &unix.SockaddrInet4{Addr: ap.Addr().As4()}
		}
		fd, err := unix.Socket(family, unix.SOCK_DGRAM, proto)
		if err != nil {
			return fmt.Errorf("ping socket: %w", err)
		}
		defer unix.Close(fd)
		// Connect first so that getsockname reports the source address.
		if err := unix.Connect(fd, sa); err != nil {
			return fmt.Errorf("connect ping socket: %w", err)
		}
		// The kernel fills in the identifier and checksum.
		msg := []byte{typ, 0, 0, 0, 0, 0, 0, 1, 'b', 'a', 's'}
		if _, err := unix.Write(fd, msg); err != nil {
			return fmt.Errorf("send echo: %w", err)
		}
		name, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		switch n := name.(type) {
		case *unix.SockaddrInet4:
			local = netip.AddrPortFrom(netip.AddrFrom4(n.Addr), uint16(n.Port)).String()
		case *unix.SockaddrInet6:
			local = netip.AddrPortFrom(netip.AddrFrom16(n.Addr), uint16(n.Port)).String()
		}
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	fmt.Println(local)
	if os.Getenv(holdEnv) != "" {
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	return nil
}

// Sticky IPv6 extension headers (RFC 3542 section 6) for helpers: the
// kernel puts them into every packet the socket sends, a TCP SYN included.
// Their lengths differ, so that a walker that got hdrlen wrong would land
// in the middle of an option instead of on the transport header.
var (
	// hopOpts is an 8-byte Hop-by-Hop Options header (hdrlen 0): PadN
	// with 4 bytes of padding.
	hopOpts = []byte{0, 0, 1, 4, 0, 0, 0, 0}
	// dstOpts is a 24-byte Destination Options header (hdrlen 2) holding
	// one 20-byte option of the experimental type 0x1e (RFC 4727), whose
	// top bits tell receivers to skip it. (A PadN that long would make
	// the receiver drop the packet: Linux allows at most 7 padding bytes.)
	dstOpts = append([]byte{0, 2, 0x1e, 20}, make([]byte, 20)...)
)

// setExtHeaders sets the sticky extension headers named in spec ("hop",
// "dst", comma-separated) on c. Both need CAP_NET_RAW.
func setExtHeaders(c syscall.RawConn, spec string) error {
	var serr error
	err := c.Control(func(fd uintptr) { serr = setExtHeadersFD(int(fd), spec) })
	return errors.Join(err, serr)
}

func setExtHeadersFD(fd int, spec string) error {
	for _, name := range strings.Split(spec, ",") {
		var opt int
		var hdr []byte
		switch name {
		case "hop":
			opt, hdr = unix.IPV6_HOPOPTS, hopOpts
		case "dst":
			opt, hdr = unix.IPV6_DSTOPTS, dstOpts
		default:
			return fmt.Errorf("unknown extension header %q", name)
		}
		if err := unix.SetsockoptString(fd, unix.IPPROTO_IPV6, opt, string(hdr)); err != nil {
			return fmt.Errorf("set %s extension header: %w", name, err)
		}
	}
	return nil
}

// requireMechanism gates a test of mech (testenv.RequireKernelFeature):
// what mech needs from the kernel, and tp_btf for the eBPF mechanisms,
// whose tests check the executable and argv of processes that have exited,
// which only exec tracking knows.
func requireMechanism(t testing.TB, mech Mechanism) {
	t.Helper()
	if mech == MechProcFS {
		testenv.RequireRoot(t)
		return
	}
	testenv.RequireKernelFeature(t, append(mech.KernelFeatures(), kernelfeature.TpBtf)...)
}

// newNetns creates a network namespace with loopback up and ping sockets
// allowed for everyone (testenv.NewNetNS); it is deleted when the test
// ends. It returns the open namespace and its inode.
func newNetns(t testing.TB) (*os.File, uint32) {
	t.Helper()
	ns := testenv.NewNetNS(t)
	return ns.File, uint32(ns.Inode)
}

// helperBinary copies the test binary to a directory every UID can enter, so
// that helpers can run as unprivileged users. It returns the directory and
// the binary's absolute path.
func helperBinary(t testing.TB) (dir, path string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path = filepath.Join(dir, "procid-helper")
	in, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, in, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

type helperOpts struct {
	mode   string
	dst    string
	lport  int
	uid    uint32
	hold   bool
	cgroup *testenv.Cgroup
	extHdr string    // extHdrEnv value: IPv6 extension headers to send
	caps   []uintptr // ambient capabilities, e.g. CAP_NET_RAW for extHdr as non-root
	argv0  string    // how the binary is named to execve (relative paths welcome)
	dir    string
	args   []string
	// unlinkSelf: the helper deletes its executable before it connects.
	unlinkSelf bool
}

type helperProc struct {
	cmd   *exec.Cmd
	local netip.AddrPort
	stdin io.WriteCloser
}

// startHelper runs the helper inside ns and returns once it has sent its
// flow (it has printed its local address).
func startHelper(t testing.TB, ns *os.File, o helperOpts) *helperProc {
	t.Helper()
	cmd := exec.Command(o.argv0, o.args...)
	cmd.Dir = o.dir
	cmd.Env = append(os.Environ(), helperEnv+"="+o.mode, addrEnv+"="+o.dst)
	if o.lport != 0 {
		cmd.Env = append(cmd.Env, lportEnv+"="+strconv.Itoa(o.lport))
	}
	if o.hold {
		cmd.Env = append(cmd.Env, holdEnv+"=1")
	}
	if o.extHdr != "" {
		cmd.Env = append(cmd.Env, extHdrEnv+"="+o.extHdr)
	}
	if o.unlinkSelf {
		cmd.Env = append(cmd.Env, unlinkSelfEnv+"=1")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: o.uid, Gid: o.uid}, AmbientCaps: o.caps}
	if o.cgroup != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = o.cgroup.FD()
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Started from a thread inside ns, the child is born in ns.
	if err := netns.Do(ns, cmd.Start); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	h := &helperProc{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stdin.Close()
		_ = cmd.Wait()
		t.Fatalf("helper %s: %v: %s", o.mode, err, stderr.String())
	}
	h.local, err = netip.ParseAddrPort(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("helper printed %q: %v", line, err)
	}
	if !o.hold {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper: %v: %s", err, stderr.String())
		}
	}
	return h
}

// listen opens a listener inside ns.
func listen(t testing.TB, ns *os.File, network, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	err := netns.Do(ns, func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}

// waitResolve retries Resolve until it succeeds or the deadline passes;
// with the eBPF mechanisms the entry exists before the helper returns, so
// this normally succeeds at once.
func waitResolve(t testing.TB, resolve func(flow.Tuple) (flow.Process, error), tup flow.Tuple) flow.Process {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := resolve(tup)
		if err == nil {
			return p
		}
		if !errors.Is(err, ErrNotFound) || time.Now().After(deadline) {
			t.Fatalf("resolve %s: %v", tup, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func listenAccept(t testing.TB, ns *os.File, network, addr string, accepted chan<- netip.AddrPort) net.Listener {
	t.Helper()
	var l net.Listener
	err := netns.Do(ns, func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- netip.MustParseAddrPort(c.RemoteAddr().String()):
			default:
			}
			c.Close()
		}
	}()
	return l
}

// runIn runs cmd to completion from a thread inside ns.
func runIn(ns *os.File, cmd *exec.Cmd) error {
	if err := netns.Do(ns, cmd.Start); err != nil {
		return err
	}
	return cmd.Wait()
}

func mustNetfilterProg(t testing.TB, r *bpfResolver) *ebpf.Program {
	t.Helper()
	for _, c := range r.closers {
		if p, ok := c.(*ebpf.Program); ok && p.Type() == ebpf.Netfilter {
			return p
		}
	}
	t.Fatal("no netfilter program loaded")
	return nil
}
