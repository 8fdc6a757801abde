package procid

import (
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/sockdiag"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// TestSockAddrTwoSenders has two processes send UDP to one destination, one
// after the other, and checks that the sockops mechanism names each sender
// for its own flow. The sock_addr programs see no source address, but they
// do see the source port when the socket is already bound: always at
// sendmsg (the kernel binds an unbound socket before the hook runs), and at
// connect when the application bound first. Keyed by destination alone,
// the second sender would take over the first's flow.
func TestSockAddrTwoSenders(t *testing.T) {
	requireMechanism(t, MechSockOps)
	ns, _ := newNetns(t)
	r, cg := openSockOps(t, ns)
	dir, bin := helperBinary(t)

	cases := []struct {
		name   string
		mode   string
		dst    string
		lports [2]int // 0: the kernel picks
	}{
		{"udp4 sendto", "udp4-sendto", "127.0.0.1:53", [2]int{}},
		{"udp6 sendto", "udp6-sendto", "[::1]:53", [2]int{}},
		{"udp4 bound then connected", "udp4", "127.0.0.1:123", [2]int{40123, 40124}},
		{"udp6 bound then connected", "udp6", "[::1]:123", [2]int{40123, 40124}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var hs [2]*helperProc
			for i, uid := range []uint32{1000, 1001} {
				hs[i] = startHelper(t, ns, helperOpts{
					mode: c.mode, dst: c.dst, lport: c.lports[i], uid: uid, cgroup: cg,
					argv0: bin, dir: dir, args: []string{fmt.Sprintf("sender-%d", i)},
				})
			}
			dap := netip.MustParseAddrPort(c.dst)
			for i, h := range hs {
				p := checkSender(t, r, h, dap, uint32(1000+i))
				if p.Exe != bin || p.Source != string(MechSockOps) {
					t.Errorf("sender %d: exe %q source %q", i, p.Exe, p.Source)
				}
			}
		})
	}
}

// TestSockAddrPortReuse checks that a port key left by a closed socket does
// not name the next socket given that port. The namespace has one ephemeral
// port, so a sendto from an unbound socket (port key) and a later connect
// from another unbound socket (destination key: the port is picked after the
// hook) use the same tuple.
func TestSockAddrPortReuse(t *testing.T) {
	requireMechanism(t, MechSockOps)
	ns, _ := newNetns(t)
	const port = 40300
	err := netns.Do(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte(fmt.Sprintf("%d %d", port, port)), 0)
	})
	if err != nil {
		t.Fatalf("set ip_local_port_range: %v", err)
	}
	r, cg := openSockOps(t, ns)
	dir, bin := helperBinary(t)

	for _, fam := range []string{"4", "6"} {
		t.Run("udp"+fam, func(t *testing.T) {
			dst := "127.0.0.1:53"
			if fam == "6" {
				dst = "[::1]:53"
			}
			dap := netip.MustParseAddrPort(dst)
			// sendto (port key), then connect twice (destination
			// keys), then sendto again (port key): each process
			// exits before the next starts, and each must be named
			// for the one tuple they all use.
			for i, mode := range []string{"udp" + fam + "-sendto", "udp" + fam, "udp" + fam, "udp" + fam + "-sendto"} {
				h := startHelper(t, ns, helperOpts{mode: mode, dst: dst, uid: uint32(1000 + i), cgroup: cg, argv0: bin, dir: dir})
				if h.local.Port() != port {
					t.Fatalf("helper %d used port %d, want %d", i, h.local.Port(), port)
				}
				checkSender(t, r, h, dap, uint32(1000+i))
			}
		})
	}
}

// TestSockAddrConnectThenSendto has one process connect a UDP socket to a
// destination and another send to it from an unconnected socket afterwards:
// the second must not take over the first's flow.
func TestSockAddrConnectThenSendto(t *testing.T) {
	requireMechanism(t, MechSockOps)
	ns, _ := newNetns(t)
	r, cg := openSockOps(t, ns)
	dir, bin := helperBinary(t)
	for _, c := range []struct{ fam, dst string }{{"4", "127.0.0.1:53"}, {"6", "[::1]:53"}} {
		t.Run("udp"+c.fam, func(t *testing.T) {
			dap := netip.MustParseAddrPort(c.dst)
			conn := startHelper(t, ns, helperOpts{mode: "udp" + c.fam, dst: c.dst, uid: 1000, cgroup: cg, argv0: bin, dir: dir})
			send := startHelper(t, ns, helperOpts{mode: "udp" + c.fam + "-sendto", dst: c.dst, uid: 1001, cgroup: cg, argv0: bin, dir: dir})
			for i, h := range []*helperProc{conn, send} {
				checkSender(t, r, h, dap, uint32(1000+i))
			}
		})
	}
}

// TestSockAddrTwoConnectedSenders has two processes connect unbound UDP
// sockets to one destination and keep them open. Their connects come before
// the kernel picks their ports, so both write the one destination key; the
// resolver tells them apart through sock_diag, which names each flow's
// socket by its cookie, and the entry the connect program wrote for that
// cookie.
func TestSockAddrTwoConnectedSenders(t *testing.T) {
	requireMechanism(t, MechSockOps)
	ns, _ := newNetns(t)
	r, cg := openSockOps(t, ns)
	dir, bin := helperBinary(t)
	diag, err := sockdiag.OpenLookup(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer diag.Close()
	for _, c := range []struct{ fam, dst string }{{"4", "127.0.0.1:53"}, {"6", "[::1]:53"}} {
		t.Run("udp"+c.fam, func(t *testing.T) {
			dap := netip.MustParseAddrPort(c.dst)
			var hs []*helperProc
			for i := range 2 {
				hs = append(hs, startHelper(t, ns, helperOpts{mode: "udp" + c.fam, dst: c.dst, uid: uint32(1000 + i), hold: true, cgroup: cg, argv0: bin, dir: dir}))
			}
			for i, h := range hs {
				p := checkSender(t, r, h, dap, uint32(1000+i))
				// Each flow names its own socket by the cookie
				// sock_diag knows it by (the UDP tuple-reuse guard
				// compares them).
				tup := flow.Tuple{Proto: flow.UDP, Src: h.local.Addr(), Dst: dap.Addr(), SrcPort: h.local.Port(), DstPort: dap.Port()}
				s, ok, err := diag.UDPOwner(tup)
				if err != nil || !ok {
					t.Fatalf("sock_diag: owner of %s: %v, %v", tup, ok, err)
				}
				if p.SocketCookie != s.Cookie {
					t.Errorf("%s: socket cookie %#x, want %#x", tup, p.SocketCookie, s.Cookie)
				}
			}
			// Closed sockets are out of sock_diag's sight: the
			// destination key answers, for the later sender.
			for _, h := range hs {
				h.stdin.Close()
				if err := h.cmd.Wait(); err != nil {
					t.Fatal(err)
				}
			}
			h := hs[0]
			tup := flow.Tuple{Proto: flow.UDP, Src: h.local.Addr(), Dst: dap.Addr(), SrcPort: h.local.Port(), DstPort: dap.Port()}
			if p := waitResolve(t, r.Resolve, tup); p.TGID != uint32(hs[1].cmd.Process.Pid) {
				t.Errorf("after close: %s -> pid %d, want the later sender %d", tup, p.TGID, hs[1].cmd.Process.Pid)
			}
		})
	}
}

// openNetfilter opens the netfilter-link resolver on ns; the test's gate
// (requireMechanism) said the kernel offers it, so it must work.
func openNetfilter(t *testing.T, ns *os.File) Resolver {
	t.Helper()
	r, err := Open(Config{Mechanism: MechNetfilterLink, NetNS: ns, Log: testLogger(t)})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// openSockOps opens the sockops resolver on ns, attached to a cgroup of its
// own, and returns the cgroup the helpers must run in.
func openSockOps(t *testing.T, ns *os.File) (Resolver, *testenv.Cgroup) {
	t.Helper()
	cg := testenv.NewCgroup(t)
	r, err := Open(Config{Mechanism: MechSockOps, NetNS: ns, CgroupPath: cg.Path, Log: testLogger(t)})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r, cg
}

// checkSender resolves the UDP flow from h to dst and checks that it names
// h's process and uid.
func checkSender(t *testing.T, r Resolver, h *helperProc, dst netip.AddrPort, uid uint32) flow.Process {
	t.Helper()
	tup := flow.Tuple{Proto: flow.UDP, Src: h.local.Addr(), Dst: dst.Addr(), SrcPort: h.local.Port(), DstPort: dst.Port()}
	p := waitResolve(t, r.Resolve, tup)
	if want := uint32(h.cmd.Process.Pid); p.TGID != want || p.UID != uid {
		t.Errorf("%s -> pid %d uid %d, want pid %d uid %d", tup, p.TGID, p.UID, want, uid)
	}
	return p
}
