package sockdiag

import (
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// Destroy notifications as Linux 6.18 sent them (x86-64), for a connected
// udp4 socket 127.0.0.1:58483 -> 127.0.0.1:9999, an unconnected dual-stack
// socket bound to [::]:37746, and a connected udp6 socket [::1]:47343 ->
// [::1]:9999.
const (
	destroyConnected4 = `02 01 00 00 e4 73 27 0f  7f 00 00 01 00 00 00 00
		00 00 00 00 00 00 00 00  7f 00 00 01 00 00 00 00
		00 00 00 00 00 00 00 00  00 00 00 00 f6 2d 00 00
		00 00 00 00 00 00 00 00  00 00 00 00 ff ff ff ff
		00 00 00 00 00 00 00 00  05 00 0a 00 11 00 00 00`
	destroyUnconnected6 = `0a 07 00 00 93 72 00 00  00 00 00 00 00 00 00 00
		00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00
		00 00 00 00 00 00 00 00  00 00 00 00 f7 2d 00 00
		00 00 00 00 00 00 00 00  00 00 00 00 ff ff ff ff
		00 00 00 00 00 00 00 00  05 00 0a 00 11 00 00 00`
	destroyConnected6 = `0a 01 00 00 b8 ef 27 0f  00 00 00 00 00 00 00 00
		00 00 00 00 00 00 00 01  00 00 00 00 00 00 00 00
		00 00 00 00 00 00 00 01  00 00 00 00 f8 2d 00 00
		00 00 00 00 00 00 00 00  00 00 00 00 ff ff ff ff
		00 00 00 00 00 00 00 00  05 00 0a 00 11 00 00 00`
)

func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestParseDestroyNotifications(t *testing.T) {
	for _, tc := range []struct {
		name      string
		msg       string
		want      Socket
		connected bool
	}{
		{"connected udp4", destroyConnected4, Socket{
			Family: unix.AF_INET, State: 1 /* TCP_ESTABLISHED */, Protocol: unix.IPPROTO_UDP, Cookie: 0x2df6,
			Local: netip.MustParseAddrPort("127.0.0.1:58483"), Remote: netip.MustParseAddrPort("127.0.0.1:9999"),
		}, true},
		{"unconnected dual-stack", destroyUnconnected6, Socket{
			Family: unix.AF_INET6, State: 7 /* TCP_CLOSE */, Protocol: unix.IPPROTO_UDP, Cookie: 0x2df7,
			Local: netip.MustParseAddrPort("[::]:37746"), Remote: netip.MustParseAddrPort("[::]:0"),
		}, false},
		{"connected udp6", destroyConnected6, Socket{
			Family: unix.AF_INET6, State: 1 /* TCP_ESTABLISHED */, Protocol: unix.IPPROTO_UDP, Cookie: 0x2df8,
			Local: netip.MustParseAddrPort("[::1]:47343"), Remote: netip.MustParseAddrPort("[::1]:9999"),
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseMessage(unhex(t, tc.msg))
			if err != nil {
				t.Fatal(err)
			}
			if s != tc.want {
				t.Errorf("ParseMessage =\n %+v\nwant\n %+v", s, tc.want)
			}
			if s.Connected() != tc.connected {
				t.Errorf("Connected() = %v, want %v", s.Connected(), tc.connected)
			}
		})
	}
}

func TestParseMessageMappedAndCookie(t *testing.T) {
	b := unhex(t, destroyUnconnected6)
	// Local ::ffff:10.1.2.3, remote ::ffff:192.0.2.9 port 53, cookie
	// with both halves set.
	copy(b[8:24], netip.MustParseAddr("::ffff:10.1.2.3").AsSlice())
	copy(b[24:40], netip.MustParseAddr("::ffff:192.0.2.9").AsSlice())
	b[6], b[7] = 0, 53
	copy(b[44:52], []byte{1, 0, 0, 0, 2, 0, 0, 0})
	s, err := ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Local != netip.MustParseAddrPort("10.1.2.3:37746") || s.Remote != netip.MustParseAddrPort("192.0.2.9:53") {
		t.Errorf("mapped addresses read as %v -> %v, want unmapped", s.Local, s.Remote)
	}
	if s.Cookie != 2<<32|1 {
		t.Errorf("cookie %#x, want %#x", s.Cookie, uint64(2<<32|1))
	}
}

func TestParseMessageRejects(t *testing.T) {
	good := unhex(t, destroyConnected4)
	badFamily := append([]byte{}, good...)
	badFamily[0] = 1
	badAttr := append(append([]byte{}, good[:msgLen]...), 0xff, 0, 10, 0)
	shortAttr := append(append([]byte{}, good[:msgLen]...), 2, 0, 10, 0)
	for name, b := range map[string][]byte{
		"empty": nil, "short": good[:msgLen-1], "family": badFamily, "attr too long": badAttr, "attr too short": shortAttr,
	} {
		if _, err := ParseMessage(b); err == nil {
			t.Errorf("%s: ParseMessage succeeded, want an error", name)
		}
	}
	// Trailing bytes shorter than an attribute header are padding.
	if _, err := ParseMessage(append(append([]byte{}, good...), 0, 0)); err != nil {
		t.Errorf("trailing padding: %v", err)
	}
}

func FuzzParseMessage(f *testing.F) {
	for _, m := range []string{destroyConnected4, destroyUnconnected6, destroyConnected6} {
		f.Add(unhex(f, m))
	}
	f.Add(make([]byte, msgLen))
	v6only := make([]byte, msgLen+8)
	v6only[0] = unix.AF_INET6
	copy(v6only[msgLen:], []byte{5, 0, attrSKV6Only, 0, 1})
	f.Add(v6only)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseMessage(b)
		if err != nil {
			return
		}
		if s.Family != unix.AF_INET && s.Family != unix.AF_INET6 {
			t.Errorf("accepted family %d", s.Family)
		}
		if s.Local.Addr().Is4In6() || s.Remote.Addr().Is4In6() {
			t.Errorf("mapped address left in %+v", s)
		}
	})
}

func TestRequestEncoding(t *testing.T) {
	got := Request(unix.AF_INET, unix.IPPROTO_UDP, netip.MustParseAddrPort("10.0.0.2:53"), netip.MustParseAddrPort("127.0.0.1:40000"))
	want := unhex(t, `02 11 00 00 ff ff ff ff
		00 35 9c 40
		0a 00 00 02 00 00 00 00 00 00 00 00 00 00 00 00
		7f 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00
		00 00 00 00 ff ff ff ff ff ff ff ff`)
	if string(got) != string(want) {
		t.Errorf("request\n got %x\nwant %x", got, want)
	}
	got6 := Request(unix.AF_INET6, unix.IPPROTO_UDP, netip.MustParseAddrPort("10.0.0.2:53"), netip.MustParseAddrPort("[::1]:1"))
	if a := netip.AddrFrom16([16]byte(got6[12:28])); a != netip.MustParseAddr("::ffff:10.0.0.2") {
		t.Errorf("AF_INET6 request carries IPv4 as %v, want it mapped", a)
	}
}

func tupleOf(local, remote net.Addr) flow.Tuple {
	l, r := local.(*net.UDPAddr).AddrPort(), remote.(*net.UDPAddr).AddrPort()
	return flow.Tuple{Proto: flow.UDP, Src: l.Addr().Unmap(), Dst: r.Addr().Unmap(), SrcPort: l.Port(), DstPort: r.Port()}
}

// TestDestroyAndOwnerInNamespace uses real sockets inside a fresh network
// namespace: live sockets are found as the owners of their flows (connected,
// unconnected, dual-stack), and each one destroyed is reported with its
// addresses once, and is no longer found.
func TestDestroyAndOwnerInNamespace(t *testing.T) {
	ns := testenv.NewNetNS(t)
	w, err := WatchUDPDestroy(ns.File)
	if err != nil {
		t.Fatalf("subscribe to destroy notifications: %v", err)
	}
	defer w.Close()
	l, err := OpenLookup(ns.File)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv4 := ns.ListenPacket(t, "udp4", "127.0.0.1:0").LocalAddr()
	srv6 := ns.ListenPacket(t, "udp6", "[::1]:0").LocalAddr()

	type sock struct {
		name      string
		open      func() (net.PacketConn, net.Addr, error) // socket and the peer it sends to
		connected bool
	}
	dial := func(network string, to net.Addr) func() (net.PacketConn, net.Addr, error) {
		return func() (net.PacketConn, net.Addr, error) {
			c, err := net.DialUDP(network, nil, to.(*net.UDPAddr))
			return c, to, err
		}
	}
	listen := func(network, addr string, to net.Addr) func() (net.PacketConn, net.Addr, error) {
		return func() (net.PacketConn, net.Addr, error) {
			c, err := net.ListenPacket(network, addr)
			return c, to, err
		}
	}
	for _, tc := range []sock{
		{"connected udp4", dial("udp4", srv4), true},
		{"connected udp6", dial("udp6", srv6), true},
		{"unconnected udp4 wildcard", listen("udp4", "0.0.0.0:0", srv4), false},
		{"unconnected dual-stack to ipv4", listen("udp", "[::]:0", srv4), false},
		{"unconnected udp6 bound", listen("udp6", "[::1]:0", srv6), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c net.PacketConn
			var to net.Addr
			var local net.Addr
			if err := ns.Do(func() (err error) {
				if c, to, err = tc.open(); err != nil {
					return err
				}
				if tc.connected {
					_, err = c.(*net.UDPConn).Write([]byte("x"))
				} else {
					_, err = c.WriteTo([]byte("x"), to)
				}
				local = c.LocalAddr()
				return err
			}); err != nil {
				t.Fatal(err)
			}
			// The flow as it leaves the host: the source address is the
			// one the route picks, the peer's own loopback address here.
			tup := tupleOf(local, to)
			tup.Src = tup.Dst
			ino := uint32(testenv.SocketInode(t, c.(syscall.Conn)))
			s, ok, err := l.UDPOwner(tup)
			if err != nil || !ok {
				t.Fatalf("UDPOwner(%v) of a live socket: ok %v, err %v", tup, ok, err)
			}
			if s.Inode != ino || s.UID != 0 {
				t.Errorf("UDPOwner(%v) = %+v, want inode %d uid 0", tup, s, ino)
			}
			port := local.(*net.UDPAddr).AddrPort().Port()
			c.Close()

			got := waitDestroyed(t, w, port)
			if got.Connected() != tc.connected || got.Cookie == 0 || got.Inode != 0 || got.Protocol != unix.IPPROTO_UDP {
				t.Errorf("destroy notification %+v: want connected %v, a cookie, no inode", got, tc.connected)
			}
			if tc.connected && (got.Remote != netip.AddrPortFrom(tup.Dst, tup.DstPort) || got.Local != netip.AddrPortFrom(tup.Src, tup.SrcPort)) {
				t.Errorf("destroy notification %v -> %v, want the flow %v", got.Local, got.Remote, tup)
			}
			if _, ok, err := l.UDPOwner(tup); ok || err != nil {
				t.Errorf("UDPOwner after close: ok %v, err %v; want none", ok, err)
			}
		})
	}
}

// waitDestroyed reads notifications until the one for local port port.
func waitDestroyed(t *testing.T, w *DestroyWatcher, port uint16) Socket {
	t.Helper()
	got := make(chan Socket, 1)
	go func() {
		for {
			socks, err := w.Receive()
			if err != nil {
				return
			}
			for _, s := range socks {
				if s.Local.Port() == port {
					got <- s
					return
				}
			}
		}
	}()
	select {
	case s := <-got:
		return s
	case <-time.After(10 * time.Second):
		w.Close()
		t.Fatalf("no destroy notification for port %d within 10s", port)
		return Socket{}
	}
}

// A sock_diag reply (not a destroy notification) carries the state, the
// owner's UID and inode, and INET_DIAG_SKV6ONLY when asked.
func TestParseMessageReply(t *testing.T) {
	b := make([]byte, msgLen+8)
	b[0] = unix.AF_INET6
	b[1] = 7 // TCP_CLOSE: an unconnected UDP socket
	binary.BigEndian.PutUint16(b[4:], 5353)
	// Local "::", remote "::": bound to the IPv6 wildcard.
	// idiag_cookie[0] is the low half.
	binary.NativeEndian.PutUint32(b[44:], 0x89abcdef)
	binary.NativeEndian.PutUint32(b[48:], 0x01234567)
	binary.NativeEndian.PutUint32(b[64:], 1000)
	binary.NativeEndian.PutUint32(b[68:], 424242)
	copy(b[msgLen:], []byte{5, 0, attrSKV6Only, 0, 1})
	s, err := ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Socket{
		Family: unix.AF_INET6, State: 7,
		Local:  netip.MustParseAddrPort("[::]:5353"),
		Remote: netip.MustParseAddrPort("[::]:0"),
		Cookie: 0x0123456789abcdef, UID: 1000, Inode: 424242, V6Only: true,
	}
	if s != want {
		t.Errorf("ParseMessage = %+v, want %+v", s, want)
	}
	if !s.V6Wildcard() {
		t.Errorf("%+v: V6Wildcard() = false", s)
	}
}
