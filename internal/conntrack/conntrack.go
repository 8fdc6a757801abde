package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/nlconn"
)

// ctnetlink constants from linux/netfilter/nfnetlink.h and
// linux/netfilter/nfnetlink_conntrack.h.
const (
	nfnlSubsysCTNetlink = 1
	ctMsgNew            = 0 // IPCTNL_MSG_CT_NEW, also the type of GET replies
	ctMsgGet            = 1 // IPCTNL_MSG_CT_GET
	ctMsgDelete         = 2 // IPCTNL_MSG_CT_DELETE
	nfgenmsgLen         = 4 // struct nfgenmsg

	ctaTupleOrig  = 1  // CTA_TUPLE_ORIG
	ctaMark       = 8  // CTA_MARK
	ctaID         = 12 // CTA_ID
	ctaTupleIP    = 1  // CTA_TUPLE_IP
	ctaTupleProto = 2  // CTA_TUPLE_PROTO
	ctaIPv4Src    = 1  // CTA_IP_V4_SRC
	ctaIPv4Dst    = 2  // CTA_IP_V4_DST
	ctaIPv6Src    = 3  // CTA_IP_V6_SRC
	ctaIPv6Dst    = 4  // CTA_IP_V6_DST
	ctaProtoNum   = 1  // CTA_PROTO_NUM
	ctaProtoSrc   = 2  // CTA_PROTO_SRC_PORT
	ctaProtoDst   = 3  // CTA_PROTO_DST_PORT
)

// ErrNotFound is returned (wrapped) when the table has no entry for a tuple.
var ErrNotFound = errors.New("no conntrack entry")

// Conn is a ctnetlink socket bound to one network namespace. It is safe for
// concurrent use; requests are serialised.
type Conn struct {
	c *netlink.Conn
}

// Open opens a ctnetlink socket inside network namespace ns (nil: the
// caller's). The socket stays in ns; ns need not stay open afterwards.
func Open(ns *os.File) (*Conn, error) {
	c, err := nlconn.Dial(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("open ctnetlink socket: %w", err)
	}
	return &Conn{c: c}, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return c.c.Close() }

// Delete removes the entry whose tuple, in either direction, is t. It
// returns an error wrapping ErrNotFound when there is none.
func (c *Conn) Delete(t flow.Tuple) error {
	req, err := request(ctMsgDelete, t)
	if err != nil {
		return fmt.Errorf("delete conntrack entry %v: %w", t, err)
	}
	if _, err := c.c.Execute(req); err != nil {
		return fmt.Errorf("delete conntrack entry %v: %w", t, notFound(err))
	}
	return nil
}

// Get returns the entry whose tuple, in either direction, is t (its ID,
// mark, counters and state), or an error wrapping ErrNotFound.
func (c *Conn) Get(t flow.Tuple) (Flow, error) {
	req, err := request(ctMsgGet, t)
	if err != nil {
		return Flow{}, fmt.Errorf("get conntrack entry %v: %w", t, err)
	}
	msgs, err := c.c.Execute(req)
	if err != nil {
		return Flow{}, fmt.Errorf("get conntrack entry %v: %w", t, notFound(err))
	}
	// The entry comes as IPCTNL_MSG_CT_NEW, followed by the
	// acknowledgement.
	for _, m := range msgs {
		if m.Header.Type == netlink.HeaderType(nfnlSubsysCTNetlink<<8|ctMsgNew) {
			f, err := ParseFlow(m.Data)
			if err != nil {
				return Flow{}, fmt.Errorf("get conntrack entry %v: %w", t, err)
			}
			return f, nil
		}
	}
	return Flow{}, fmt.Errorf("get conntrack entry %v: no entry in %d replies", t, len(msgs))
}

func notFound(err error) error {
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

// request builds the ctnetlink request of type msg (IPCTNL_MSG_CT_GET or
// IPCTNL_MSG_CT_DELETE) for the entry with original-direction tuple t. TCP,
// UDP and the IP version are taken from t; IPv4-mapped addresses are sent as
// IPv4, which is how the kernel tracks the packets of dual-stack sockets.
func request(msg uint8, t flow.Tuple) (netlink.Message, error) {
	if t.Proto != flow.TCP && t.Proto != flow.UDP {
		return netlink.Message{}, fmt.Errorf("protocol %v has no ports to address", t.Proto)
	}
	src, dst := t.Src.Unmap(), t.Dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return netlink.Message{}, fmt.Errorf("invalid address pair %v, %v", t.Src, t.Dst)
	}
	family, srcType, dstType := uint8(unix.AF_INET6), uint16(ctaIPv6Src), uint16(ctaIPv6Dst)
	if src.Is4() {
		family, srcType, dstType = unix.AF_INET, ctaIPv4Src, ctaIPv4Dst
	}
	ae := netlink.NewAttributeEncoder()
	ae.Nested(ctaTupleOrig, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(ctaTupleIP, func(ae *netlink.AttributeEncoder) error {
			ae.Bytes(srcType, src.AsSlice())
			ae.Bytes(dstType, dst.AsSlice())
			return nil
		})
		ae.Nested(ctaTupleProto, func(ae *netlink.AttributeEncoder) error {
			ae.Uint8(ctaProtoNum, uint8(t.Proto))
			// Ports are in network byte order (nla_get_be16).
			ae.Bytes(ctaProtoSrc, binary.BigEndian.AppendUint16(nil, t.SrcPort))
			ae.Bytes(ctaProtoDst, binary.BigEndian.AppendUint16(nil, t.DstPort))
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return netlink.Message{}, err
	}
	// struct nfgenmsg: family, version NFNETLINK_V0, res_id 0 (big endian).
	data := append([]byte{family, 0, 0, 0}, attrs...)
	return netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(nfnlSubsysCTNetlink<<8 | uint16(msg)),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: data,
	}, nil
}
