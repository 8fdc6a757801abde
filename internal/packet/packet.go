package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Sentinel errors; every error returned by Parse matches exactly one of them.
var (
	// ErrTruncated: the bytes end before a header that must be present.
	ErrTruncated = errors.New("truncated")
	// ErrMalformed: a header field contradicts the protocol or the bytes.
	ErrMalformed = errors.New("malformed")
	// ErrUnsupported: an IP version other than 4 or 6.
	ErrUnsupported = errors.New("unsupported")
	// ErrFragment: a non-first fragment, which has no transport header.
	ErrFragment = errors.New("non-first fragment")
)

// TCPFlags is the TCP flags byte (the low 8 bits of the flags field).
type TCPFlags uint8

// TCP flag bits.
const (
	FIN TCPFlags = 0x01
	SYN TCPFlags = 0x02
	RST TCPFlags = 0x04
	PSH TCPFlags = 0x08
	ACK TCPFlags = 0x10
	URG TCPFlags = 0x20
	ECE TCPFlags = 0x40
	CWR TCPFlags = 0x80
)

// Has reports whether all bits of f2 are set in f.
func (f TCPFlags) Has(f2 TCPFlags) bool { return f&f2 == f2 }

func (f TCPFlags) String() string {
	const names = "FSRPAUEC"
	var buf [8]byte
	n := 0
	for i := range 8 {
		if f&(1<<i) != 0 {
			buf[n] = names[i]
			n++
		}
	}
	if n == 0 {
		return "-"
	}
	return string(buf[:n])
}

// ICMP types Bastion treats as echo and keys by identifier.
const (
	ICMPv4EchoReply   = 0
	ICMPv4EchoRequest = 8
	ICMPv6EchoRequest = 128
	ICMPv6EchoReply   = 129
)

// Info is what Parse learns about a packet besides its tuple.
type Info struct {
	// TCPFlags holds the TCP flags; zero for other protocols.
	TCPFlags TCPFlags
	// ICMPType and ICMPCode are set for ICMP and ICMPv6.
	ICMPType, ICMPCode uint8
	// Fragment is set when the packet is an IP fragment (first or not).
	Fragment bool
	// TransportOffset is where the transport header starts in the packet;
	// 0 when there is none.
	TransportOffset int
	// Length is the packet length claimed by the IP header, which may be
	// larger than the bytes captured. 0 when the header does not say (IPv4
	// BIG TCP or an IPv6 jumbogram).
	Length int
}

// MaxExtHeaders bounds the IPv6 extension-header walk. Real stacks send at
// most a handful; anything longer is refused rather than walked.
const MaxExtHeaders = 8

// MaxHeaderLen is the most bytes of a packet Parse can read: an IPv6
// header, MaxExtHeaders extension headers of the largest size (2,048 bytes;
// an AH header is at most 1,028) and a TCP header. A queue that copies this
// much of each packet never hands Parse a header chain cut short.
const MaxHeaderLen = 40 + MaxExtHeaders*2048 + 20

// IPv6 extension header numbers.
const (
	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6Fragment = 44
	ipv6AH       = 51
	ipv6DestOpts = 60
)

// Parse parses a raw IP packet, as NFQUEUE delivers it (no link-layer header).
// b may be cut short after the transport header; it is not retained.
//
// For TCP, UDP, UDP-Lite, SCTP and DCCP the tuple carries the ports. For
// ICMP and ICMPv6 echo request and reply, SrcPort is the echo identifier and
// DstPort 0; other ICMP types have zero ports. Every other protocol gives a
// tuple without ports and no error: whatever the protocol number, the packet
// is decided like any other flow. On error the returned tuple and Info hold whatever was parsed so far.
func Parse(b []byte) (flow.Tuple, Info, error) {
	if len(b) < 1 {
		return flow.Tuple{}, Info{}, fmt.Errorf("packet: %w IP header: empty packet", ErrTruncated)
	}
	switch b[0] >> 4 {
	case 4:
		return parseIPv4(b)
	case 6:
		return parseIPv6(b)
	}
	return flow.Tuple{}, Info{}, fmt.Errorf("packet: %w IP version %d", ErrUnsupported, b[0]>>4)
}

func parseIPv4(b []byte) (flow.Tuple, Info, error) {
	var t flow.Tuple
	var info Info
	if len(b) < 20 {
		return t, info, fmt.Errorf("packet: %w IPv4 header: have %d of 20 bytes", ErrTruncated, len(b))
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return t, info, fmt.Errorf("packet: %w IPv4 header: header length %d < 20", ErrMalformed, ihl)
	}
	if len(b) < ihl {
		return t, info, fmt.Errorf("packet: %w IPv4 header: have %d of %d bytes", ErrTruncated, len(b), ihl)
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total != 0 {
		// tot_len 0 is legal only for GSO super-packets (BIG TCP).
		if total < ihl {
			return t, info, fmt.Errorf("packet: %w IPv4 header: total length %d < header length %d", ErrMalformed, total, ihl)
		}
		if total < len(b) {
			b = b[:total] // drop link-layer padding
		}
	}
	info.Length = total
	t.Proto = flow.Proto(b[9])
	t.Src = netip.AddrFrom4([4]byte(b[12:16]))
	t.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	fragField := binary.BigEndian.Uint16(b[6:8])
	moreFrags := fragField&0x2000 != 0
	offset := fragField & 0x1fff
	info.Fragment = moreFrags || offset != 0
	if offset != 0 {
		return t, info, fmt.Errorf("packet: %w: IPv4 fragment offset %d has no %s header", ErrFragment, int(offset)*8, t.Proto)
	}
	info.TransportOffset = ihl
	return parseTransport(t, info, b[ihl:], false)
}

func parseIPv6(b []byte) (flow.Tuple, Info, error) {
	var t flow.Tuple
	var info Info
	if len(b) < 40 {
		return t, info, fmt.Errorf("packet: %w IPv6 header: have %d of 40 bytes", ErrTruncated, len(b))
	}
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	if plen != 0 {
		info.Length = 40 + plen
		if info.Length < len(b) {
			b = b[:info.Length]
		}
	}
	t.Src = netip.AddrFrom16([16]byte(b[8:24]))
	t.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	next := b[6]
	off := 40
	for i := 0; ; i++ {
		switch next {
		case ipv6HopByHop, ipv6Routing, ipv6DestOpts, ipv6AH, ipv6Fragment:
		default:
			t.Proto = flow.Proto(next)
			info.TransportOffset = off
			return parseTransport(t, info, b[off:], true)
		}
		if i >= MaxExtHeaders {
			t.Proto = flow.Proto(next)
			return t, info, fmt.Errorf("packet: %w IPv6 header: more than %d extension headers", ErrMalformed, MaxExtHeaders)
		}
		if next == ipv6HopByHop && i != 0 {
			t.Proto = flow.Proto(next)
			return t, info, fmt.Errorf("packet: %w IPv6 header: hop-by-hop options after another extension header", ErrMalformed)
		}
		if len(b)-off < 8 {
			t.Proto = flow.Proto(next)
			return t, info, fmt.Errorf("packet: %w IPv6 extension header %d: have %d of 8 bytes", ErrTruncated, next, len(b)-off)
		}
		var hlen int
		switch next {
		case ipv6Fragment:
			hlen = 8
			fragField := binary.BigEndian.Uint16(b[off+2 : off+4])
			info.Fragment = true
			if offset := fragField >> 3; offset != 0 {
				t.Proto = flow.Proto(b[off])
				return t, info, fmt.Errorf("packet: %w: IPv6 fragment offset %d has no %s header", ErrFragment, int(offset)*8, t.Proto)
			}
		case ipv6AH:
			hlen = (int(b[off+1]) + 2) * 4
		default:
			hlen = (int(b[off+1]) + 1) * 8
		}
		if len(b)-off < hlen {
			t.Proto = flow.Proto(next)
			return t, info, fmt.Errorf("packet: %w IPv6 extension header %d: have %d of %d bytes", ErrTruncated, next, len(b)-off, hlen)
		}
		next = b[off]
		off += hlen
	}
}

func parseTransport(t flow.Tuple, info Info, b []byte, v6 bool) (flow.Tuple, Info, error) {
	switch t.Proto {
	case flow.TCP:
		if len(b) < 20 {
			return t, info, fmt.Errorf("packet: %w TCP header: have %d of 20 bytes", ErrTruncated, len(b))
		}
		if doff := int(b[12]>>4) * 4; doff < 20 {
			return t, info, fmt.Errorf("packet: %w TCP header: data offset %d < 20", ErrMalformed, doff)
		}
		t.SrcPort = binary.BigEndian.Uint16(b[0:2])
		t.DstPort = binary.BigEndian.Uint16(b[2:4])
		info.TCPFlags = TCPFlags(b[13])
	case flow.UDP, flow.UDPLite, flow.SCTP, flow.DCCP:
		// Each starts with the source and destination ports; the
		// minimum header is UDP's and UDP-Lite's 8 bytes, SCTP's common
		// header and DCCP's generic header (short sequence numbers) 12.
		hlen := 8
		if t.Proto == flow.SCTP || t.Proto == flow.DCCP {
			hlen = 12
		}
		if len(b) < hlen {
			return t, info, fmt.Errorf("packet: %w %s header: have %d of %d bytes", ErrTruncated, t.Proto, len(b), hlen)
		}
		t.SrcPort = binary.BigEndian.Uint16(b[0:2])
		t.DstPort = binary.BigEndian.Uint16(b[2:4])
	case flow.ICMP, flow.ICMPv6:
		if (t.Proto == flow.ICMPv6) != v6 {
			// ICMPv6 inside IPv4 or ICMPv4 inside IPv6: not something a
			// stack sends; treat it as an opaque protocol.
			return t, info, nil
		}
		if len(b) < 4 {
			return t, info, fmt.Errorf("packet: %w %s header: have %d of 4 bytes", ErrTruncated, t.Proto, len(b))
		}
		info.ICMPType, info.ICMPCode = b[0], b[1]
		if isEcho(info.ICMPType, v6) {
			if len(b) < 8 {
				return t, info, fmt.Errorf("packet: %w %s echo header: have %d of 8 bytes", ErrTruncated, t.Proto, len(b))
			}
			t.SrcPort = binary.BigEndian.Uint16(b[4:6])
		}
	default:
		// Other protocols (including IPv6 "no next header") have no ports.
		info.TransportOffset = 0
	}
	return t, info, nil
}

func isEcho(typ uint8, v6 bool) bool {
	if v6 {
		return typ == ICMPv6EchoRequest || typ == ICMPv6EchoReply
	}
	return typ == ICMPv4EchoRequest || typ == ICMPv4EchoReply
}
