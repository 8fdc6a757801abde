package procfs

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
)

// sock_diag constants from linux/sock_diag.h and linux/inet_diag.h.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	reqV2Len         = 56 // sizeof(struct inet_diag_req_v2)
	diagMsgLen       = 72 // sizeof(struct inet_diag_msg)
	attrSKV6Only     = 11 // INET_DIAG_SKV6ONLY
	allStates        = 0xffffffff
)

// diagSock is one inet_diag_msg reply.
type diagSock struct {
	family     uint8
	state      uint8
	local      netip.AddrPort // unmapped: a v4-mapped address reads as IPv4
	remote     netip.AddrPort
	uid        uint32
	inode      uint32
	cookie     uint64 // the kernel's socket cookie, unique for the boot
	v6only     bool
	v6Wildcard bool // AF_INET6 socket bound to "::"
}

// diagRequest encodes struct inet_diag_req_v2. For an exact (non-dump)
// lookup, id holds the tuple; src/dst are passed as given (see udpRequest).
func diagRequest(family, proto uint8, states uint32, src, dst netip.AddrPort) []byte {
	b := make([]byte, reqV2Len)
	b[0] = family
	b[1] = proto
	binary.NativeEndian.PutUint32(b[4:], states)
	id := b[8:]
	binary.BigEndian.PutUint16(id[0:], src.Port())
	binary.BigEndian.PutUint16(id[2:], dst.Port())
	putAddr(id[4:20], src.Addr(), family)
	putAddr(id[20:36], dst.Addr(), family)
	// idiag_if 0: any interface. Cookie INET_DIAG_NOCOOKIE: do not check.
	for i := 40; i < 48; i++ {
		id[i] = 0xff
	}
	return b
}

func putAddr(dst []byte, a netip.Addr, family uint8) {
	if !a.IsValid() {
		return
	}
	if family == unix.AF_INET {
		a4 := a.Unmap().As4()
		copy(dst, a4[:])
		return
	}
	a16 := a.As16()
	copy(dst, a16[:])
}

// parseDiagMsg decodes one inet_diag_msg and its attributes. b comes from
// the kernel but is checked all the same.
func parseDiagMsg(b []byte) (diagSock, error) {
	if len(b) < diagMsgLen {
		return diagSock{}, fmt.Errorf("inet_diag_msg of %d bytes, want %d", len(b), diagMsgLen)
	}
	s := diagSock{
		family: b[0],
		state:  b[1],
		uid:    binary.NativeEndian.Uint32(b[64:]),
		inode:  binary.NativeEndian.Uint32(b[68:]),
		// idiag_cookie: two __u32, low half first.
		cookie: uint64(binary.NativeEndian.Uint32(b[44:])) | uint64(binary.NativeEndian.Uint32(b[48:]))<<32,
	}
	sport := binary.BigEndian.Uint16(b[4:])
	dport := binary.BigEndian.Uint16(b[6:])
	var src, dst netip.Addr
	switch s.family {
	case unix.AF_INET:
		src = netip.AddrFrom4([4]byte(b[8:12]))
		dst = netip.AddrFrom4([4]byte(b[24:28]))
	case unix.AF_INET6:
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
		s.v6Wildcard = src == netip.IPv6Unspecified()
	default:
		return diagSock{}, fmt.Errorf("inet_diag_msg of family %d", s.family)
	}
	s.local = netip.AddrPortFrom(src.Unmap(), sport)
	s.remote = netip.AddrPortFrom(dst.Unmap(), dport)
	// Attributes: struct rtattr { u16 len; u16 type; } aligned to 4.
	for a := b[diagMsgLen:]; len(a) >= 4; {
		l := int(binary.NativeEndian.Uint16(a))
		typ := binary.NativeEndian.Uint16(a[2:])
		if l < 4 || l > len(a) {
			break
		}
		if typ == attrSKV6Only && l >= 5 {
			s.v6only = a[4] != 0
		}
		next := (l + 3) &^ 3
		if next >= len(a) {
			break
		}
		a = a[next:]
	}
	return s, nil
}

// matchScore says how well a socket matches a flow's tuple: -1 for not at
// all, higher for more specific. A connected socket beats a bound one beats a
// wildcard one, as in the kernel's own lookup; a socket with an inode beats a
// TIME_WAIT or request socket (inode 0), which no process holds.
func matchScore(s diagSock, t flow.Tuple) int {
	src, dst := t.Src.Unmap(), t.Dst.Unmap()
	if s.local.Port() != t.SrcPort {
		return -1
	}
	score := 0
	switch la := s.local.Addr(); {
	case la == src:
		score += 2
	case la.IsUnspecified():
		if src.Is4() && s.family == unix.AF_INET6 && (!s.v6Wildcard || s.v6only) {
			return -1 // "::" of a v6-only socket takes no IPv4
		}
		if src.Is6() && s.family == unix.AF_INET {
			return -1
		}
	default:
		return -1
	}
	switch ra := s.remote.Addr(); {
	case ra == dst && s.remote.Port() == t.DstPort:
		score += 4
	case t.Proto != flow.TCP && ra.IsUnspecified() && s.remote.Port() == 0:
		// Unconnected UDP or ping socket: sends anywhere.
	default:
		return -1
	}
	if s.inode != 0 {
		score++
	}
	return score
}
