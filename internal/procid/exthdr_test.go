package procid

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/packet"
)

// TestNetfilterLinkIPv6ExtHeaders sends IPv6 TCP, UDP and ICMPv6 echo with
// Hop-by-Hop and Destination Options headers from short-lived processes,
// captures the packets the kernel really sent, and checks that the tuple
// internal/packet parses from those bytes resolves, through the netfilter
// program, to the sending process. Without the extension-header walk in
// nf_local_out nothing is recorded for these packets and Resolve fails.
func TestNetfilterLinkIPv6ExtHeaders(t *testing.T) {
	requireMechanism(t, MechNetfilterLink)
	ns, _ := newNetns(t)
	r := openNetfilter(t, ns)
	dir, bin := helperBinary(t)
	l6 := listen(t, ns, "tcp6", "[::1]:0")
	tcpPort := l6.Addr().(*net.TCPAddr).Port

	// Setting Hop-by-Hop or Destination Options needs CAP_NET_RAW: the
	// non-root helpers get it as an ambient capability.
	netRaw := []uintptr{unix.CAP_NET_RAW}
	cases := []struct {
		mode   string
		extHdr string
		uid    uint32
		caps   []uintptr
		proto  flow.Proto
		port   int
		hdrs   []uint8 // extension headers expected on the wire, in order
	}{
		{"udp6", "dst", 1000, netRaw, flow.UDP, 9, []uint8{60}},
		{"udp6", "hop,dst", 0, nil, flow.UDP, 9, []uint8{0, 60}},
		{"tcp6", "hop", 1001, netRaw, flow.TCP, tcpPort, []uint8{0}},
		{"tcp6", "hop,dst", 0, nil, flow.TCP, tcpPort, []uint8{0, 60}},
		// Ping sockets ignore sticky options; raw sockets honour them.
		{"rawping6", "dst", 1000, netRaw, flow.ICMPv6, 0, []uint8{60}},
		{"rawping6", "hop,dst", 0, nil, flow.ICMPv6, 0, []uint8{0, 60}},
	}
	for _, c := range cases {
		t.Run(c.mode+"/"+strings.ReplaceAll(c.extHdr, ",", "+"), func(t *testing.T) {
			capt := startCapture(t, ns)
			dst := fmt.Sprintf("[::1]:%d", c.port)
			h := startHelper(t, ns, helperOpts{
				mode: c.mode, dst: dst, uid: c.uid, caps: c.caps, extHdr: c.extHdr,
				argv0: bin, dir: dir, args: []string{"exthdr-" + c.mode},
			})
			// The bytes the kernel sent, and the tuple the agent's parser
			// takes from them.
			pkt, tup, info := capt.find(t, func(tu flow.Tuple, in packet.Info) bool {
				if tu.Proto != c.proto || tu.SrcPort != h.local.Port() {
					return false
				}
				switch c.proto {
				case flow.TCP:
					return in.TCPFlags.Has(packet.SYN) && !in.TCPFlags.Has(packet.ACK)
				case flow.ICMPv6:
					return in.ICMPType == packet.ICMPv6EchoRequest
				}
				return true
			})
			got, off := extChain(pkt)
			if fmt.Sprint(got) != fmt.Sprint(c.hdrs) {
				t.Fatalf("extension headers on the wire = %v, want %v (packet % x)", got, c.hdrs, pkt)
			}
			if info.TransportOffset != off {
				t.Errorf("packet.Parse transport offset = %d, want %d", info.TransportOffset, off)
			}
			want := flow.Tuple{Proto: c.proto, Src: h.local.Addr(), Dst: netip.MustParseAddr("::1"), SrcPort: h.local.Port(), DstPort: uint16(c.port)}
			if tup != want {
				t.Fatalf("packet.Parse tuple = %v, want %v", tup, want)
			}

			p := waitResolve(t, r.Resolve, tup)
			t.Logf("%s (headers %v) -> %+v", tup, got, p)
			pid := uint32(h.cmd.Process.Pid)
			if p.TGID != pid || p.PID != pid {
				t.Errorf("pid/tgid = %d/%d, want %d", p.PID, p.TGID, pid)
			}
			if p.UID != c.uid {
				t.Errorf("uid = %d, want %d", p.UID, c.uid)
			}
			if p.Exe != bin {
				t.Errorf("exe = %q, want %q", p.Exe, bin)
			}
			if p.Source != string(MechNetfilterLink) {
				t.Errorf("source = %q, want %q", p.Source, MechNetfilterLink)
			}
			r.Forget(tup)
		})
	}
}

// extChain returns the IPv6 extension headers of pkt in order and the offset
// of what follows them, computed independently of internal/packet.
func extChain(pkt []byte) ([]uint8, int) {
	var chain []uint8
	next, off := pkt[6], 40
	for (next == 0 || next == 60) && off+2 <= len(pkt) {
		chain = append(chain, next)
		next, off = pkt[off], off+(int(pkt[off+1])+1)*8
	}
	return chain, off
}

// capture receives the IPv6 packets that arrive on a namespace's loopback,
// through an AF_PACKET socket opened inside it: the bytes the kernel sent.
type capture struct{ fd int }

func startCapture(t testing.TB, ns *os.File) *capture {
	t.Helper()
	proto := int(htons(unix.ETH_P_IPV6))
	c := &capture{fd: -1}
	err := netns.Do(ns, func() error {
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		c.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: lo.Index})
	})
	if c.fd >= 0 {
		t.Cleanup(func() { unix.Close(c.fd) })
	}
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return c
}

// find returns the first captured packet that packet.Parse accepts and
// match selects, with its tuple and info.
func (c *capture) find(t testing.TB, match func(flow.Tuple, packet.Info) bool) ([]byte, flow.Tuple, packet.Info) {
	t.Helper()
	buf := make([]byte, 65536)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("capture: %v", err)
		}
		tup, info, err := packet.Parse(buf[:n])
		if err == nil && match(tup, info) {
			return append([]byte(nil), buf[:n]...), tup, info
		}
	}
	t.Fatal("capture: the packet was not seen within 5s")
	return nil, flow.Tuple{}, packet.Info{}
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
