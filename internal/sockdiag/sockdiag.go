package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/nlconn"
)

// ByFamily is the netlink message type of inet_diag requests and replies
// (SOCK_DIAG_BY_FAMILY).
const ByFamily = 20

// Constants from linux/sock_diag.h and linux/inet_diag.h.
const (
	sockDiagByFamily = ByFamily
	msgLen           = 72 // sizeof(struct inet_diag_msg)
	reqLen           = 56 // sizeof(struct inet_diag_req_v2)
	attrProtocol     = 10 // INET_DIAG_PROTOCOL
	attrSKV6Only     = 11 // INET_DIAG_SKV6ONLY
	allStates        = 0xffffffff
	noCookie         = ^uint64(0) // INET_DIAG_NOCOOKIE

	groupUDP4Destroy = 2 // SKNLGRP_INET_UDP_DESTROY
	groupUDP6Destroy = 4 // SKNLGRP_INET6_UDP_DESTROY
)

// destroyReadBuffer is the receive buffer asked for the notification
// socket: room for some ten thousand notifications while the reader is
// busy (each takes about 768 bytes of buffer).
const destroyReadBuffer = 8 << 20

// ErrLost is returned (wrapped) by DestroyWatcher.Receive when the kernel
// dropped notifications because the receive buffer was full: sockets were
// destroyed that will never be reported.
var ErrLost = errors.New("socket destroy notifications lost")

// Socket is one inet_diag_msg.
type Socket struct {
	// Family is the socket's address family, AF_INET or AF_INET6; a
	// dual-stack AF_INET6 socket may carry IPv4 flows.
	Family uint8
	// State is the kernel's socket state (TCP_ESTABLISHED for a connected
	// UDP socket, TCP_CLOSE for an unconnected one).
	State uint8
	// Protocol is set from INET_DIAG_PROTOCOL when the message has it
	// (destroy notifications do), else 0.
	Protocol uint8
	// Local and Remote are unmapped: an IPv4-mapped address reads as IPv4.
	// Remote is the zero address and port 0 for an unconnected socket.
	Local, Remote netip.AddrPort
	// Cookie names the socket uniquely for the life of the system.
	Cookie uint64
	// Inode and UID are 0 in destroy notifications.
	Inode uint32
	UID   uint32
	// V6Only is set from INET_DIAG_SKV6ONLY when the message has it: an
	// AF_INET6 socket with IPV6_V6ONLY takes no IPv4 flows.
	V6Only bool
}

// V6Wildcard reports whether the socket is an AF_INET6 socket bound to "::"
// (which, unless V6Only, also takes IPv4 flows).
func (s Socket) V6Wildcard() bool {
	return s.Family == unix.AF_INET6 && s.Local.Addr() == netip.IPv6Unspecified()
}

// Connected reports whether the socket was connected to one remote address.
func (s Socket) Connected() bool { return s.Remote.Port() != 0 }

// ParseMessage decodes one inet_diag_msg and the attributes after it. b is
// the message data after the netlink header.
func ParseMessage(b []byte) (Socket, error) {
	if len(b) < msgLen {
		return Socket{}, fmt.Errorf("inet_diag_msg of %d bytes, want at least %d", len(b), msgLen)
	}
	s := Socket{
		Family: b[0],
		State:  b[1],
		// idiag_cookie is two native-endian u32, low half first.
		Cookie: uint64(binary.NativeEndian.Uint32(b[44:])) | uint64(binary.NativeEndian.Uint32(b[48:]))<<32,
		UID:    binary.NativeEndian.Uint32(b[64:]),
		Inode:  binary.NativeEndian.Uint32(b[68:]),
	}
	sport, dport := binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:])
	var src, dst netip.Addr
	switch s.Family {
	case unix.AF_INET:
		src = netip.AddrFrom4([4]byte(b[8:12]))
		dst = netip.AddrFrom4([4]byte(b[24:28]))
	case unix.AF_INET6:
		src = netip.AddrFrom16([16]byte(b[8:24])).Unmap()
		dst = netip.AddrFrom16([16]byte(b[24:40])).Unmap()
	default:
		return Socket{}, fmt.Errorf("inet_diag_msg of family %d", s.Family)
	}
	s.Local, s.Remote = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	// Attributes: struct nlattr { u16 len; u16 type; } aligned to 4.
	for a := b[msgLen:]; len(a) >= 4; {
		l := int(binary.NativeEndian.Uint16(a))
		typ := binary.NativeEndian.Uint16(a[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < 4 || l > len(a) {
			return Socket{}, fmt.Errorf("inet_diag attribute of length %d in %d bytes", l, len(a))
		}
		switch {
		case typ == attrProtocol && l >= 5:
			s.Protocol = a[4]
		case typ == attrSKV6Only && l >= 5:
			s.V6Only = a[4] != 0
		}
		a = a[min((l+3)&^3, len(a)):]
	}
	return s, nil
}

// Request encodes struct inet_diag_req_v2 for sockets of family and
// proto in every state: an exact lookup of src and dst as given (UDP takes
// them the other way round: see UDPOwner), or, with netlink.Dump and zero
// addresses, a dump of them all.
func Request(family, proto uint8, src, dst netip.AddrPort) []byte {
	b := make([]byte, reqLen)
	b[0] = family
	b[1] = proto
	binary.NativeEndian.PutUint32(b[4:], allStates)
	id := b[8:]
	binary.BigEndian.PutUint16(id[0:], src.Port())
	binary.BigEndian.PutUint16(id[2:], dst.Port())
	putAddr(id[4:20], src.Addr(), family)
	putAddr(id[20:36], dst.Addr(), family)
	// idiag_if 0: any interface; the cookie is not checked.
	binary.NativeEndian.PutUint64(id[40:], noCookie)
	return b
}

// putAddr writes a in the form family expects: 4 bytes for AF_INET, 16
// (IPv4-mapped for an IPv4 address) for AF_INET6; nothing for the zero
// address.
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

// dial opens a NETLINK_SOCK_DIAG socket inside ns (nil: the caller's).
func dial(ns *os.File) (*netlink.Conn, error) {
	c, err := nlconn.Dial(ns, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open sock_diag socket: %w", err)
	}
	return c, nil
}

// DestroyWatcher receives the kernel's notifications of destroyed UDP
// sockets (IPv4 and IPv6) in one network namespace.
type DestroyWatcher struct {
	c *netlink.Conn
}

// WatchUDPDestroy subscribes to UDP socket destroy notifications inside ns
// (nil: the caller's namespace). It needs CAP_NET_ADMIN there. While anyone
// is subscribed, the kernel defers freeing every UDP socket of the namespace
// to a workqueue that builds the notification.
func WatchUDPDestroy(ns *os.File) (*DestroyWatcher, error) {
	c, err := dial(ns)
	if err != nil {
		return nil, err
	}
	for _, g := range []uint32{groupUDP4Destroy, groupUDP6Destroy} {
		if err := c.JoinGroup(g); err != nil {
			c.Close()
			return nil, fmt.Errorf("join sock_diag group %d: %w", g, err)
		}
	}
	nlconn.ForceReadBuffer(c, destroyReadBuffer)
	return &DestroyWatcher{c: c}, nil
}

// Receive blocks until the kernel reports destroyed sockets and returns
// them. A message that does not parse is skipped. When notifications were
// lost the error wraps ErrLost, and the watcher keeps working. After Close,
// Receive returns an error.
func (w *DestroyWatcher) Receive() ([]Socket, error) {
	msgs, err := w.c.Receive()
	if err != nil {
		if errors.Is(err, unix.ENOBUFS) {
			return nil, fmt.Errorf("%w: %w", ErrLost, err)
		}
		return nil, fmt.Errorf("receive socket destroy notifications: %w", err)
	}
	socks := make([]Socket, 0, len(msgs))
	for _, m := range msgs {
		if m.Header.Type != sockDiagByFamily {
			continue
		}
		if s, err := ParseMessage(m.Data); err == nil {
			socks = append(socks, s)
		}
	}
	return socks, nil
}

// SetReadDeadline makes Receive fail once t passes; the zero time removes
// the deadline.
func (w *DestroyWatcher) SetReadDeadline(t time.Time) error { return w.c.SetReadDeadline(t) }

// Close unsubscribes and unblocks Receive.
func (w *DestroyWatcher) Close() error { return w.c.Close() }

// Lookup asks which live UDP socket owns a flow. It is safe for concurrent
// use; requests are serialised.
type Lookup struct {
	c *netlink.Conn
}

// OpenLookup opens a sock_diag socket inside ns (nil: the caller's).
func OpenLookup(ns *os.File) (*Lookup, error) {
	c, err := dial(ns)
	if err != nil {
		return nil, err
	}
	return &Lookup{c: c}, nil
}

// Close closes the socket.
func (l *Lookup) Close() error { return l.c.Close() }

// UDPOwner returns the live UDP socket that now owns t's local end: the one
// the kernel would deliver a datagram from t.Dst to t.Src to, connected to
// t.Dst or not (the most specific one, as the kernel picks it). ok is false
// when there is none. A socket bound to an interface (SO_BINDTODEVICE) is
// not found.
func (l *Lookup) UDPOwner(t flow.Tuple) (s Socket, ok bool, err error) {
	local := netip.AddrPortFrom(t.Src.Unmap(), t.SrcPort)
	remote := netip.AddrPortFrom(t.Dst.Unmap(), t.DstPort)
	families := []uint8{unix.AF_INET6}
	if local.Addr().Is4() {
		// A dual-stack AF_INET6 socket can own an IPv4 flow; asked in
		// AF_INET6 with mapped addresses the kernel looks it up as IPv4.
		families = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	for _, fam := range families {
		// udp_dump_one takes the remote end as the source and the
		// local end as the destination, as for a datagram received.
		msgs, err := l.c.Execute(netlink.Message{
			Header: netlink.Header{Type: sockDiagByFamily, Flags: netlink.Request},
			Data:   Request(fam, unix.IPPROTO_UDP, remote, local),
		})
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return Socket{}, false, fmt.Errorf("look up udp socket of %v: %w", t, err)
		}
		for _, m := range msgs {
			if m.Header.Type != sockDiagByFamily {
				continue
			}
			s, err := ParseMessage(m.Data)
			if err != nil {
				return Socket{}, false, fmt.Errorf("look up udp socket of %v: %w", t, err)
			}
			return s, true, nil
		}
	}
	return Socket{}, false, nil
}
