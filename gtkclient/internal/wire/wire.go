// Package wire turns what the rules service reports about a connection
// (agent API messages) back into the shared types rules.ForPrompt and
// rules.Covers take.
//
// Trust boundary: the messages come from the user's own rules service;
// unparsable addresses stay invalid, and rules.ForPrompt refuses scopes
// that need them.
package wire

import (
	"net/netip"

	"github.com/bastion-fw/bastion/internal/flow"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// Process converts a wire process.
func Process(p *agentv1.Process) flow.Process {
	return flow.Process{
		PID: p.GetPid(), TGID: p.GetTgid(), PPID: p.GetPpid(), UID: p.GetUid(), GID: p.GetGid(),
		Comm: p.GetComm(), Exe: p.GetExe(), Args: p.GetArgs(), Source: p.GetIdentifiedBy(),
	}
}

// Tuple converts a wire flow.
func Tuple(f *agentv1.Flow) flow.Tuple {
	t := flow.Tuple{Proto: Proto(f.GetProtocol()), SrcPort: uint16(f.GetSrcPort()), DstPort: uint16(f.GetDstPort())}
	t.Src, _ = netip.ParseAddr(f.GetSrcIp())
	t.Dst, _ = netip.ParseAddr(f.GetDstIp())
	return t
}

// Proto converts a wire protocol; 0 when unknown.
func Proto(p agentv1.Protocol) flow.Proto {
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
