package procfs

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/sockdiag"
)

// findRaw finds the raw socket that sent t in /proc/net/raw{,6}, whose
// format is that of the ping table, with the socket's protocol number in
// the local port field (this kernel has no raw sock_diag handler,
// CONFIG_INET_RAW_DIAG). A raw socket of t's protocol or of IPPROTO_RAW
// (which sends any protocol with its own header), connected to t's
// destination and bound to its source or to none, may have sent it.
//
// The socket that fits best (rawScore) is taken. SECURITY: a raw socket
// names no flow, so two that fit equally well are ambiguous: the packet is
// then left unattributed (the system policy for its UID, which the queue
// reports) rather than named after a guess.
func (r *Resolver) findRaw(t flow.Tuple, v4 bool) (sockdiag.Socket, error) {
	families := []uint8{unix.AF_INET6}
	if v4 {
		// IPv4 packets come from AF_INET raw sockets, or from AF_INET6
		// ones with IPV6_HDRINCL and a v4-mapped destination.
		families = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	var found []sockdiag.Socket
	best := -1
	for _, fam := range families {
		socks, err := r.sockTable("raw", fam)
		if err != nil {
			return sockdiag.Socket{}, fmt.Errorf("read raw sockets: %w", err)
		}
		for _, s := range socks {
			switch sc := rawScore(s, t); {
			case sc > best:
				best, found = sc, append(found[:0], s)
			case sc == best && sc >= 0:
				found = append(found, s)
			}
		}
	}
	switch len(found) {
	case 0:
		return sockdiag.Socket{}, fmt.Errorf("no raw socket of protocol %v: %w", t.Proto, ErrNotFound)
	case 1:
		return found[0], nil
	}
	return sockdiag.Socket{}, fmt.Errorf("%d raw sockets of protocol %v could have sent it: %w", len(found), t.Proto, ErrNotFound)
}

// rawScore is -1 when the raw socket s cannot have sent t or is not
// connected to t's destination, else how closely it fits: bound to t's
// source counts 1, of t's own protocol (not IPPROTO_RAW) 1.
func rawScore(s sockdiag.Socket, t flow.Tuple) int {
	score := 0
	switch num := s.Local.Port(); {
	case num == uint16(t.Proto):
		score++
	case num != unix.IPPROTO_RAW:
		return -1
	}
	switch la := s.Local.Addr(); {
	case la == t.Src.Unmap():
		score++
	case !la.IsUnspecified():
		return -1
	}
	// SECURITY: only a socket connected to the destination is taken. An
	// unconnected one (a listener, say) may send anywhere, and when the
	// sender has already closed its socket it would be the only one left
	// and be named in its place.
	if s.Remote.Addr() != t.Dst.Unmap() {
		return -1
	}
	if s.Inode == 0 {
		return -1
	}
	return score
}
