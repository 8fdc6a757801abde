package procfs

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/sockdiag"
)

// findRaw finds the raw socket that sent t in /proc/net/raw{,6}, whose
// format is that of the ping table, with the socket's protocol number in
// the local port field (this kernel has no raw sock_diag handler,
// CONFIG_INET_RAW_DIAG). A raw socket of t's protocol or of IPPROTO_RAW
// (which sends any protocol with its own header) may have sent it, if its
// bound and connected addresses allow t's.
//
// SECURITY: a raw socket names no flow, so more than one candidate is
// ambiguous: the packet is then left unattributed (the system policy for
// its UID, which the queue reports) rather than named after a guess.
func (r *Resolver) findRaw(t flow.Tuple, v4 bool) (sockdiag.Socket, error) {
	families := []uint8{unix.AF_INET6}
	if v4 {
		// IPv4 packets come from AF_INET raw sockets, or from AF_INET6
		// ones with IPV6_HDRINCL and a v4-mapped destination.
		families = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	var found []sockdiag.Socket
	for _, fam := range families {
		name := "thread-self/net/raw"
		if fam == unix.AF_INET6 {
			name += "6"
		}
		var b []byte
		err := netns.Do(r.ns, func() error {
			var err error
			b, err = readBounded(r.fsys, name, maxPingTableBytes)
			return err
		})
		if err != nil {
			return sockdiag.Socket{}, fmt.Errorf("read raw sockets: %w", err)
		}
		socks, err := parsePingTable(b, fam)
		if err != nil {
			return sockdiag.Socket{}, fmt.Errorf("read raw sockets: %w", err)
		}
		for _, s := range socks {
			if rawMatches(s, t) {
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

// rawMatches reports whether the raw socket s can have sent t.
func rawMatches(s sockdiag.Socket, t flow.Tuple) bool {
	if num := s.Local.Port(); num != uint16(t.Proto) && num != unix.IPPROTO_RAW {
		return false
	}
	if la := s.Local.Addr(); !la.IsUnspecified() && la != t.Src.Unmap() {
		return false
	}
	if ra := s.Remote.Addr(); !ra.IsUnspecified() && ra != t.Dst.Unmap() {
		return false
	}
	return s.Inode != 0
}
