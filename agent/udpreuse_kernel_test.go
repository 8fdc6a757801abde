package agent

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/conntrack"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/sockdiag"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// guardNetNS is a guard running against the kernel in a network namespace
// of its own, without its notification loop, and an echo server there.
type guardNetNS struct {
	ns        *testenv.NS
	srv       *net.UDPAddr
	g         *udpReuseGuard
	forgotten []flow.Tuple // the engine was told to forget, in order
}

func newGuardNetNS(t *testing.T) *guardNetNS {
	t.Helper()
	ns := testenv.NewNetNS(t)
	testenv.RequireTools(t, "iptables")
	// Conntrack tracks a namespace's packets once a rule there needs it.
	if out, err := exec.Command("nsenter", "--net="+ns.Path, "--", "iptables", "-w", "-A", "OUTPUT",
		"-m", "conntrack", "--ctstate", "NEW").CombinedOutput(); err != nil {
		t.Fatalf("enable conntrack: %v: %s", err, out)
	}
	e := &guardNetNS{ns: ns, srv: ns.ListenPacket(t, "udp4", "127.0.0.1:0").LocalAddr().(*net.UDPAddr)}
	g, err := openUDPReuseGuard(ns.File, func(t flow.Tuple, _ uint64) { e.forgotten = append(e.forgotten, t) },
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("open guard: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	e.g = g
	return e
}

// send opens a connected socket in the namespace, sends one datagram, waits
// for the echo and records the flow as the agent does, with the sender
// sender returns for the socket.
func (e *guardNetNS) send(t *testing.T, sender func(*net.UDPConn) flow.Process) (*net.UDPConn, flow.Tuple) {
	t.Helper()
	var c *net.UDPConn
	if err := e.ns.Do(func() (err error) {
		c, err = net.DialUDP("udp4", nil, e.srv)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// Wait for the server's echo: arriving after the guard removed the
	// entry, it would make a new one whose reply is this flow.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatalf("echo: %v", err)
	}
	l := c.LocalAddr().(*net.UDPAddr).AddrPort()
	tup := flow.Tuple{Proto: flow.UDP, Src: l.Addr(), Dst: l.Addr(), SrcPort: l.Port(), DstPort: uint16(e.srv.Port)}
	e.g.Sent(tup, sender(c))
	if _, err := e.g.ct.Get(tup); err != nil {
		t.Fatalf("flow %v not tracked: %v", tup, err)
	}
	return c, tup
}

// byInode names a socket by its inode, as netfilter-link and procfs do.
func byInode(t *testing.T) func(*net.UDPConn) flow.Process {
	return func(c *net.UDPConn) flow.Process { return flow.Process{Socket: testenv.SocketInode(t, c)} }
}

// TestUDPReuseGuardResync: as after lost notifications, resync must
// release the flow of a closed socket (its conntrack entry and the engine's
// retransmission verdicts of it) and keep the flow of a socket that is
// still open.
func TestUDPReuseGuardResync(t *testing.T) {
	e := newGuardNetNS(t)
	g := e.g
	closed, gone := e.send(t, byInode(t))
	open, kept := e.send(t, byInode(t))
	defer open.Close()
	closed.Close()

	g.resync()
	if _, err := g.ct.Get(gone); err == nil {
		t.Errorf("closed socket's flow %v still tracked after resync", gone)
	}
	if _, err := g.ct.Get(kept); err != nil {
		t.Errorf("open socket's flow %v no longer tracked: %v", kept, err)
	}
	if len(e.forgotten) != 1 || e.forgotten[0] != gone {
		t.Errorf("engine told to forget %v, want only %v", e.forgotten, gone)
	}
	if n := g.sent.len(); n != 1 {
		t.Errorf("index holds %d flows after resync, want the open socket's", n)
	}
	if g.Released.Load() != 1 || g.Races.Load() != 0 {
		t.Errorf("released %d, races %d; want 1 and 0", g.Released.Load(), g.Races.Load())
	}
}

// TestUDPReuseGuardLateDestroy has the destroy notification of a port's
// earlier socket (one that only bound it) arrive after a new socket took
// the port and sent a flow the agent queued. The guard must keep the live
// flow when it knows its socket, by inode (netfilter-link, procfs) or by
// cookie (sockops), and release it when it knows neither or names another
// socket (SECURITY: when in doubt, ask again). The live socket's own
// notification then releases its flow.
func TestUDPReuseGuardLateDestroy(t *testing.T) {
	e := newGuardNetNS(t)
	g := e.g
	for _, tc := range []struct {
		name   string
		sender func(*net.UDPConn) flow.Process
		kept   bool
	}{
		{"inode", byInode(t), true},
		{"cookie", func(c *net.UDPConn) flow.Process { return flow.Process{SocketCookie: testenv.SocketCookie(t, c)} }, true},
		{"unknown socket", func(*net.UDPConn) flow.Process { return flow.Process{} }, false},
		{"another socket's cookie", func(c *net.UDPConn) flow.Process {
			return flow.Process{SocketCookie: testenv.SocketCookie(t, c) + 1}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, tup := e.send(t, tc.sender)
			defer c.Close()
			released, races := g.Released.Load(), g.Races.Load()
			// The earlier socket was bound to the wildcard address
			// and never connected.
			g.destroyed(sockdiag.Socket{Family: unix.AF_INET, Protocol: unix.IPPROTO_UDP,
				Local: netip.AddrPortFrom(netip.IPv4Unspecified(), tup.SrcPort)})
			_, err := g.ct.Get(tup)
			if tracked := err == nil; tracked != tc.kept {
				t.Fatalf("after the earlier socket's notification: flow %v tracked %v (%v), want %v", tup, tracked, err, tc.kept)
			}
			if !tc.kept {
				// The live socket sends on unasked no longer: it
				// is counted as a race and its next datagram is a
				// new flow.
				if g.Released.Load() != released+1 || g.Races.Load() != races+1 {
					t.Errorf("released %d, races %d; want %d and %d", g.Released.Load(), g.Races.Load(), released+1, races+1)
				}
				return
			}
			if n := g.sent.len(); n != 1 || g.Released.Load() != released {
				t.Fatalf("index holds %d flows, released %d; want the live flow and none", n, g.Released.Load()-released)
			}
			c.Close()
			local := c.LocalAddr().(*net.UDPAddr).AddrPort()
			g.destroyed(sockdiag.Socket{Family: unix.AF_INET, Protocol: unix.IPPROTO_UDP,
				Local: local, Remote: netip.AddrPortFrom(tup.Dst, tup.DstPort)})
			if _, err := g.ct.Get(tup); err == nil {
				t.Errorf("flow %v still tracked after its own socket's notification", tup)
			}
			if n := g.sent.len(); n != 0 || g.Released.Load() != released+1 || g.Races.Load() != races {
				t.Errorf("index holds %d flows, released %d, races %d; want 0, 1 and 0",
					n, g.Released.Load()-released, g.Races.Load()-races)
			}
		})
	}
}

// TestUDPReuseGuardGivesTrafficTheLastCounts: with no destroy notifications
// read (trafficTable.readsSeeEnds), the guard reads a followed flow's
// counters just before it deletes the entry, and the traffic table ends the
// flow with them: one datagram of 1 byte each way, 29 IP bytes.
func TestUDPReuseGuardGivesTrafficTheLastCounts(t *testing.T) {
	e := newGuardNetNS(t)
	if err := conntrack.SetAccounting(e.ns.File, true); err != nil {
		t.Fatal(err)
	}
	tt := newTrafficTable(16, 16)
	tt.setReadsSeeEnds(true)
	e.g.traffic = tt
	sb := tt.subscribe(admin)
	var tup flow.Tuple
	c, tup := e.send(t, func(c *net.UDPConn) flow.Process {
		l := c.LocalAddr().(*net.UDPAddr).AddrPort()
		tup = flow.Tuple{Proto: flow.UDP, Src: l.Addr(), Dst: l.Addr(), SrcPort: l.Port(), DstPort: uint16(e.srv.Port)}
		tt.allowed(allowedBy(curl1000, tup, "policy"))
		return flow.Process{Socket: testenv.SocketInode(t, c)}
	})
	c.Close()
	e.g.resync()
	if e.g.Released.Load() != 1 {
		t.Fatalf("released %d flows, want 1", e.g.Released.Load())
	}
	got, _ := takeAll(sb)
	if len(got) != 1 || !got[0].ended || got[0].totalSent != 29 || got[0].totalRecv != 29 || got[0].sentPkts != 1 {
		t.Errorf("samples %+v, want one end with 29 bytes each way", got)
	}
	if tt.len() != 0 || tt.stats(admin).Lost != 0 {
		t.Errorf("%d still followed, %d lost", tt.len(), tt.stats(admin).Lost)
	}
}

// TestTrafficSamplerReadsNotificationsOnlyWhenNeeded: reads at most half
// the shortest end timeout apart (10 s in a new namespace) see every ended
// entry, so the sampler does not listen to destroy notifications, whose
// every message the kernel would otherwise build; farther apart, it does.
func TestTrafficSamplerReadsNotificationsOnlyWhenNeeded(t *testing.T) {
	e := newGuardNetNS(t)
	for _, tc := range []struct {
		interval time.Duration
		watch    bool
	}{{time.Second, false}, {5 * time.Second, false}, {6 * time.Second, true}, {time.Minute, true}} {
		tt := newTrafficTable(4, 4)
		s, err := openTrafficSampler(e.ns.File, tt, tc.interval, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if (s.watch != nil) != tc.watch || tt.readsSeeEnds == tc.watch {
			t.Errorf("interval %v: watching %v, readsSeeEnds %v; want watching %v", tc.interval, s.watch != nil, tt.readsSeeEnds, tc.watch)
		}
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}
}
