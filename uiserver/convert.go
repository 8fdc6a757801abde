package uiserver

import (
	"net/netip"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/flow"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// Conversions between the APIs' types and the internal ones, at the
// boundary. What the agent sends is trusted as far as its content goes (it
// runs as root), but it is still parsed defensively: an unparsable address
// becomes the zero Addr, which no rule with a destination matches.

func actionFromAgent(a agentv1.Action) flow.Action {
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

func actionToAgent(a flow.Action) agentv1.Action {
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

func actionToRules(a flow.Action) rulesv1.Action {
	switch a {
	case flow.ActionAllow:
		return rulesv1.Action_ACTION_ALLOW
	case flow.ActionDeny:
		return rulesv1.Action_ACTION_DENY
	case flow.ActionReject:
		return rulesv1.Action_ACTION_REJECT
	}
	return rulesv1.Action_ACTION_UNSPECIFIED
}

func protoFromAgent(p agentv1.Protocol) flow.Proto {
	switch p {
	case agentv1.Protocol_PROTOCOL_TCP:
		return flow.TCP
	case agentv1.Protocol_PROTOCOL_UDP:
		return flow.UDP
	case agentv1.Protocol_PROTOCOL_ICMP:
		return flow.ICMP
	case agentv1.Protocol_PROTOCOL_ICMPV6:
		return flow.ICMPv6
	}
	return 0
}

func protoToAgent(p flow.Proto) agentv1.Protocol {
	switch p {
	case flow.TCP:
		return agentv1.Protocol_PROTOCOL_TCP
	case flow.UDP:
		return agentv1.Protocol_PROTOCOL_UDP
	case flow.ICMP:
		return agentv1.Protocol_PROTOCOL_ICMP
	case flow.ICMPv6:
		return agentv1.Protocol_PROTOCOL_ICMPV6
	}
	return agentv1.Protocol_PROTOCOL_UNSPECIFIED
}

func parseAddr(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.Unmap().String()
}

func port(p uint32) uint16 {
	if p > 0xffff {
		return 0
	}
	return uint16(p)
}

func tupleFromAgent(f *agentv1.Flow) flow.Tuple {
	return flow.Tuple{
		Proto:   protoFromAgent(f.GetProtocol()),
		Src:     parseAddr(f.GetSrcIp()),
		Dst:     parseAddr(f.GetDstIp()),
		SrcPort: port(f.GetSrcPort()),
		DstPort: port(f.GetDstPort()),
	}
}

func tupleToAgent(t flow.Tuple) *agentv1.Flow {
	f := &agentv1.Flow{
		Protocol: protoToAgent(t.Proto),
		SrcIp:    addrString(t.Src), SrcPort: uint32(t.SrcPort),
		DstIp: addrString(t.Dst), DstPort: uint32(t.DstPort),
	}
	if t.Dst.IsValid() {
		f.IpVersion = 4
		if t.IPv6() {
			f.IpVersion = 6
		}
	}
	return f
}

func processFromAgent(p *agentv1.Process) flow.Process {
	return flow.Process{
		PID: p.GetPid(), TGID: p.GetTgid(), PPID: p.GetPpid(), UID: p.GetUid(), GID: p.GetGid(),
		Comm: p.GetComm(), Exe: p.GetExe(), Args: p.GetArgs(), Source: p.GetIdentifiedBy(),
	}
}

func processToAgent(p flow.Process) *agentv1.Process {
	return &agentv1.Process{
		Pid: p.PID, Tgid: p.TGID, Ppid: p.PPID, Uid: p.UID, Gid: p.GID,
		Comm: p.Comm, Exe: p.Exe, Args: p.Args, IdentifiedBy: p.Source,
	}
}

func tsOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
