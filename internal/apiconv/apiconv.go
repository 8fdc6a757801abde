package apiconv

import (
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/bastion-fw/bastion/internal/dnsnames"
	"github.com/bastion-fw/bastion/internal/flow"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// Action converts an API action; unknown values become flow.ActionNone.
func Action(a agentv1.Action) flow.Action {
	switch a {
	case agentv1.Action_ACTION_ALLOW:
		return flow.ActionAllow
	case agentv1.Action_ACTION_DENY:
		return flow.ActionDeny
	case agentv1.Action_ACTION_REJECT:
		return flow.ActionReject
	}
	return flow.ActionNone
}

// ActionProto is the inverse of Action.
func ActionProto(a flow.Action) agentv1.Action {
	switch a {
	case flow.ActionAllow:
		return agentv1.Action_ACTION_ALLOW
	case flow.ActionDeny:
		return agentv1.Action_ACTION_DENY
	case flow.ActionReject:
		return agentv1.Action_ACTION_REJECT
	}
	return agentv1.Action_ACTION_UNSPECIFIED
}

// protoNames maps the protocols the API has a name for.
var protoNames = map[flow.Proto]agentv1.Protocol{
	flow.TCP: agentv1.Protocol_PROTOCOL_TCP, flow.UDP: agentv1.Protocol_PROTOCOL_UDP,
	flow.ICMP: agentv1.Protocol_PROTOCOL_ICMP, flow.ICMPv6: agentv1.Protocol_PROTOCOL_ICMPV6,
	flow.UDPLite: agentv1.Protocol_PROTOCOL_UDPLITE, flow.SCTP: agentv1.Protocol_PROTOCOL_SCTP,
	flow.DCCP: agentv1.Protocol_PROTOCOL_DCCP, flow.GRE: agentv1.Protocol_PROTOCOL_GRE,
}

// Proto converts an API protocol: number, when set (1-255), says which,
// else the name; unknown values become 0.
func Proto(p agentv1.Protocol, number uint32) flow.Proto {
	if number != 0 {
		if number > 255 {
			return 0
		}
		return flow.Proto(number)
	}
	for fp, ap := range protoNames {
		if ap == p {
			return fp
		}
	}
	return 0
}

// ProtoProto is the inverse of Proto: the API's name for p
// (PROTOCOL_OTHER when it has none) and p's number.
func ProtoProto(p flow.Proto) (agentv1.Protocol, uint32) {
	if p == 0 {
		return agentv1.Protocol_PROTOCOL_UNSPECIFIED, 0
	}
	if ap, ok := protoNames[p]; ok {
		return ap, uint32(p)
	}
	return agentv1.Protocol_PROTOCOL_OTHER, uint32(p)
}

// FlowProtoName is the name of a flow's protocol for people: "udplite",
// "proto-253" (as flow.Proto.String).
func FlowProtoName(f *agentv1.Flow) string {
	return Proto(f.GetProtocol(), f.GetProtocolNumber()).String()
}

// AddrString formats a for the API: IPv4-mapped addresses as IPv4, the
// invalid address as "".
func AddrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.Unmap().String()
}

func parseAddr(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

func port(p uint32) uint16 {
	if p > 0xffff {
		return 0
	}
	return uint16(p)
}

// Tuple converts an API flow.
func Tuple(f *agentv1.Flow) flow.Tuple {
	return flow.Tuple{
		Proto:   Proto(f.GetProtocol(), f.GetProtocolNumber()),
		Src:     parseAddr(f.GetSrcIp()),
		Dst:     parseAddr(f.GetDstIp()),
		SrcPort: port(f.GetSrcPort()),
		DstPort: port(f.GetDstPort()),
	}
}

// FlowProto is the inverse of Tuple.
func FlowProto(t flow.Tuple) *agentv1.Flow {
	f := &agentv1.Flow{
		SrcIp: AddrString(t.Src), SrcPort: uint32(t.SrcPort),
		DstIp: AddrString(t.Dst), DstPort: uint32(t.DstPort),
	}
	f.Protocol, f.ProtocolNumber = ProtoProto(t.Proto)
	if t.Dst.IsValid() {
		f.IpVersion = 4
		if t.IPv6() {
			f.IpVersion = 6
		}
	}
	return f
}

// Process converts an API process.
func Process(p *agentv1.Process) flow.Process {
	return flow.Process{
		PID: p.GetPid(), TGID: p.GetTgid(), PPID: p.GetPpid(), UID: p.GetUid(), GID: p.GetGid(),
		Comm: p.GetComm(), Exe: p.GetExe(), Args: p.GetArgs(), Source: p.GetIdentifiedBy(),
		MntNS: p.GetMntNs(), ExeDev: p.GetExeDev(), ExeIno: p.GetExeIno(),
		ExeIdentity: ExeIdentity(p.GetExeIdentity()),
	}
}

// ProcessProto is the inverse of Process, except that invalid UTF-8 in
// Comm, Exe and Args becomes U+FFFD: a protobuf string must be UTF-8, and
// one process with a byte like 0xff in its argv would otherwise make every
// message that names it fail to marshal (a pending list, a stream).
func ProcessProto(p flow.Process) *agentv1.Process {
	return &agentv1.Process{
		Pid: p.PID, Tgid: p.TGID, Ppid: p.PPID, Uid: p.UID, Gid: p.GID,
		Comm: validUTF8(p.Comm), Exe: validUTF8(p.Exe), Args: validArgs(p.Args), IdentifiedBy: p.Source,
		MntNs: p.MntNS, ExeDev: p.ExeDev, ExeIno: p.ExeIno,
		ExeIdentity: ExeIdentityProto(p.ExeIdentity),
	}
}

func validUTF8(s string) string { return strings.ToValidUTF8(s, "\ufffd") }

// validArgs returns args itself when every argument is valid UTF-8 (the
// usual case: the slice is shared, never modified), else a fixed copy.
func validArgs(args []string) []string {
	for i, a := range args {
		if !utf8.ValidString(a) {
			out := slices.Clone(args)
			for j := i; j < len(out); j++ {
				out[j] = validUTF8(out[j])
			}
			return out
		}
	}
	return args
}

// ExeIdentity converts an API executable identity; unknown values become
// flow.ExeUnchecked.
func ExeIdentity(i agentv1.ExeIdentity) flow.ExeIdentity {
	switch i {
	case agentv1.ExeIdentity_EXE_IDENTITY_HOST:
		return flow.ExeHost
	case agentv1.ExeIdentity_EXE_IDENTITY_DELETED:
		return flow.ExeDeleted
	case agentv1.ExeIdentity_EXE_IDENTITY_OTHER_MOUNT_NS_HOST_FILE:
		return flow.ExeOtherNSHostFile
	case agentv1.ExeIdentity_EXE_IDENTITY_OTHER_MOUNT_NS:
		return flow.ExeOtherNS
	}
	return flow.ExeUnchecked
}

// ExeIdentityProto is the inverse of ExeIdentity.
func ExeIdentityProto(i flow.ExeIdentity) agentv1.ExeIdentity {
	switch i {
	case flow.ExeHost:
		return agentv1.ExeIdentity_EXE_IDENTITY_HOST
	case flow.ExeDeleted:
		return agentv1.ExeIdentity_EXE_IDENTITY_DELETED
	case flow.ExeOtherNSHostFile:
		return agentv1.ExeIdentity_EXE_IDENTITY_OTHER_MOUNT_NS_HOST_FILE
	case flow.ExeOtherNS:
		return agentv1.ExeIdentity_EXE_IDENTITY_OTHER_MOUNT_NS
	}
	return agentv1.ExeIdentity_EXE_IDENTITY_UNCHECKED
}

// ExeText is the executable of p as people should read it: the path, and
// for a process whose path is not the host's file, what it is (deleted, in
// another mount namespace, unverified). "" when unknown.
func ExeText(p *agentv1.Process) string {
	return Process(p).ExeDisplay()
}

// Host returns an API host name in the form rules compare (lower case, no
// trailing dot), or "" when it is not a plain host name: a name from the
// agent came from a DNS answer, which anyone may have sent.
func Host(s string) string {
	h, ok := dnsnames.Normalize(s)
	if !ok {
		return ""
	}
	return h
}
