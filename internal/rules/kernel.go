package rules

import (
	"net/netip"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Instance is one connection key a rule names exactly: an executable path,
// a protocol, a destination address and port (0 for ICMP).
type Instance struct {
	Exe   string
	Proto flow.Proto
	Dst   netip.Addr
	Port  uint16
}

// ExactInstance returns the one key r names, when it names exactly one:
// an executable path without wildcards, a protocol (TCP, UDP, or ICMP
// without ports), a single destination address and a single port, and no
// operand the kernel cannot see (command line, hash, host name). The agent
// stores such rules' decisions in the kernel as soon as they are set;
// whether r is the rule that decides that key is for the Matcher to say.
func ExactInstance(r Rule) (Instance, bool) {
	if r.Exe == "" || r.Cmdline != "" || r.ExeSHA256 != "" || r.Host != "" || !r.Dst.IsValid() || !r.Dst.IsSingleIP() {
		return Instance{}, false
	}
	exe, ok := globLiteral(r.Exe)
	if !ok {
		return Instance{}, false
	}
	in := Instance{Exe: exe, Proto: r.Proto, Dst: r.Dst.Addr().Unmap()}
	switch r.Proto {
	case flow.TCP, flow.UDP:
		if r.PortMin == 0 || r.PortMin != r.PortMax {
			return Instance{}, false
		}
		in.Port = r.PortMin
	case flow.ICMP, flow.ICMPv6:
		if r.PortMin != 0 || r.PortMax != 0 {
			return Instance{}, false
		}
	default:
		return Instance{}, false
	}
	return in, true
}
