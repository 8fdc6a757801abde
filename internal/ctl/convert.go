package ctl

import (
	"net/netip"

	"github.com/bastion-fw/bastion/internal/flow"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// processFromProto and tupleFromProto turn what the rules service reports
// about a connection back into the shared types rules.ForPrompt takes.

func processFromProto(p *agentv1.Process) flow.Process {
	return flow.Process{
		PID: p.GetPid(), TGID: p.GetTgid(), PPID: p.GetPpid(), UID: p.GetUid(), GID: p.GetGid(),
		Comm: p.GetComm(), Exe: p.GetExe(), Args: p.GetArgs(), Source: p.GetIdentifiedBy(),
	}
}

func tupleFromProto(f *agentv1.Flow) flow.Tuple {
	t := flow.Tuple{SrcPort: uint16(f.GetSrcPort()), DstPort: uint16(f.GetDstPort())}
	switch f.GetProtocol() {
	case agentv1.Protocol_PROTOCOL_TCP:
		t.Proto = flow.TCP
	case agentv1.Protocol_PROTOCOL_UDP:
		t.Proto = flow.UDP
	case agentv1.Protocol_PROTOCOL_ICMP:
		t.Proto = flow.ICMP
	case agentv1.Protocol_PROTOCOL_ICMPV6:
		t.Proto = flow.ICMPv6
	}
	// Unparsable addresses stay invalid; ForPrompt rejects scopes that need them.
	t.Src, _ = netip.ParseAddr(f.GetSrcIp())
	t.Dst, _ = netip.ParseAddr(f.GetDstIp())
	return t
}
