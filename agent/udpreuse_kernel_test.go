package agent

import (
	"io"
	"log/slog"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// TestUDPReuseGuardResync runs the guard against the kernel, in a network
// namespace of its own, without its notification loop: as after lost
// notifications, resync must release the flow of a closed socket (its
// conntrack entry and the engine's retransmission verdicts of it) and keep
// the flow of a socket that is still open.
func TestUDPReuseGuardResync(t *testing.T) {
	ns := testenv.NewNetNS(t)
	testenv.RequireTools(t, "iptables")
	// Conntrack tracks a namespace's packets once a rule there needs it.
	if out, err := exec.Command("nsenter", "--net="+ns.Path, "--", "iptables", "-w", "-A", "OUTPUT",
		"-m", "conntrack", "--ctstate", "NEW").CombinedOutput(); err != nil {
		t.Fatalf("enable conntrack: %v: %s", err, out)
	}
	srv := ns.ListenPacket(t, "udp4", "127.0.0.1:0").LocalAddr().(*net.UDPAddr)

	var forgotten []flow.Tuple
	g, err := openUDPReuseGuard(ns.File, func(t flow.Tuple, _ uint64) { forgotten = append(forgotten, t) },
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("open guard: %v", err)
	}
	defer g.Close()

	// send opens a connected socket in the namespace, sends one datagram
	// and records the flow with the socket's inode, as the agent does.
	send := func() (*net.UDPConn, flow.Tuple) {
		t.Helper()
		var c *net.UDPConn
		if err := ns.Do(func() (err error) {
			c, err = net.DialUDP("udp4", nil, srv)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		// Wait for the server's echo: arriving after resync removed the
		// entry, it would make a new one whose reply is this flow.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatalf("echo: %v", err)
		}
		l := c.LocalAddr().(*net.UDPAddr).AddrPort()
		tup := flow.Tuple{Proto: flow.UDP, Src: l.Addr(), Dst: l.Addr(), SrcPort: l.Port(), DstPort: uint16(srv.Port)}
		g.Sent(tup, testenv.SocketInode(t, c))
		if _, err := g.ct.Get(tup); err != nil {
			t.Fatalf("flow %v not tracked: %v", tup, err)
		}
		return c, tup
	}
	closed, gone := send()
	open, kept := send()
	defer open.Close()
	closed.Close()

	g.resync()
	if _, err := g.ct.Get(gone); err == nil {
		t.Errorf("closed socket's flow %v still tracked after resync", gone)
	}
	if _, err := g.ct.Get(kept); err != nil {
		t.Errorf("open socket's flow %v no longer tracked: %v", kept, err)
	}
	if len(forgotten) != 1 || forgotten[0] != gone {
		t.Errorf("engine told to forget %v, want only %v", forgotten, gone)
	}
	if n := g.sent.len(); n != 1 {
		t.Errorf("index holds %d flows after resync, want the open socket's", n)
	}
	if g.Released.Load() != 1 || g.Races.Load() != 0 {
		t.Errorf("released %d, races %d; want 1 and 0", g.Released.Load(), g.Races.Load())
	}
}
