package procfs

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"sync"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/nlconn"
	"github.com/bastion-fw/bastion/internal/sockdiag"
)

// ErrNotFound means no process owns the flow's socket: there is no such
// socket, or its owner exited, or it sits in TIME_WAIT.
var ErrNotFound = errors.New("procfs: no process owns this flow")

// Resolver finds the process behind a flow with sock_diag and /proc, the
// fallback for kernels without a usable eBPF mechanism. It is safe for
// concurrent use; calls are serialised.
type Resolver struct {
	fsys fs.FS
	ns   *os.File // a duplicate of New's ns, nil for the caller's

	mu   sync.Mutex
	conn *netlink.Conn
	fds  *inodeScanner
}

// New opens a NETLINK_SOCK_DIAG socket inside network namespace ns (nil: the
// caller's) and uses fsys, usually os.DirFS("/proc"), for /proc. The socket
// is created on a thread that entered ns and stays bound to ns, so ns need
// not stay open afterwards (New keeps its own duplicate for reading
// /proc/thread-self/net inside ns). fsys must show the processes that hold sockets in
// ns, that is, be the /proc of their PID namespace.
func New(ns *os.File, fsys fs.FS) (*Resolver, error) {
	conn, err := nlconn.Dial(ns, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open sock_diag socket: %w", err)
	}
	r := &Resolver{fsys: fsys, conn: conn, fds: newInodeScanner(fsys)}
	if ns != nil {
		fd, err := unix.FcntlInt(ns.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("duplicate network namespace descriptor: %w", err)
		}
		r.ns = os.NewFile(uintptr(fd), ns.Name())
	}
	return r, nil
}

// Close releases the netlink socket.
func (r *Resolver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var nsErr error
	if r.ns != nil {
		nsErr = r.ns.Close()
	}
	if err := errors.Join(r.conn.Close(), nsErr); err != nil {
		return fmt.Errorf("close resolver: %w", err)
	}
	return nil
}

// Resolve finds the process that owns the socket carrying t, a flow as the
// sending host sees it (Src is local).
//
// TCP sockets match in every state (SYN_SENT included) on the exact 4-tuple.
// UDP sockets match on local port and address, connected to t.Dst or not; the
// most specific socket wins, as in the kernel. ICMP and ICMPv6 echo flows
// match ping sockets (socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)) by echo
// identifier, through inet_diag where the kernel supports it and otherwise
// through /proc/net/icmp{,6} as seen from inside the namespace; if neither
// works the error wraps errors.ErrUnsupported. Raw ICMP sockets (setuid or
// CAP_NET_RAW ping) are not found.
//
// When the socket exists but no process holds it (the owner exited, or the
// socket is in TIME_WAIT), Resolve returns a Process with only UID (the
// socket's owner as the kernel recorded it, 0 for TIME_WAIT) and Source set,
// and an error wrapping ErrNotFound. When there is no socket at all the error
// wraps ErrNotFound too and the Process is zero.
//
// UID in a found Process is the owning process's real UID, which differs
// from the socket's UID when the socket was handed over or the process
// changed identity since creating it.
func (r *Resolver) Resolve(t flow.Tuple) (flow.Process, error) {
	if !t.Src.IsValid() || !t.Dst.IsValid() {
		return flow.Process{}, fmt.Errorf("resolve %v: invalid address", t)
	}
	r.mu.Lock()
	defer r.mu.Unlock()

	s, err := r.findSocket(t)
	if err != nil {
		return flow.Process{}, fmt.Errorf("resolve %v: %w", t, err)
	}
	orphan := flow.Process{UID: s.UID, Source: Source}
	if s.Inode == 0 {
		return orphan, fmt.Errorf("resolve %v: socket in state %d has no owner: %w", t, s.State, ErrNotFound)
	}
	inode := uint64(s.Inode)
	// The process can exit or drop the socket between the scan and the
	// read: try again once with a fresh scan before giving up.
	for range 2 {
		tgid, err := r.fds.find(inode)
		if err != nil {
			return orphan, fmt.Errorf("resolve %v: %w", t, err)
		}
		p, err := ReadProcess(r.fsys, tgid)
		if err == nil && r.fds.holds(r.fds.cache[inode], inode) {
			p.Socket = inode
			return p, nil
		}
		delete(r.fds.cache, inode)
	}
	return orphan, fmt.Errorf("resolve %v: owner of socket inode %d vanished: %w", t, inode, ErrNotFound)
}

// findSocket asks the kernel for the socket carrying t: first an exact
// lookup, which is cheap, then a dump of the protocol's sockets filtered
// here, which also finds what the exact lookup cannot (an unconnected UDP
// socket bound to another address family, for one).
func (r *Resolver) findSocket(t flow.Tuple) (sockdiag.Socket, error) {
	v4 := t.Dst.Unmap().Is4()
	switch t.Proto {
	case flow.TCP, flow.UDP, flow.UDPLite:
	case flow.ICMP, flow.ICMPv6:
		if s, err := r.findPing(t, v4); err == nil || !errors.Is(err, ErrNotFound) {
			return s, err
		}
		// Not a ping socket's: other ICMP types, and echo from raw
		// sockets.
		return r.findRaw(t, v4)
	default:
		// SCTP and DCCP sockets have diag modules of their own (this
		// kernel has neither protocol); every other protocol is sent
		// from raw sockets.
		return r.findRaw(t, v4)
	}
	src := netip.AddrPortFrom(t.Src.Unmap(), t.SrcPort)
	dst := netip.AddrPortFrom(t.Dst.Unmap(), t.DstPort)
	family := uint8(unix.AF_INET6)
	if v4 {
		family = unix.AF_INET
	}

	if t.Proto != flow.TCP && t.Proto != flow.UDP && t.Proto != flow.UDPLite {
		return sockdiag.Socket{}, fmt.Errorf("no %v socket diagnosis", t.Proto)
	}
	{
		a, b := src, dst
		if t.Proto != flow.TCP {
			// udp_dump_one takes source and destination the other
			// way round ("swapped for historical reasons").
			a, b = dst, src
		}
		if s, ok := r.exact(family, uint8(t.Proto), a, b); ok && matchScore(s, t) >= 0 && s.Inode != 0 {
			return s, nil
		}
	}

	families := []uint8{family}
	if v4 {
		families = append(families, unix.AF_INET6) // dual-stack sockets
	}
	best, bestScore := sockdiag.Socket{}, -1
	for _, fam := range families {
		socks, err := r.dump(fam, uint8(t.Proto))
		if err != nil {
			return sockdiag.Socket{}, err
		}
		for _, s := range socks {
			if sc := matchScore(s, t); sc > bestScore {
				best, bestScore = s, sc
			}
		}
	}
	if bestScore < 0 {
		return sockdiag.Socket{}, fmt.Errorf("no such socket: %w", ErrNotFound)
	}
	return best, nil
}

// ConnectedUDPCookie returns the socket cookie of the UDP socket connected
// from t.Src to t.Dst, found with one exact sock_diag lookup (no /proc
// scan); ok is false when there is none: closed, or not connected there.
func (r *Resolver) ConnectedUDPCookie(t flow.Tuple) (cookie uint64, ok bool) {
	if t.Proto != flow.UDP || !t.Src.IsValid() || !t.Dst.IsValid() {
		return 0, false
	}
	src := netip.AddrPortFrom(t.Src.Unmap(), t.SrcPort)
	dst := netip.AddrPortFrom(t.Dst.Unmap(), t.DstPort)
	family := uint8(unix.AF_INET6)
	if dst.Addr().Is4() {
		family = unix.AF_INET // dual-stack sockets are found too
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// udp_dump_one takes source and destination the other way round.
	s, ok := r.exact(family, unix.IPPROTO_UDP, dst, src)
	if !ok || s.Local.Port() != src.Port() || s.Remote != dst || s.Cookie == 0 {
		return 0, false
	}
	if la := s.Local.Addr(); la != src.Addr() && !la.IsUnspecified() {
		return 0, false
	}
	return s.Cookie, true
}

// exact asks for one socket; ok is false on any error, including "no such
// socket" (ENOENT).
func (r *Resolver) exact(family, proto uint8, src, dst netip.AddrPort) (sockdiag.Socket, bool) {
	msgs, err := r.conn.Execute(netlink.Message{
		Header: netlink.Header{Type: sockdiag.ByFamily, Flags: netlink.Request},
		Data:   sockdiag.Request(family, proto, src, dst),
	})
	if err != nil || len(msgs) != 1 {
		return sockdiag.Socket{}, false
	}
	s, err := sockdiag.ParseMessage(msgs[0].Data)
	return s, err == nil
}

// dump lists the sockets of one family and protocol in every state.
func (r *Resolver) dump(family, proto uint8) ([]sockdiag.Socket, error) {
	msgs, err := r.conn.Execute(netlink.Message{
		Header: netlink.Header{Type: sockdiag.ByFamily, Flags: netlink.Request | netlink.Dump},
		Data:   sockdiag.Request(family, proto, netip.AddrPort{}, netip.AddrPort{}),
	})
	if err != nil {
		return nil, fmt.Errorf("dump sockets of family %d protocol %d: %w", family, proto, err)
	}
	socks := make([]sockdiag.Socket, 0, len(msgs))
	for _, m := range msgs {
		if m.Header.Type != sockdiag.ByFamily {
			continue
		}
		s, err := sockdiag.ParseMessage(m.Data)
		if err != nil {
			return nil, fmt.Errorf("dump sockets of family %d protocol %d: %w", family, proto, err)
		}
		socks = append(socks, s)
	}
	return socks, nil
}

// findPing finds the ping socket sending t in /proc/net/icmp{,6}: there is
// no inet_diag handler for ping sockets (the case up to at least Linux
// 6.18).
func (r *Resolver) findPing(t flow.Tuple, v4 bool) (sockdiag.Socket, error) {
	family := uint8(unix.AF_INET6)
	if v4 {
		family = unix.AF_INET
	}
	socks, err := r.pingTable(family)
	if err != nil {
		return sockdiag.Socket{}, fmt.Errorf("sock_diag does not report ping sockets, and %w: %w", err, errors.ErrUnsupported)
	}
	best, bestScore := sockdiag.Socket{}, -1
	for _, s := range socks {
		if sc := matchScore(s, t); sc > bestScore {
			best, bestScore = s, sc
		}
	}
	if bestScore < 0 {
		return sockdiag.Socket{}, fmt.Errorf("no such ping socket: %w", ErrNotFound)
	}
	return best, nil
}

// pingTable reads the ping sockets of r's network namespace from
// /proc/thread-self/net/icmp{,6}.
func (r *Resolver) pingTable(family uint8) ([]sockdiag.Socket, error) {
	socks, err := r.sockTable("icmp", family)
	if err != nil {
		return nil, fmt.Errorf("read ping sockets: %w", err)
	}
	return socks, nil
}

// sockTable reads /proc/thread-self/net/<base>{,6} (the ping and raw
// socket tables share a format), on a thread inside r's network namespace.
func (r *Resolver) sockTable(base string, family uint8) ([]sockdiag.Socket, error) {
	name := "thread-self/net/" + base
	if family == unix.AF_INET6 {
		name += "6"
	}
	var b []byte
	err := netns.Do(r.ns, func() error {
		var err error
		b, err = readBounded(r.fsys, name, maxPingTableBytes)
		return err
	})
	if err != nil {
		return nil, err
	}
	return parsePingTable(b, family)
}
