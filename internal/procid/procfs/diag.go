package procfs

import (
	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/sockdiag"
)

// matchScore says how well a socket matches a flow's tuple: -1 for not at
// all, higher for more specific. A connected socket beats a bound one beats a
// wildcard one, as in the kernel's own lookup; a socket with an inode beats a
// TIME_WAIT or request socket (inode 0), which no process holds.
func matchScore(s sockdiag.Socket, t flow.Tuple) int {
	src, dst := t.Src.Unmap(), t.Dst.Unmap()
	if s.Local.Port() != t.SrcPort {
		return -1
	}
	score := 0
	switch la := s.Local.Addr(); {
	case la == src:
		score += 2
	case la.IsUnspecified():
		if src.Is4() && s.Family == unix.AF_INET6 && (!s.V6Wildcard() || s.V6Only) {
			return -1 // "::" of a v6-only socket takes no IPv4
		}
		if src.Is6() && s.Family == unix.AF_INET {
			return -1
		}
	default:
		return -1
	}
	switch ra := s.Remote.Addr(); {
	case ra == dst && s.Remote.Port() == t.DstPort:
		score += 4
	case t.Proto != flow.TCP && ra.IsUnspecified() && s.Remote.Port() == 0:
		// Unconnected UDP or ping socket: sends anywhere.
	default:
		return -1
	}
	if s.Inode != 0 {
		score++
	}
	return score
}
