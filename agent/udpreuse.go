package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/conntrack"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/sockdiag"
)

// udpReuseGuard closes the UDP 5-tuple reuse gap.
//
// Only the first packet of a flow reaches the agent; later ones pass on the
// verdict conntrack keeps for the flow (ctstate ESTABLISHED, or the saved
// connmark), for 30 s after the last unanswered packet and 120 s once it was
// answered. A new UDP socket that sends from the same source address and
// port to the same destination within that time continues the old flow as
// far as conntrack can tell: without the guard it would pass, never asked
// about, on the verdict another program — maybe another user's — got.
//
// The guard listens to the kernel's notifications of destroyed UDP sockets
// and removes the conntrack entries of the flows the destroyed socket sent,
// so the next packet with that tuple is a new flow and is queued. A destroy
// notification names the socket's local address and port and, if it was
// connected, its peer, but no inode and no destinations of an unconnected
// socket (sendto): the guard keeps an index of the UDP flows the agent
// queued, by source port, to find those.
//
// SECURITY: the notification is asynchronous. The kernel frees the port at
// close() and notifies once the socket is freed, from a workqueue; a socket
// that binds the port and sends in between still rides the old verdict
// until the guard has removed the entry (see docs/security.md for the
// measured window). The guard then notices that another socket owns the
// tuple, counts it in Races and logs it; that socket's next packet is
// queued.
//
// Only the default conntrack zone is handled, and only flows the agent
// queued or that a connected socket names: a flow that began before the
// agent and whose unconnected socket is destroyed keeps its entry.
type udpReuseGuard struct {
	log    *slog.Logger
	watch  *sockdiag.DestroyWatcher
	owners *sockdiag.Lookup
	ct     *conntrack.Conn
	// forget drops the engine's retransmission verdicts of a tuple
	// given to a socket (Engine.ForgetRecent).
	forget func(t flow.Tuple, socket uint64)
	sent   *sentFlows
	// traffic, when set, is the traffic accounting's table: a followed
	// flow's last counts are read before its entry is deleted, when no
	// destroy notification will bring them (trafficTable.wantsFinal).
	traffic *trafficTable

	// Released counts conntrack entries removed after their socket was
	// destroyed; Races those of them another live socket already owned.
	Released, Races atomic.Uint64
}

// openUDPReuseGuard subscribes to UDP socket destroy notifications and
// opens the sock_diag and ctnetlink sockets, all inside ns (nil: the
// agent's own namespace).
func openUDPReuseGuard(ns *os.File, forget func(flow.Tuple, uint64), log *slog.Logger) (*udpReuseGuard, error) {
	g := &udpReuseGuard{log: log, forget: forget, sent: newSentFlows(sentFlowsGeneration)}
	var err error
	if g.watch, err = sockdiag.WatchUDPDestroy(ns); err != nil {
		return nil, err
	}
	if g.owners, err = sockdiag.OpenLookup(ns); err != nil {
		g.watch.Close()
		return nil, err
	}
	if g.ct, err = conntrack.Open(ns); err != nil {
		g.watch.Close()
		g.owners.Close()
		return nil, err
	}
	if err := g.verify(ns, verifyTimeout); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

// verifyTimeout bounds the start-up check; the kernel usually notifies
// within 100 us.
const verifyTimeout = 2 * time.Second

// verify checks that the kernel does what the guard relies on: ctnetlink
// answers, and closing a UDP socket in ns is notified. A kernel without
// inet_diag's UDP handler (CONFIG_INET_UDP_DIAG) accepts the subscription
// and then notifies nothing. Notifications of other sockets that arrive
// meanwhile are handled as usual.
func (g *udpReuseGuard) verify(ns *os.File, timeout time.Duration) error {
	probe := flow.Tuple{Proto: flow.UDP, Src: netip.IPv4Unspecified(), Dst: netip.IPv4Unspecified()}
	if _, err := g.ct.Get(probe); err != nil && !errors.Is(err, conntrack.ErrNotFound) {
		return fmt.Errorf("ctnetlink does not answer: %w", err)
	}
	var port uint16
	err := netns.Do(ns, func() error {
		c, err := net.ListenPacket("udp4", "0.0.0.0:0")
		if err != nil {
			return err
		}
		port = c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		return c.Close()
	})
	if err != nil {
		return fmt.Errorf("open a udp socket to check destroy notifications: %w", err)
	}
	if err := g.watch.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("check destroy notifications: %w", err)
	}
	defer g.watch.SetReadDeadline(time.Time{})
	for {
		socks, err := g.watch.Receive()
		if errors.Is(err, sockdiag.ErrLost) {
			continue
		}
		if err != nil {
			return fmt.Errorf("the kernel did not report a closed udp socket within %v (no CONFIG_INET_UDP_DIAG?): %w", timeout, err)
		}
		found := false
		for _, s := range socks {
			if s.Family == unix.AF_INET && s.Local.Port() == port && !s.Connected() {
				found = true
				continue
			}
			g.destroyed(s)
		}
		if found {
			return nil
		}
	}
}

// Close releases the sockets; it unblocks Run.
func (g *udpReuseGuard) Close() error {
	return errors.Join(g.watch.Close(), g.owners.Close(), g.ct.Close())
}

// Sent records that the agent queued t's first packet, sent by proc's
// socket (proc.Socket or proc.SocketCookie; neither when the mechanism
// does not know it). It is called on the queue's goroutine and costs a map
// insert.
func (g *udpReuseGuard) Sent(t flow.Tuple, proc flow.Process) {
	if g == nil || t.Proto != flow.UDP {
		return
	}
	g.sent.add(t, udpSender{inode: proc.Socket, cookie: proc.SocketCookie})
}

// Run handles destroy notifications until ctx ends. It returns an error
// only when the notification socket fails for good; the agent then goes on
// without the guard.
func (g *udpReuseGuard) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { g.watch.Close() })
	defer stop()
	for {
		socks, err := g.watch.Receive()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, sockdiag.ErrLost):
			g.log.Warn("socket destroy notifications lost; checking every remembered UDP flow", "err", err)
			g.resync()
			continue
		case err != nil:
			return err
		}
		for _, s := range socks {
			g.destroyed(s)
		}
	}
}

// destroyed handles one destroyed UDP socket.
func (g *udpReuseGuard) destroyed(s sockdiag.Socket) {
	if s.Protocol != 0 && s.Protocol != unix.IPPROTO_UDP {
		return
	}
	flows := g.sent.take(s)
	if s.Connected() && !s.Local.Addr().IsUnspecified() {
		t := flow.Tuple{Proto: flow.UDP, Src: s.Local.Addr(), Dst: s.Remote.Addr(), SrcPort: s.Local.Port(), DstPort: s.Remote.Port()}
		if !containsFlow(flows, t) {
			// A flow the agent did not queue (it began before the
			// agent, or left the index): its sender is unknown.
			flows = append(flows, sentFlow{tuple: t})
		}
	}
	for _, f := range flows {
		g.settle(f, false)
	}
}

// resync settles every remembered flow after notifications were lost:
// those whose sending socket is gone are released. A flow whose socket is
// unknown is kept while any socket owns its tuple.
func (g *udpReuseGuard) resync() {
	for _, f := range g.sent.drain() {
		g.settle(f, true)
	}
}

// settle releases f: removes its conntrack entry and the engine's
// retransmission verdicts of its socket. A flow whose sending socket still
// owns its tuple (another socket sharing the port was destroyed) goes back
// into the index instead. With resync, a flow whose sender is unknown is
// presumed to belong to a live owner; otherwise it is released (SECURITY:
// when in doubt, ask again).
func (g *udpReuseGuard) settle(f sentFlow, resync bool) {
	if f.sender.known() || resync {
		owner, live, err := g.owners.UDPOwner(f.tuple)
		if err != nil {
			g.log.Debug("look up udp socket", "flow", f.tuple.String(), "err", err)
		}
		if live && (f.sender.is(owner) || !f.sender.known() && resync) {
			g.sent.add(f.tuple, f.sender)
			return
		}
	}
	// The last counts, read just before the delete (one ctnetlink
	// request more in the window the SECURITY note above describes,
	// for followed flows only).
	var last []conntrack.Flow
	if g.traffic != nil && g.traffic.wantsFinal(f.tuple) {
		if lf, err := g.ct.Get(f.tuple); err == nil {
			last = append(last, lf)
		}
	}
	err := g.ct.Delete(f.tuple)
	switch {
	case err == nil:
		g.Released.Add(1)
		if len(last) > 0 {
			g.traffic.destroyed(last)
		}
		// Asked after the removal, not before, so that a socket that
		// sent on the old entry cannot slip in between unnoticed. A
		// socket that only bound the port by then is counted too.
		if owner, live, _ := g.owners.UDPOwner(f.tuple); live {
			g.Races.Add(1)
			g.log.Warn("udp flow's port taken by another socket before its conntrack entry was removed; "+
				"datagrams it sent meanwhile passed on the old verdict, its next one is asked about",
				"flow", f.tuple.String(), "owner_uid", owner.UID, "owner_inode", owner.Inode)
		} else {
			g.log.Debug("removed conntrack entry of a destroyed udp socket's flow", "flow", f.tuple.String())
		}
	case errors.Is(err, conntrack.ErrNotFound):
		// Denied, expired, or never tracked (e.g. loopback).
	default:
		g.log.Warn("remove conntrack entry of a destroyed udp socket's flow", "flow", f.tuple.String(), "err", err)
	}
	g.forget(f.tuple, f.sender.inode)
}

func containsFlow(flows []sentFlow, t flow.Tuple) bool {
	for _, f := range flows {
		if f.tuple.Src.Unmap() == t.Src && f.tuple.Dst.Unmap() == t.Dst && f.tuple.SrcPort == t.SrcPort && f.tuple.DstPort == t.DstPort {
			return true
		}
	}
	return false
}

// sentFlowsGeneration bounds the index: it holds the UDP flows of the last
// one to two generations of this many queued flows. Most are removed long
// before, when their (mostly short-lived) sockets are destroyed; a flow that
// falls out is not released when its socket goes, unless that socket was
// connected to it.
const sentFlowsGeneration = 16384

// sentFlow is a UDP flow whose first packet the agent queued, and the
// socket that sent it.
type sentFlow struct {
	tuple  flow.Tuple
	sender udpSender
}

// udpSender names the socket that sent a flow: by its inode, or where the
// mechanism does not know the inode (sockops), by its cookie, which is
// never reused; both 0 when unknown.
type udpSender struct {
	inode, cookie uint64
}

// known reports whether s names a socket.
func (s udpSender) known() bool { return s.inode != 0 || s.cookie != 0 }

// is reports whether s names sk: by inode when s knows it, else by cookie.
func (s udpSender) is(sk sockdiag.Socket) bool {
	switch {
	case s.inode != 0:
		return uint64(sk.Inode) == s.inode
	case s.cookie != 0:
		return sk.Cookie == s.cookie
	}
	return false
}

// sentFlows indexes queued UDP flows by source port. It is bounded by two
// generations: flows go into cur; when cur is full it becomes old and the
// previous old is dropped.
type sentFlows struct {
	mu       sync.Mutex
	max      int
	cur, old map[uint16]map[flow.Tuple]udpSender // source port -> tuple -> sender
	curN     int
	oldN     int
	dropped  uint64 // flows that fell out of the index
}

func newSentFlows(generation int) *sentFlows {
	return &sentFlows{max: generation, cur: make(map[uint16]map[flow.Tuple]udpSender), old: make(map[uint16]map[flow.Tuple]udpSender)}
}

func (s *sentFlows) add(t flow.Tuple, sender udpSender) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.old[t.SrcPort]; m != nil {
		if _, ok := m[t]; ok {
			delete(m, t)
			s.oldN--
			if len(m) == 0 {
				delete(s.old, t.SrcPort)
			}
		}
	}
	m := s.cur[t.SrcPort]
	if m == nil {
		m = make(map[flow.Tuple]udpSender, 1)
		s.cur[t.SrcPort] = m
	}
	if _, ok := m[t]; !ok {
		s.curN++
	}
	m[t] = sender
	if s.curN >= s.max {
		s.dropped += uint64(s.oldN)
		s.old, s.oldN = s.cur, s.curN
		s.cur, s.curN = make(map[uint16]map[flow.Tuple]udpSender), 0
	}
}

// take removes and returns the flows that socket s may have sent: those
// from its local port, from its local address unless it is bound to the
// wildcard address, and of its family (an AF_INET6 socket may send IPv4 as
// well).
func (s *sentFlows) take(sk sockdiag.Socket) []sentFlow {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sentFlow
	port, local := sk.Local.Port(), sk.Local.Addr()
	for _, gen := range []struct {
		m map[uint16]map[flow.Tuple]udpSender
		n *int
	}{{s.cur, &s.curN}, {s.old, &s.oldN}} {
		m := gen.m[port]
		for t, sender := range m {
			if !mayHaveSent(sk.Family, local, t.Src.Unmap()) {
				continue
			}
			out = append(out, sentFlow{tuple: t, sender: sender})
			delete(m, t)
			*gen.n--
		}
		if m != nil && len(m) == 0 {
			delete(gen.m, port)
		}
	}
	return out
}

// mayHaveSent reports whether a socket of family bound to local can have
// sent a packet from src.
func mayHaveSent(family uint8, local, src netip.Addr) bool {
	switch {
	case family == unix.AF_INET && !src.Is4():
		return false
	case local.IsUnspecified():
		return true
	}
	return local == src
}

// drain removes and returns every flow.
func (s *sentFlows) drain() []sentFlow {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]sentFlow, 0, s.curN+s.oldN)
	for _, gen := range []map[uint16]map[flow.Tuple]udpSender{s.cur, s.old} {
		for _, m := range gen {
			for t, sender := range m {
				out = append(out, sentFlow{tuple: t, sender: sender})
			}
		}
	}
	s.cur, s.old = make(map[uint16]map[flow.Tuple]udpSender), make(map[uint16]map[flow.Tuple]udpSender)
	s.curN, s.oldN = 0, 0
	return out
}

// len returns the number of flows held.
func (s *sentFlows) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.curN + s.oldN
}

// udpReuseState is what GetStatus and the logs say about the guard.
type udpReuseState struct {
	mu    sync.Mutex
	state string
}

func (s *udpReuseState) set(v string) {
	s.mu.Lock()
	s.state = v
	s.mu.Unlock()
}

func (s *udpReuseState) get() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// udpReuseActive is the status while the guard runs.
const udpReuseActive = "active"

// udpReuseUnavailable is the status when the guard could not start.
func udpReuseUnavailable(err error) string {
	return fmt.Sprintf("unavailable (%v)", err)
}
