// Package packettest builds IP packets for tests of packet parsers: the
// agent's (internal/packet) and the kernel's (bpf/procid.c, run through
// internal/procid's tests). Lengths and header-length fields are filled in;
// checksums are not.
package packettest

import (
	"encoding/binary"
	"net/netip"
)

// Addresses the builders use unless told otherwise (documentation ranges).
var (
	Src4 = netip.MustParseAddr("10.0.0.1")
	Dst4 = netip.MustParseAddr("192.0.2.7")
	Src6 = netip.MustParseAddr("2001:db8::1")
	Dst6 = netip.MustParseAddr("2001:db8::2")
)

// IPv4 builds an IPv4 packet from Src4 to Dst4: a header with options opts
// (IHL follows), the fragment field (flags and offset) and payload.
func IPv4(proto uint8, fragField uint16, opts, payload []byte) []byte {
	ihl := 20 + len(opts)
	b := make([]byte, ihl, ihl+len(payload))
	b[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(b[6:8], fragField)
	b[8] = 64
	b[9] = proto
	copy(b[12:16], Src4.AsSlice())
	copy(b[16:20], Dst4.AsSlice())
	copy(b[20:], opts)
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	return b
}

// Ext is one IPv6 extension header: its type and its body after the next
// header and length bytes.
type Ext struct {
	Type uint8
	Body []byte
}

// Fragment is a Fragment header with offset (in 8-byte units) and the
// more-fragments flag.
func Fragment(offset uint16, more bool) Ext {
	f := offset << 3
	if more {
		f |= 1
	}
	return Ext{44, []byte{byte(f >> 8), byte(f), 0, 0, 0, 42}}
}

// IPv6 builds an IPv6 packet from Src6 to Dst6; see IPv6From.
func IPv6(proto uint8, exts []Ext, payload []byte) []byte {
	return IPv6From(Src6, Dst6, proto, exts, payload)
}

// IPv6From builds an IPv6 packet from src to dst with the extension headers
// exts (each one's length field filled in) before an upper-layer header of
// protocol proto, which payload starts with.
func IPv6From(src, dst netip.Addr, proto uint8, exts []Ext, payload []byte) []byte {
	b := make([]byte, 40)
	b[0] = 0x60
	b[6] = proto
	if len(exts) > 0 {
		b[6] = exts[0].Type
	}
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	for i, e := range exts {
		next := proto
		if i+1 < len(exts) {
			next = exts[i+1].Type
		}
		h := append([]byte{next, 0}, e.Body...)
		switch e.Type {
		case 51: // AH counts 4-byte units, minus 2
			h[1] = byte(len(h)/4 - 2)
		case 44: // Fragment: fixed 8 bytes, the length byte is reserved
		default:
			h[1] = byte(len(h)/8 - 1)
		}
		b = append(b, h...)
	}
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[4:6], uint16(len(b)-40))
	return b
}

// TCP is a 20-byte TCP header with flags (packet.TCPFlags or plain bits).
func TCP[F ~uint8](sport, dport uint16, flags F) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:2], sport)
	binary.BigEndian.PutUint16(b[2:4], dport)
	b[12] = 5 << 4
	b[13] = uint8(flags)
	return b
}

// UDP is a UDP header without payload.
func UDP(sport, dport uint16) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[0:2], sport)
	binary.BigEndian.PutUint16(b[2:4], dport)
	binary.BigEndian.PutUint16(b[4:6], 8)
	return b
}

// ICMP is an 8-byte ICMP or ICMPv6 header with type, code and identifier.
func ICMP(typ, code uint8, id uint16) []byte {
	b := make([]byte, 8)
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint16(b[4:6], id)
	return b
}

// Zeros is n zero bytes, for padding and header bodies.
func Zeros(n int) []byte { return make([]byte, n) }
