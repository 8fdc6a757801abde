package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/bastion-fw/bastion/internal/flow"
)

// More ctnetlink constants (linux/netfilter/nfnetlink_conntrack.h).
const (
	ctaCountersOrig  = 9 // CTA_COUNTERS_ORIG
	ctaCountersReply = 10
	ctaZone          = 18 // CTA_ZONE
	ctaProtoinfo     = 4  // CTA_PROTOINFO
	ctaTimeout       = 7  // CTA_TIMEOUT (u32, seconds left)
	ctaProtoinfoTCP  = 1  // CTA_PROTOINFO_TCP
	ctaTCPState      = 1  // CTA_PROTOINFO_TCP_STATE (u8)
	ctaCountPackets  = 1  // CTA_COUNTERS_PACKETS (u64, big endian)
	ctaCountBytes    = 2  // CTA_COUNTERS_BYTES (u64)
	ctaCount32Pkts   = 3  // CTA_COUNTERS32_PACKETS (u32), from old kernels
	ctaCount32Bytes  = 4  // CTA_COUNTERS32_BYTES (u32)

	nlaTypeMask = 0x3fff // strips NLA_F_NESTED and NLA_F_NET_BYTEORDER
)

// Counters are what conntrack accounting (nf_conntrack_acct) counted in one
// direction of a connection: IP packets and their bytes, headers included.
type Counters struct {
	Packets, Bytes uint64
}

// TCPState is conntrack's state of a TCP connection (enum tcp_conntrack).
type TCPState uint8

// The states a closed TCP connection's entry lingers in. Its counters no
// longer change there (a stray retransmission aside): TIME_WAIT after both
// sides closed, CLOSE after a reset.
const (
	TCPTimeWait TCPState = 7 // TCP_CONNTRACK_TIME_WAIT
	TCPClose    TCPState = 8 // TCP_CONNTRACK_CLOSE
)

// Closed reports whether the connection has ended.
func (s TCPState) Closed() bool { return s == TCPTimeWait || s == TCPClose }

// Flow is one conntrack entry as a dump or an event reports it.
type Flow struct {
	// Tuple is the original direction: the packet that created the
	// entry, before any NAT. Addresses are plain IPv4 or IPv6, never
	// IPv4-mapped.
	Tuple flow.Tuple
	// ID is the entry's ctnetlink ID.
	ID   uint32
	Mark uint32
	// Zone is the conntrack zone; Bastion addresses zone 0 only.
	Zone uint16
	// Orig counts the original direction (what the opener sent), Reply
	// the reply direction. HasCounters is false when the entry has no
	// accounting: nf_conntrack_acct was off when it was created.
	Orig, Reply Counters
	HasCounters bool
	// TCPState is a TCP entry's state (0 when not reported). Timeout is
	// how long the entry has left, in whole seconds, unless a packet
	// renews it; HasTimeout is false when not reported (destroy events).
	TCPState   TCPState
	Timeout    uint32
	HasTimeout bool
}

// errMalformed wraps every parse failure.
var errMalformed = errors.New("malformed ctnetlink message")

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, a...))
}

// walkAttrs calls fn with the type (flags stripped) and payload of each
// netlink attribute in b. Every length is checked against b; a truncated
// or overlong attribute is an error.
func walkAttrs(b []byte, fn func(typ uint16, val []byte) error) error {
	for len(b) > 0 {
		if len(b) < 4 {
			return malformed("%d trailing bytes", len(b))
		}
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask
		if l < 4 || l > len(b) {
			return malformed("attribute %d of length %d in %d bytes", typ, l, len(b))
		}
		if err := fn(typ, b[4:l]); err != nil {
			return err
		}
		// Attributes are padded to 4 bytes; the last one's padding
		// may be missing.
		next := (l + 3) &^ 3
		if next > len(b) {
			next = len(b)
		}
		b = b[next:]
	}
	return nil
}

func be16(v []byte) (uint16, error) {
	if len(v) != 2 {
		return 0, malformed("16-bit attribute of %d bytes", len(v))
	}
	return binary.BigEndian.Uint16(v), nil
}

func be32(v []byte) (uint32, error) {
	if len(v) != 4 {
		return 0, malformed("32-bit attribute of %d bytes", len(v))
	}
	return binary.BigEndian.Uint32(v), nil
}

func be64(v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, malformed("64-bit attribute of %d bytes", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// ParseFlow reads a ctnetlink entry message (the data after the netlink
// header: nfgenmsg and attributes), as a dump or an event carries it.
// Attributes it does not know are skipped; an entry without an original
// tuple is an error.
func ParseFlow(b []byte) (Flow, error) {
	if len(b) < nfgenmsgLen {
		return Flow{}, malformed("message of %d bytes, want at least %d", len(b), nfgenmsgLen)
	}
	var (
		f        Flow
		hasTuple bool
	)
	err := walkAttrs(b[nfgenmsgLen:], func(typ uint16, v []byte) error {
		var err error
		switch typ {
		case ctaTupleOrig:
			f.Tuple, err = parseTuple(v)
			hasTuple = err == nil
		case ctaCountersOrig:
			f.Orig, err = parseCounters(v)
			f.HasCounters = f.HasCounters || err == nil
		case ctaCountersReply:
			f.Reply, err = parseCounters(v)
			f.HasCounters = f.HasCounters || err == nil
		case ctaMark:
			f.Mark, err = be32(v)
		case ctaID:
			f.ID, err = be32(v)
		case ctaZone:
			f.Zone, err = be16(v)
		case ctaTimeout:
			f.Timeout, err = be32(v)
			f.HasTimeout = err == nil
		case ctaProtoinfo:
			f.TCPState, err = parseTCPState(v)
		}
		return err
	})
	if err != nil {
		return Flow{}, err
	}
	if !hasTuple {
		return Flow{}, malformed("entry without an original tuple")
	}
	return f, nil
}

// parseTuple reads CTA_TUPLE_ORIG's nested CTA_TUPLE_IP and
// CTA_TUPLE_PROTO. Ports are read for TCP, UDP, UDP-Lite, SCTP and DCCP;
// other protocols have none here.
func parseTuple(b []byte) (flow.Tuple, error) {
	var t flow.Tuple
	var hasIP, hasProto bool
	err := walkAttrs(b, func(typ uint16, v []byte) error {
		switch typ {
		case ctaTupleIP:
			hasIP = true
			return walkAttrs(v, func(typ uint16, v []byte) error {
				var dst *netip.Addr
				switch typ {
				case ctaIPv4Src, ctaIPv6Src:
					dst = &t.Src
				case ctaIPv4Dst, ctaIPv6Dst:
					dst = &t.Dst
				default:
					return nil
				}
				want := 4
				if typ == ctaIPv6Src || typ == ctaIPv6Dst {
					want = 16
				}
				if len(v) != want {
					return malformed("address attribute %d of %d bytes", typ, len(v))
				}
				a, _ := netip.AddrFromSlice(v)
				*dst = a.Unmap()
				return nil
			})
		case ctaTupleProto:
			hasProto = true
			return walkAttrs(v, func(typ uint16, v []byte) error {
				var err error
				switch typ {
				case ctaProtoNum:
					if len(v) != 1 {
						return malformed("protocol attribute of %d bytes", len(v))
					}
					t.Proto = flow.Proto(v[0])
				case ctaProtoSrc:
					t.SrcPort, err = be16(v)
				case ctaProtoDst:
					t.DstPort, err = be16(v)
				}
				return err
			})
		}
		return nil
	})
	if err != nil {
		return flow.Tuple{}, err
	}
	if !hasIP || !hasProto || !t.Src.IsValid() || !t.Dst.IsValid() || t.Src.Is4() != t.Dst.Is4() {
		return flow.Tuple{}, malformed("incomplete tuple %v", t)
	}
	return t, nil
}

// parseTCPState reads the state from a CTA_PROTOINFO nest: 0 for a
// protocol other than TCP.
func parseTCPState(b []byte) (TCPState, error) {
	var st TCPState
	err := walkAttrs(b, func(typ uint16, v []byte) error {
		if typ != ctaProtoinfoTCP {
			return nil
		}
		return walkAttrs(v, func(typ uint16, v []byte) error {
			if typ != ctaTCPState {
				return nil
			}
			if len(v) != 1 {
				return malformed("tcp state attribute of %d bytes", len(v))
			}
			st = TCPState(v[0])
			return nil
		})
	})
	return st, err
}

// parseCounters reads a CTA_COUNTERS_ORIG or _REPLY nest.
func parseCounters(b []byte) (Counters, error) {
	var c Counters
	err := walkAttrs(b, func(typ uint16, v []byte) error {
		var err error
		var n uint32
		switch typ {
		case ctaCountPackets:
			c.Packets, err = be64(v)
		case ctaCountBytes:
			c.Bytes, err = be64(v)
		case ctaCount32Pkts:
			n, err = be32(v)
			c.Packets = uint64(n)
		case ctaCount32Bytes:
			n, err = be32(v)
			c.Bytes = uint64(n)
		}
		return err
	})
	return c, err
}
