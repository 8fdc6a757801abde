package flow

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Proto is an IP protocol number as it appears in the IP header (for IPv6,
// the last next-header value, after the extension headers).
type Proto uint8

// Protocols Bastion names. Every protocol is intercepted; these are the ones
// with a name in rules and displays (others read "proto-N").
const (
	ICMP    Proto = 1
	IGMP    Proto = 2
	TCP     Proto = 6
	UDP     Proto = 17
	DCCP    Proto = 33
	GRE     Proto = 47
	ESP     Proto = 50
	AH      Proto = 51
	ICMPv6  Proto = 58
	SCTP    Proto = 132
	UDPLite Proto = 136
)

var protoNames = map[Proto]string{
	ICMP: "icmp", IGMP: "igmp", TCP: "tcp", UDP: "udp", DCCP: "dccp", GRE: "gre",
	ESP: "esp", AH: "ah", ICMPv6: "icmpv6", SCTP: "sctp", UDPLite: "udplite",
}

// String is the protocol's name, or "proto-N" for one without a name here.
func (p Proto) String() string {
	if n, ok := protoNames[p]; ok {
		return n
	}
	return "proto-" + strconv.Itoa(int(p))
}

// HasPorts reports whether the protocol's header starts with a source and
// a destination port, which Tuple then carries: TCP, UDP, UDP-Lite, SCTP
// and DCCP.
func (p Proto) HasPorts() bool {
	switch p {
	case TCP, UDP, UDPLite, SCTP, DCCP:
		return true
	}
	return false
}

// ParseProto is the inverse of Proto.String: a name ("udplite"; also
// "ipv6-icmp" and "udp-lite", as iptables and /etc/protocols spell them),
// "proto-N" or a plain number N, for N from 1 to 255. 0 is refused: in a
// rule it would read as "any protocol".
func ParseProto(s string) (Proto, error) {
	switch s {
	case "ipv6-icmp":
		return ICMPv6, nil
	case "udp-lite":
		return UDPLite, nil
	}
	for p, n := range protoNames {
		if n == s {
			return p, nil
		}
	}
	num := strings.TrimPrefix(s, "proto-")
	if n, err := strconv.ParseUint(num, 10, 8); err == nil && n != 0 {
		return Proto(n), nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want a name such as tcp, udp, udplite, sctp, icmp, or a number 1-255)", s)
}

// Tuple identifies one flow as the sending host sees it.
//
// For protocols with ports (Proto.HasPorts) the ports are the transport
// ports. For ICMP and ICMPv6 echo requests SrcPort holds the echo identifier
// and DstPort is zero, which is how the kernel's ping sockets and conntrack
// key them too. Every other protocol, and every other ICMP type, has zero
// ports.
type Tuple struct {
	Proto   Proto
	Src     netip.Addr
	Dst     netip.Addr
	SrcPort uint16
	DstPort uint16
}

// IPv6 reports whether the flow is carried over IPv6 (IPv4-mapped addresses
// count as IPv4).
func (t Tuple) IPv6() bool { return t.Dst.Is6() && !t.Dst.Is4In6() }

func (t Tuple) String() string {
	return fmt.Sprintf("%s %s -> %s",
		t.Proto, netip.AddrPortFrom(t.Src, t.SrcPort), netip.AddrPortFrom(t.Dst, t.DstPort))
}

// Process is what Bastion knows about the program behind a connection.
//
// Mind the names: PID is the kernel's pid, which is the sending *thread's*
// ID; TGID is what ps, top and kill call the process ID. Show TGID as "PID".
type Process struct {
	PID  uint32 // thread ID of the sending thread (the kernel's pid)
	TGID uint32 // process ID as userspace knows it
	PPID uint32 // parent's TGID, 0 when unknown
	UID  uint32
	GID  uint32
	Comm string   // the kernel's 16-byte task name
	Exe  string   // absolute path of the executable, "" when unknown
	Args []string // argv, possibly truncated, nil when unknown
	// StartTime is the task's start time in nanoseconds since boot; with
	// TGID it names a process uniquely even after PID reuse.
	StartTime uint64
	// Source names the mechanism that identified the process, e.g.
	// "netfilter-link", "sockops", "procfs".
	Source string
	// Socket is the inode of the socket that sent the flow's first packet,
	// 0 when unknown. It tells a retransmission (same socket) from a new
	// connection that happens to reuse the same 5-tuple.
	Socket uint64
	// SocketCookie is that socket's cookie, 0 when unknown. Cookies are
	// never reused; it names the socket where Socket is unknown (the
	// sockops mechanism knows the cookie, not the inode).
	SocketCookie uint64
	// MntNS is the inode number of the mount namespace the process runs
	// in (its /proc/PID/ns/mnt), 0 when unknown.
	MntNS uint32
	// ExeDev and ExeIno identify the file the process runs, as the kernel
	// sees it: the inode and its file system's dev_t (kernel encoding,
	// MAJOR<<20|MINOR). 0 when unknown.
	ExeDev uint32
	ExeIno uint64
	// ExeIdentity says whether Exe is the host's file (see ExeVerified).
	ExeIdentity ExeIdentity
}

// Known reports whether the process was identified at all.
func (p Process) Known() bool { return p.TGID != 0 }

// Action is what happens to a held connection.
type Action uint8

const (
	ActionNone   Action = iota // no decision
	ActionAllow                // let the packet pass
	ActionDeny                 // drop silently; the application times out
	ActionReject               // drop and tell the application at once (TCP RST, ICMP unreachable)
)

func (a Action) String() string {
	switch a {
	case ActionAllow:
		return "allow"
	case ActionDeny:
		return "deny"
	case ActionReject:
		return "reject"
	}
	return "none"
}

// ParseAction parses "allow", "deny" (or "drop") and "reject".
func ParseAction(s string) (Action, error) {
	switch s {
	case "allow", "accept":
		return ActionAllow, nil
	case "deny", "drop":
		return ActionDeny, nil
	case "reject":
		return ActionReject, nil
	}
	return ActionNone, fmt.Errorf("unknown action %q (want allow, deny or reject)", s)
}
