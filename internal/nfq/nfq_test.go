package nfq_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/fw"
	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/nfq"
	"github.com/bastion-fw/bastion/internal/packet"
	"github.com/bastion-fw/bastion/internal/testenv"
)

const queueNum = 7

// Test UID/GID for the dialing socket (set as the thread's fsuid/fsgid).
const testUID, testGID = 4242, 4343

// newNetNS creates a namespace with loopback up (testenv.NewNetNS),
// deleted when the test ends, and returns its name and open file.
func newNetNS(t *testing.T) (string, *os.File) {
	t.Helper()
	testenv.RequireRoot(t)
	ns := testenv.NewNetNS(t)
	return ns.Name, ns.File
}

// env is a namespace with Bastion's rules and, optionally, a queue reader.
type env struct {
	ns   *os.File
	q    *nfq.Queue
	pkts chan nfq.Packet
	name string // the namespace's name under /run/netns

	mu     sync.Mutex
	counts map[flow.Tuple]int
}

func newEnv(t *testing.T, failOpen, withQueue bool) *env {
	t.Helper()
	name, f := newNetNS(t)
	e := &env{name: name, ns: f, pkts: make(chan nfq.Packet, 1024), counts: map[flow.Tuple]int{}}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if withQueue {
		q, err := nfq.Open(nfq.Config{Num: queueNum, NetNS: f, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		e.q = q
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- q.Run(ctx, func(p nfq.Packet) {
				p.Payload = nil // only valid during the call
				e.mu.Lock()
				e.counts[p.Tuple]++
				e.mu.Unlock()
				select {
				case e.pkts <- p:
				default:
				}
			})
		}()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			if err := q.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		// Rules go in once the queue is bound, as the agent does.
		select {
		case <-q.Bound():
		case <-time.After(5 * time.Second):
			t.Fatal("queue not bound 5s after Run")
		}
	}
	cfg := fw.Config{Backend: fw.BackendNFT, NetNS: name, QueueNum: queueNum, FailOpen: failOpen, InterceptLoopback: true}
	if err := fw.Install(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fw.Remove(context.Background(), cfg); err != nil {
			t.Errorf("Remove: %v", err)
		}
	})
	return e
}

// next waits for the next queued packet that matches want (Proto and Dst
// port), failing the test after a deadline.
func (e *env) next(t *testing.T, proto flow.Proto, dstPort uint16) nfq.Packet {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case p := <-e.pkts:
			if p.ParseErr != nil {
				t.Fatalf("queued packet did not parse: %v", p.ParseErr)
			}
			if p.Tuple.Proto == proto && p.Tuple.DstPort == dstPort {
				return p
			}
			t.Logf("ignoring queued %v", p.Tuple)
			if err := e.q.Accept(p.ID); err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatalf("no %v packet to port %d reached the queue", proto, dstPort)
		}
	}
}

func (e *env) count(tp flow.Tuple) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counts[tp]
}

// listen opens a TCP listener inside the namespace that accepts and holds
// connections until the test ends.
func (e *env) listen(t *testing.T, network, addr string) *net.TCPAddr {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(e.ns, func() (err error) { ln, err = net.Listen(network, addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// dial dials from inside the namespace, with the socket owned by testUID,
// in the background.
func (e *env) dial(t *testing.T, network, addr string, timeout time.Duration) <-chan error {
	t.Helper()
	res := make(chan error, 1)
	go func() {
		res <- netns.Do(e.ns, func() error {
			// fsuid/fsgid are per thread; netns.Do holds the thread.
			prevUID, _ := unix.SetfsuidRetUid(testUID)
			prevGID, _ := unix.SetfsgidRetGid(testGID)
			defer unix.SetfsuidRetUid(prevUID)
			defer unix.SetfsgidRetGid(prevGID)
			c, err := net.DialTimeout(network, addr, timeout)
			if err != nil {
				return err
			}
			return c.Close()
		})
	}()
	return res
}

func wait(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("dial did not return")
		return nil
	}
}

func TestTCPVerdicts(t *testing.T) {
	e := newEnv(t, false, true)
	marks := fw.DefaultMarks()
	for _, family := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(family.network, func(t *testing.T) {
			ln := e.listen(t, family.network, family.addr)
			port := uint16(ln.Port)
			dst := netip.AddrPortFrom(ln.AddrPort().Addr(), port).String()

			t.Run("accept", func(t *testing.T) {
				res := e.dial(t, family.network, dst, 3*time.Second)
				p := e.next(t, flow.TCP, port)
				if p.Tuple.Dst != ln.AddrPort().Addr() || p.Tuple.Src != ln.AddrPort().Addr() || p.Tuple.SrcPort == 0 {
					t.Errorf("tuple %v, want loopback to port %d", p.Tuple, port)
				}
				if !p.Info.TCPFlags.Has(packet.SYN) || p.Info.TCPFlags.Has(packet.ACK) {
					t.Errorf("flags %v, want SYN only", p.Info.TCPFlags)
				}
				if !p.HasUID || p.UID != testUID || p.GID != testGID {
					t.Errorf("uid/gid %d/%d (has %v), want %d/%d", p.UID, p.GID, p.HasUID, testUID, testGID)
				}
				if err := e.q.Accept(p.ID); err != nil {
					t.Fatal(err)
				}
				if err := wait(t, res); err != nil {
					t.Fatalf("dial after Accept: %v", err)
				}
			})

			t.Run("repeat allow", func(t *testing.T) {
				res := make(chan error, 1)
				var local netip.AddrPort
				go func() {
					res <- netns.Do(e.ns, func() error {
						c, err := net.DialTimeout(family.network, dst, 3*time.Second)
						if err != nil {
							return err
						}
						defer c.Close()
						local = c.LocalAddr().(*net.TCPAddr).AddrPort()
						// Later packets of the allowed connection must
						// not be queued.
						for range 5 {
							if _, err := c.Write([]byte("hello")); err != nil {
								return err
							}
						}
						return nil
					})
				}()
				p := e.next(t, flow.TCP, port)
				if err := e.q.Repeat(p.ID, marks.Allow); err != nil {
					t.Fatal(err)
				}
				if err := wait(t, res); err != nil {
					t.Fatalf("dial after Repeat(allow): %v", err)
				}
				tp := p.Tuple
				if tp.SrcPort != local.Port() {
					t.Errorf("queued source port %d, connection's %d", tp.SrcPort, local.Port())
				}
				if n := e.count(tp); n != 1 {
					t.Errorf("%d packets of %v reached the queue, want 1", n, tp)
				}
			})

			t.Run("repeat deny", func(t *testing.T) {
				start := time.Now()
				res := e.dial(t, family.network, dst, 700*time.Millisecond)
				p := e.next(t, flow.TCP, port)
				if err := e.q.Repeat(p.ID, marks.Deny); err != nil {
					t.Fatal(err)
				}
				err := wait(t, res)
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("dial after Repeat(deny) = %v, want a timeout", err)
				}
				t.Logf("denied dial returned after %v: %v", time.Since(start), err)
			})

			t.Run("repeat reject", func(t *testing.T) {
				start := time.Now()
				res := e.dial(t, family.network, dst, 5*time.Second)
				p := e.next(t, flow.TCP, port)
				if err := e.q.Repeat(p.ID, marks.Reject); err != nil {
					t.Fatal(err)
				}
				err := wait(t, res)
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("dial after Repeat(reject) = %v, want ECONNREFUSED", err)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("rejected dial took %v, want it refused at once", d)
				}
			})

			t.Run("drop", func(t *testing.T) {
				res := e.dial(t, family.network, dst, 500*time.Millisecond)
				p := e.next(t, flow.TCP, port)
				if err := e.q.Drop(p.ID); err != nil {
					t.Fatal(err)
				}
				var ne net.Error
				if err := wait(t, res); !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("dial after Drop = %v, want a timeout", err)
				}
			})
		})
	}
}

func TestUDPFirstPacketOnly(t *testing.T) {
	e := newEnv(t, false, true)
	allow := fw.DefaultMarks().Allow
	for _, family := range []struct{ network, addr string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		t.Run(family.network, func(t *testing.T) {
			var srv net.PacketConn
			if err := netns.Do(e.ns, func() (err error) { srv, err = net.ListenPacket(family.network, family.addr); return err }); err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			saddr := srv.LocalAddr().(*net.UDPAddr)
			var c net.Conn
			if err := netns.Do(e.ns, func() (err error) { c, err = net.Dial(family.network, saddr.String()); return err }); err != nil {
				t.Fatal(err)
			}
			defer c.Close()

			if _, err := c.Write([]byte("first")); err != nil {
				t.Fatal(err)
			}
			p := e.next(t, flow.UDP, uint16(saddr.Port))
			if want := c.LocalAddr().(*net.UDPAddr).AddrPort(); p.Tuple.SrcPort != want.Port() {
				t.Errorf("queued %v, want source port %d", p.Tuple, want.Port())
			}
			if !p.HasUID || p.UID != 0 {
				t.Errorf("uid %d (has %v), want 0", p.UID, p.HasUID)
			}
			if err := e.q.Repeat(p.ID, allow); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16)
			srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := srv.ReadFrom(buf); err != nil {
				t.Fatalf("first datagram after Repeat(allow): %v", err)
			}
			// No reply was sent, so conntrack still calls these NEW: only
			// the connmark saved from the verdict keeps them off the queue.
			for i := range 5 {
				if _, err := c.Write([]byte("more")); err != nil {
					t.Fatal(err)
				}
				srv.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := srv.ReadFrom(buf); err != nil {
					t.Fatalf("datagram %d after allow: %v", i+2, err)
				}
			}
			if k := e.count(p.Tuple); k != 1 {
				t.Errorf("%d packets of %v reached the queue, want 1", k, p.Tuple)
			}
		})
	}
}

// TestLongIPv6ExtensionHeaders sends a first datagram behind a 1,016-byte
// Destination Options header: the queue must copy all of it, or the agent
// cannot parse the packet and gives it the timeout action.
func TestLongIPv6ExtensionHeaders(t *testing.T) {
	e := newEnv(t, false, true)
	// Four experimental options (type 0x1e, RFC 4727: receivers skip
	// them) of 250 bytes and a 4-byte PadN: 2 + 4*252 + 6 = 1,016 bytes,
	// hdrlen 126. (One long PadN would be dropped by the receiver.)
	opts := []byte{0, 126}
	for range 4 {
		opts = append(append(opts, 0x1e, 250), make([]byte, 250)...)
	}
	opts = append(opts, 1, 4, 0, 0, 0, 0)
	var srv net.PacketConn
	if err := netns.Do(e.ns, func() (err error) { srv, err = net.ListenPacket("udp6", "[::1]:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	port := srv.LocalAddr().(*net.UDPAddr).Port
	var c *net.UDPConn
	if err := netns.Do(e.ns, func() error {
		conn, err := net.Dial("udp6", srv.LocalAddr().String())
		if err != nil {
			return err
		}
		c = conn.(*net.UDPConn)
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DSTOPTS, string(opts))
		}); err != nil {
			return err
		}
		return serr
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	p := e.next(t, flow.UDP, uint16(port)) // fails the test if it did not parse
	if want := 40 + len(opts); p.Info.TransportOffset != want {
		t.Errorf("UDP header at offset %d, want %d", p.Info.TransportOffset, want)
	}
	if err := e.q.Accept(p.ID); err != nil {
		t.Fatal(err)
	}
}

func TestFailOpenWithoutListener(t *testing.T) {
	for _, tc := range []struct {
		failOpen bool
		wantErr  bool
	}{{true, false}, {false, true}} {
		t.Run(fmt.Sprintf("failopen=%v", tc.failOpen), func(t *testing.T) {
			e := newEnv(t, tc.failOpen, false)
			ln := e.listen(t, "tcp4", "127.0.0.1:0")
			err := wait(t, e.dial(t, "tcp4", ln.String(), 500*time.Millisecond))
			if tc.wantErr {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("dial without listener, fail-closed = %v, want timeout", err)
				}
			} else if err != nil {
				t.Fatalf("dial without listener, fail-open = %v, want success", err)
			}
		})
	}
}

func TestICMPEcho(t *testing.T) {
	e := newEnv(t, false, true)
	for _, tc := range []struct {
		network, addr string
		typ           byte
		proto         flow.Proto
	}{
		{"ip4:icmp", "127.0.0.1", packet.ICMPv4EchoRequest, flow.ICMP},
		{"ip6:ipv6-icmp", "::1", packet.ICMPv6EchoRequest, flow.ICMPv6},
	} {
		t.Run(tc.network, func(t *testing.T) {
			var c net.PacketConn
			if err := netns.Do(e.ns, func() (err error) { c, err = net.ListenPacket(tc.network, tc.addr); return err }); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			msg := []byte{tc.typ, 0, 0, 0, 0x42, 0x43, 0, 1, 'b', 's', 't', 'n'}
			if tc.proto == flow.ICMP {
				csum := icmpChecksum(msg)
				msg[2], msg[3] = byte(csum>>8), byte(csum)
			} // the kernel fills in the ICMPv6 checksum
			ip, _ := net.ResolveIPAddr("ip", tc.addr)
			if _, err := c.WriteTo(msg, ip); err != nil {
				t.Fatal(err)
			}
			p := e.next(t, tc.proto, 0)
			if p.Tuple.SrcPort != 0x4243 || p.Info.ICMPType != tc.typ {
				t.Errorf("queued %v type %d, want echo id 0x4243 type %d", p.Tuple, p.Info.ICMPType, tc.typ)
			}
			if err := e.q.Accept(p.ID); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// A verdict for an unknown packet makes the kernel answer with an error
// message on the socket; Run must log it and keep delivering packets.
func TestUnknownVerdictIsNotFatal(t *testing.T) {
	e := newEnv(t, false, true)
	if err := e.q.Accept(0x7fffffff); err != nil {
		t.Fatalf("sending a verdict for an unknown ID: %v", err)
	}
	ln := e.listen(t, "tcp4", "127.0.0.1:0")
	res := e.dial(t, "tcp4", ln.String(), 3*time.Second)
	p := e.next(t, flow.TCP, uint16(ln.Port))
	if err := e.q.Accept(p.ID); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, res); err != nil {
		t.Fatal(err)
	}
}

// Verdicts may come from many goroutines at once.
func TestConcurrentVerdicts(t *testing.T) {
	e := newEnv(t, false, true)
	ln := e.listen(t, "tcp4", "127.0.0.1:0")
	const n = 32
	results := make([]<-chan error, n)
	for i := range results {
		results[i] = e.dial(t, "tcp4", ln.String(), 5*time.Second)
	}
	var wg sync.WaitGroup
	for range n {
		p := e.next(t, flow.TCP, uint16(ln.Port))
		wg.Go(func() {
			if err := e.q.Repeat(p.ID, fw.DefaultMarks().Allow); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, r := range results {
		if err := wait(t, r); err != nil {
			t.Error(err)
		}
	}
}

// TestSYNOnStaleConntrackEntryIsQueued: a new connection whose 4-tuple
// conntrack still maps to an earlier, allowed one that ended without its
// reset being seen (here the test drops it; on a real host an out-of-window
// reset does the same) must be queued. Conntrack passes such a SYN as part
// of the old ESTABLISHED entry, carrying its "allowed" connmark: a chain
// that let ESTABLISHED packets or that connmark through would let the new
// connection, maybe another program's, in unasked.
func TestSYNOnStaleConntrackEntryIsQueued(t *testing.T) {
	e := newEnv(t, false, true)
	ln := e.listen(t, "tcp4", "127.0.0.1:0")
	port := uint16(ln.Port)
	dst := ln.AddrPort().String()

	type dialed struct {
		c   *net.TCPConn
		err error
	}
	dialFrom := func(local *net.TCPAddr, timeout time.Duration) <-chan dialed {
		ch := make(chan dialed, 1)
		go func() {
			var c net.Conn
			err := netns.Do(e.ns, func() (err error) {
				d := net.Dialer{LocalAddr: local, Timeout: timeout}
				c, err = d.Dial("tcp4", dst)
				return err
			})
			if err != nil {
				ch <- dialed{err: err}
				return
			}
			ch <- dialed{c: c.(*net.TCPConn)}
		}()
		return ch
	}

	// The first connection is allowed as the agent allows: re-injected
	// with the allow mark, which the chain saves on the connection.
	first := dialFrom(nil, 3*time.Second)
	p := e.next(t, flow.TCP, port)
	if err := e.q.Repeat(p.ID, fw.DefaultMarks().Allow); err != nil {
		t.Fatal(err)
	}
	d := <-first
	if d.err != nil {
		t.Fatalf("first connection: %v", d.err)
	}
	local := d.c.LocalAddr().(*net.TCPAddr)

	// It ends with a reset conntrack never sees (dropped in the raw table,
	// before conntrack).
	rule := []string{"-w", "-t", "raw", "-I", "OUTPUT", "1", "-p", "tcp", "--sport", strconv.Itoa(local.Port), "--tcp-flags", "RST", "RST", "-j", "DROP"}
	if out, err := exec.Command("ip", append([]string{"netns", "exec", e.name, "iptables"}, rule...)...).CombinedOutput(); err != nil {
		t.Fatalf("iptables %v: %v: %s", rule, err, out)
	}
	d.c.SetLinger(0)
	d.c.Close()

	// A new connection from the same port to the same destination. It
	// gives up before the kernel's first SYN retransmission (1 s): only
	// the first transmission can reach the queue. (Conntrack passes that
	// one unqueued if the chain lets it; it drops the stale entry only
	// when the server's challenge ACK answers, so a retransmission would
	// be queued either way.)
	second := dialFrom(local, 700*time.Millisecond)
	p = e.next(t, flow.TCP, port)
	if p.Tuple.SrcPort != uint16(local.Port) {
		t.Errorf("queued %v, want the SYN from port %d", p.Tuple, local.Port)
	}
	if err := e.q.Accept(p.ID); err != nil {
		t.Fatal(err)
	}
	if d := <-second; d.err == nil {
		d.c.Close() // it may fail: the server still holds the old connection
	}
}

// TestFullQueue overflows a queue whose reader gives no verdicts, in two
// ways: the queue's length (4 packets), and the socket's receive buffer
// (the smallest the kernel allows, while the reader is stuck in its first
// packet). With FailOpen off the kernel drops what does not fit: nothing
// connects, even though the iptables rule has --queue-bypass (which
// applies only while nobody is bound), and nothing waits for a verdict
// that cannot come. With FailOpen on, the excess goes through unasked,
// which is why the agent never sets it on its connection queue.
func TestFullQueue(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxLen     uint32
		readBuffer int
		stuck      bool // the reader blocks in its first packet
	}{
		{"queue", 4, 0, false},
		{"socket", 1000, 1, true},
	} {
		for _, failOpen := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/failopen=%v", tc.name, failOpen), func(t *testing.T) {
				name, f := newNetNS(t)
				q, err := nfq.Open(nfq.Config{Num: queueNum, NetNS: f, MaxLen: tc.maxLen, ReadBuffer: tc.readBuffer, FailOpen: failOpen})
				if err != nil {
					t.Fatal(err)
				}
				var (
					mu   sync.Mutex
					held []uint32
				)
				unstuck := make(chan struct{})
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() {
					done <- q.Run(ctx, func(p nfq.Packet) {
						mu.Lock()
						held = append(held, p.ID)
						mu.Unlock()
						if tc.stuck {
							<-unstuck
						}
					})
				}()
				t.Cleanup(func() {
					close(unstuck)
					cancel()
					<-done
					mu.Lock()
					for _, id := range held {
						q.Drop(id)
					}
					mu.Unlock()
					q.Close()
				})
				<-q.Bound()
				cfg := fw.Config{Backend: fw.BackendNFT, NetNS: name, QueueNum: queueNum, FailOpen: true, InterceptLoopback: true}
				if err := fw.Install(context.Background(), cfg); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { fw.Remove(context.Background(), cfg) })
				e := &env{ns: f}
				ln := e.listen(t, "tcp4", "127.0.0.1:0")
				const n = 16
				var dials []<-chan error
				for range n {
					dials = append(dials, e.dial(t, "tcp4", ln.String(), 1500*time.Millisecond))
				}
				connected := 0
				for _, d := range dials {
					if wait(t, d) == nil {
						connected++
					}
				}
				mu.Lock()
				nheld := len(held)
				mu.Unlock()
				if !tc.stuck && nheld != int(tc.maxLen) {
					t.Errorf("the reader got %d packets, want the queue's %d", nheld, tc.maxLen)
				}
				switch {
				case !failOpen && connected != 0:
					t.Errorf("%d of %d connections got through a full %s, want 0", connected, n, tc.name)
				case failOpen && connected == 0:
					t.Errorf("no connection got through a full %s with FailOpen; the test does not fill it", tc.name)
				}
				t.Logf("%d of %d connected", connected, n)
			})
		}
	}
}

// TestReadBuffer checks that the socket's receive buffer is set past
// net.core.rmem_max (the kernel reports twice the value set).
func TestReadBuffer(t *testing.T) {
	_, f := newNetNS(t)
	const size = 16 << 20
	q, err := nfq.Open(nfq.Config{Num: queueNum, NetNS: f, ReadBuffer: size})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	got, err := q.ReadBuffer()
	if err != nil {
		t.Fatal(err)
	}
	if got != 2*size {
		t.Errorf("SO_RCVBUF = %d, want %d", got, 2*size)
	}
}
