package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// Flows of every IP protocol are asked about, not only TCP, UDP and ICMP
// echo. This kernel (6.18 here) offers UDP-Lite sockets to every user and
// raw sockets to CAP_NET_RAW; it has no SCTP (CONFIG_IP_SCTP off) and no
// DCCP (removed from Linux in 6.16), so SCTP is sent from a raw socket,
// which conntrack tracks all the same, with its ports.

// protoCase is one kind of flow that the chain used to let pass unasked.
type protoCase struct {
	name   string
	num    uint32           // IP protocol number in the flow
	api    agentv1.Protocol // the API's name for it
	raw    bool             // sent from a raw socket: needs CAP_NET_RAW
	ports  bool             // the flow has ports (UDP-Lite, SCTP)
	v4args []string         // dialer arguments besides -addr, -payload
	v6args []string
}

var otherProtoCases = []protoCase{
	{name: "udplite", num: unix.IPPROTO_UDPLITE, api: agentv1.Protocol_PROTOCOL_UDPLITE, ports: true,
		v4args: []string{"-net", "udplite4"}, v6args: []string{"-net", "udplite6"}},
	{name: "raw253", num: 253, api: agentv1.Protocol_PROTOCOL_OTHER, raw: true,
		v4args: []string{"-net", "ip4:253"}, v6args: []string{"-net", "ip6:253"}},
	{name: "gre", num: unix.IPPROTO_GRE, api: agentv1.Protocol_PROTOCOL_GRE, raw: true,
		v4args: []string{"-net", "ip4:47"}, v6args: []string{"-net", "ip6:47"}},
	{name: "sctp-raw", num: unix.IPPROTO_SCTP, api: agentv1.Protocol_PROTOCOL_SCTP, raw: true, ports: true,
		v4args: []string{"-net", "ip4:132"}, v6args: []string{"-net", "ip6:132"}},
	// conntrack NEW: ICMP timestamp, ICMPv6 node information query.
	{name: "icmp-query", num: unix.IPPROTO_ICMP, api: agentv1.Protocol_PROTOCOL_ICMP, raw: true,
		v4args: []string{"-net", "ip4:1", "-icmp-type", "13"}},
	{name: "icmpv6-query", num: unix.IPPROTO_ICMPV6, api: agentv1.Protocol_PROTOCOL_ICMPV6, raw: true,
		v6args: []string{"-net", "ip6:58", "-icmp-type", "139"}},
	// conntrack INVALID: an unsolicited destination unreachable, which
	// no flow it names explains.
	{name: "icmp-error", num: unix.IPPROTO_ICMP, api: agentv1.Protocol_PROTOCOL_ICMP, raw: true,
		v4args: []string{"-net", "ip4:1", "-icmp-type", "3"}},
	{name: "icmpv6-error", num: unix.IPPROTO_ICMPV6, api: agentv1.Protocol_PROTOCOL_ICMPV6, raw: true,
		v6args: []string{"-net", "ip6:58", "-icmp-type", "1"}},
}

// protoSinkPort is where the UDP-Lite sink listens and SCTP is sent to.
const protoSinkPort = 2905

// protoSink receives one protocol in one family inside a namespace and
// remembers every payload: the proof that a packet got through.
type protoSink struct {
	fd   int
	mu   sync.Mutex
	got  [][]byte
	done chan struct{}
}

// newProtoSink opens, as root inside ns, a UDP-Lite socket on
// protoSinkPort, or a raw socket of protocol num, that takes every such
// packet to the namespace's addresses.
func newProtoSink(t *testing.T, ns *testenv.NS, v6 bool, num uint32) *protoSink {
	t.Helper()
	family, typ, proto := unix.AF_INET, unix.SOCK_RAW, int(num)
	var bind unix.Sockaddr = &unix.SockaddrInet4{}
	if v6 {
		family, bind = unix.AF_INET6, &unix.SockaddrInet6{}
	}
	if num == unix.IPPROTO_UDPLITE {
		typ = unix.SOCK_DGRAM
		if v6 {
			bind = &unix.SockaddrInet6{Port: protoSinkPort}
		} else {
			bind = &unix.SockaddrInet4{Port: protoSinkPort}
		}
	}
	s := &protoSink{done: make(chan struct{})}
	err := ns.Do(func() error {
		fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		s.fd = fd
		if v6 {
			// The IPv4 sink of the same port is another socket.
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		}
		return unix.Bind(fd, bind)
	})
	if err != nil {
		t.Fatalf("sink for protocol %d: %v", num, err)
	}
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	stop := make(chan struct{})
	go func() {
		defer close(s.done)
		buf := make([]byte, 4096)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(s.fd, buf, 0)
			if err != nil {
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				return
			}
			s.mu.Lock()
			s.got = append(s.got, bytes.Clone(buf[:n]))
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-s.done
		unix.Close(s.fd)
	})
	return s
}

// seen reports whether a packet carrying marker has arrived.
func (s *protoSink) seen(marker string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.got {
		if bytes.Contains(b, []byte(marker)) {
			return true
		}
	}
	return false
}

// protoEnv is a namespace with an agent, a sink per case and family, and
// a fresh destination address for every packet sent: protocols without
// ports are told apart by address alone, and conntrack would let a second
// packet to the same address ride the first one's verdict.
type protoEnv struct {
	ns    *testenv.NS
	sinks map[string]*protoSink
	next  atomic.Uint32
}

func newProtoEnv(t *testing.T) *protoEnv {
	t.Helper()
	bins(t)
	env := &protoEnv{ns: testenv.NewNetNS(t), sinks: map[string]*protoSink{}}
	// Every fd00::/64 address is local (as 127.0.0.0/8 is): each send
	// gets an address of its own.
	if out, err := exec.Command("ip", "-n", env.ns.Name, "-6", "route", "add", "local", "fd00::/64", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip route add local fd00::/64: %v: %s", err, out)
	}
	for _, c := range otherProtoCases {
		for _, v6 := range []bool{false, true} {
			key := sinkKey(c.num, v6)
			if env.sinks[key] == nil && c.argsFor(v6) != nil {
				env.sinks[key] = newProtoSink(t, env.ns, v6, c.num)
			}
		}
	}
	return env
}

func sinkKey(num uint32, v6 bool) string { return fmt.Sprintf("%d/%v", num, v6) }

func (c protoCase) argsFor(v6 bool) []string {
	if v6 {
		return c.v6args
	}
	return c.v4args
}

// protoSend is one packet sent by a client and how to recognise it.
type protoSend struct {
	p      *Proc
	dst    string // destination address, as the API writes it
	marker string
	want   wantProc
}

// send starts a dialer as uid that sends one packet of c to a fresh
// address, with CAP_NET_RAW (ambient, kept across the UID change) when c
// needs a raw socket.
// linger keeps the client alive that long after it sent (a process that
// exited at once is named only with exec tracking, see TestAttributionOfExitedProcess).
func (env *protoEnv) send(t *testing.T, ctx context.Context, c protoCase, v6 bool, uid uint32, linger string) protoSend {
	t.Helper()
	n := env.next.Add(1)
	dst := netip.AddrFrom4([4]byte{127, 0, byte(n >> 8), byte(n)})
	src := "127.0.0.1"
	if v6 {
		dst = netip.AddrFrom16([16]byte{0: 0xfd, 14: byte(n >> 8), 15: byte(n)})
		src = "::1"
	}
	marker := fmt.Sprintf("bastion-%s-%d-%d", c.name, uid, n)
	addr := dst.String()
	switch {
	case c.num == unix.IPPROTO_UDPLITE:
		addr = netip.AddrPortFrom(dst, protoSinkPort).String()
	case c.num == unix.IPPROTO_SCTP:
		addr += "|" + strconv.Itoa(protoSinkPort)
	}
	args := append(append([]string(nil), c.argsFor(v6)...), "-addr", addr, "-payload", marker, "-linger", linger)
	if c.raw {
		args = append(args, "-local", src)
	}
	dialerExe, _ := filepath.EvalSymlinks(builtBins.dialer)
	want := wantProc{pid: 0, uid: uid, exe: dialerExe, args: append([]string{builtBins.dialer}, args...)}
	var p *Proc
	if c.raw {
		cmd := exec.CommandContext(ctx, builtBins.dialer, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential:  &syscall.Credential{Uid: uid, Gid: uid},
			AmbientCaps: []uintptr{unix.CAP_NET_RAW},
		}
		p = startWith(t, cmd, func() error { return env.ns.Start(cmd) })
	} else {
		p = start(t, dialer(ctx, env.ns, uid, args...))
	}
	want.pid = p.Pid()
	return protoSend{p: p, dst: dst.String(), marker: marker, want: want}
}

// to matches the pending connection of s.
func (s protoSend) to(c protoCase) func(*agentv1.PendingConnection) bool {
	return func(p *agentv1.PendingConnection) bool {
		f := p.GetFlow()
		return f.GetProtocolNumber() == c.num && f.GetDstIp() == s.dst
	}
}

// arrived waits up to d for s's packet at its sink.
func (env *protoEnv) arrived(c protoCase, v6 bool, s protoSend, d time.Duration) bool {
	sink := env.sinks[sinkKey(c.num, v6)]
	return testenv.Poll(d, func() bool { return sink.seen(s.marker) })
}

// forEachProto runs fn for every case and family this kernel offers.
func forEachProto(t *testing.T, fn func(t *testing.T, c protoCase, v6 bool)) {
	for _, c := range otherProtoCases {
		for _, v6 := range []bool{false, true} {
			if c.argsFor(v6) == nil {
				continue
			}
			t.Run(fmt.Sprintf("%s/v%d", c.name, map[bool]int{false: 4, true: 6}[v6]), func(t *testing.T) { fn(t, c, v6) })
		}
	}
}

// TestOtherProtocolsAreAsked: every kind of flow is held and asked about,
// naming the process that sent it, for users A and B, IPv4 and IPv6; it
// reaches its peer when allowed and never when denied.
func TestOtherProtocolsAreAsked(t *testing.T) {
	env := newProtoEnv(t)
	a := startAgent(t, env.ns)
	w := a.Watch(t)
	ctx := testCtx(t, 5*time.Minute)
	forEachProto(t, func(t *testing.T, c protoCase, v6 bool) {
		for _, uid := range []uint32{1000, 1001} {
			for _, action := range []agentv1.Action{allow, deny} {
				mark := w.Mark()
				s := env.send(t, ctx, c, v6, uid, "5s")
				conn := w.WaitAdded(t, mark, 15*time.Second, s.to(c))
				checkProc(t, conn, s.want)
				if f := conn.GetFlow(); f.GetProtocol() != c.api || (c.ports && f.GetDstPort() != protoSinkPort) {
					t.Errorf("uid %d: flow %v, want protocol %v (port %d: %v)", uid, f, c.api, protoSinkPort, c.ports)
				}
				if env.arrived(c, v6, s, 0) {
					t.Errorf("uid %d: the packet arrived while it was held", uid)
				}
				a.Decide(t, conn.GetId(), action, scopeConn)
				got := env.arrived(c, v6, s, map[agentv1.Action]time.Duration{allow: 10 * time.Second, deny: time.Second}[action])
				if got != (action == allow) {
					t.Errorf("uid %d, %v: packet arrived: %v", uid, action, got)
				}
				s.p.Kill()
			}
		}
	})
}

// attackUnasked is the attack of sending c as user B, unprivileged for
// UDP-Lite and with CAP_NET_RAW for a raw socket: it got through when its
// packet arrived although nobody answered. Every packet is denied in the
// end, so the next send starts clean.
func attackUnasked(t *testing.T, what string, cases ...string) {
	env := newProtoEnv(t)
	a := startAgent(t, env.ns)
	w := a.Watch(t)
	ctx := testCtx(t, 5*time.Minute)
	tries, through := 0, 0
	for _, c := range otherProtoCases {
		if !slices.Contains(cases, c.name) {
			continue
		}
		for _, v6 := range []bool{false, true} {
			if c.argsFor(v6) == nil {
				continue
			}
			tries++
			mark := w.Mark()
			s := env.send(t, ctx, c, v6, 1001, "0s")
			if env.arrived(c, v6, s, 3*time.Second) {
				through++
				t.Logf("%s v6=%v: arrived unasked", c.name, v6)
			}
			if held := w.Added(mark, s.to(c)); len(held) > 0 {
				a.Decide(t, held[0].GetId(), deny, scopeConn)
			} else {
				t.Logf("%s v6=%v: never asked about", c.name, v6)
			}
			s.p.Wait(t, 30*time.Second)
		}
	}
	reportAttack(t, what, tries, through, 0)
}

// TestAttackUDPLiteUnasked: any user's UDP-Lite socket reached its peer
// with no prompt (the chain queued only TCP, UDP and ICMP echo).
func TestAttackUDPLiteUnasked(t *testing.T) {
	attackUnasked(t, "UDP-Lite datagram sent unasked, IPv4 and IPv6", "udplite")
}

// TestAttackRawProtocolUnasked: a raw socket (CAP_NET_RAW, e.g. a program
// with file capabilities) sent an unassigned protocol (253), GRE and SCTP
// unasked.
func TestAttackRawProtocolUnasked(t *testing.T) {
	attackUnasked(t, "raw IP protocol 253, GRE or SCTP sent unasked, IPv4 and IPv6", "raw253", "gre", "sctp-raw")
}

// TestAttackICMPOtherTypesUnasked: ICMP and ICMPv6 types other than echo
// from a raw socket, queries (conntrack NEW) and unsolicited errors
// (conntrack INVALID), passed unasked.
func TestAttackICMPOtherTypesUnasked(t *testing.T) {
	attackUnasked(t, "ICMP/ICMPv6 query or unsolicited error sent unasked", "icmp-query", "icmpv6-query", "icmp-error", "icmpv6-error")
}

// TestAttackOtherProtocolsWhileAgentDown: with fail_open = false, nothing
// of any protocol passes while the agent is not running (the chain used to
// let all but TCP, UDP and ICMP echo through).
func TestAttackOtherProtocolsWhileAgentDown(t *testing.T) {
	env := newProtoEnv(t)
	a := startAgent(t, env.ns, "--fail-open=false")
	a.Kill(t)
	ctx := testCtx(t, 5*time.Minute)
	tries, through := 0, 0
	forEachProto(t, func(t *testing.T, c protoCase, v6 bool) {
		for _, uid := range []uint32{1000, 1001} {
			tries++
			s := env.send(t, ctx, c, v6, uid, "0s")
			if env.arrived(c, v6, s, 2*time.Second) {
				through++
				t.Logf("uid %d: arrived while the agent was down", uid)
			}
			s.p.Wait(t, 30*time.Second)
		}
	})
	reportAttack(t, "any protocol but TCP/UDP/ICMP echo passes while the agent is down (fail_open=false)", tries, through, 0)
}

// TestKernelNeighbourDiscoveryPassesWhileAgentDown: the kernel's own IPv6
// neighbour advertisements pass the chain even while a fail-closed agent
// is down: a host on the link can still ping this one (the echo reply is
// a reply, the advertisement before it a kernel packet), though every flow
// this host starts would be dropped.
func TestKernelNeighbourDiscoveryPassesWhileAgentDown(t *testing.T) {
	bins(t)
	ns, peer := testenv.NewNetNS(t), testenv.NewNetNS(t)
	for _, args := range [][]string{
		{"link", "add", "bst0", "netns", ns.Name, "type", "veth", "peer", "name", "bst1", "netns", peer.Name},
		{"-n", ns.Name, "addr", "add", "fd01::1/64", "dev", "bst0", "nodad"},
		{"-n", peer.Name, "addr", "add", "fd01::2/64", "dev", "bst1", "nodad"},
		{"-n", ns.Name, "link", "set", "bst0", "up"},
		{"-n", peer.Name, "link", "set", "bst1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	a := startAgent(t, ns, "--fail-open=false")
	a.Kill(t)
	ctx := testCtx(t, time.Minute)
	// The host itself cannot start anything: its own echo request is dropped.
	if r, err := ns.RunDialer(ctx, builtBins.dialer, 0, 0, "-net", "ping6", "-addr", "fd01::2", "-timeout", "2s"); err != nil || r.OK {
		t.Fatalf("precondition: ping from the fail-closed host: %+v, %v; want it dropped", r, err)
	}
	ok := testenv.Poll(20*time.Second, func() bool {
		r, err := peer.RunDialer(ctx, builtBins.dialer, 0, 0, "-net", "ping6", "-addr", "fd01::1", "-timeout", "2s")
		return err == nil && r.OK
	})
	if !ok {
		t.Fatal("a peer cannot ping the fail-closed host: its neighbour advertisements were dropped")
	}
}

// TestOtherProtocolsWithFallbackMechanisms: what the fallbacks name. The
// procfs mechanism finds a UDP-Lite socket through sock_diag and a raw one,
// connected to the destination, in /proc/net/raw{,6}; behind the sockops
// mechanism the same /proc lookup names them.
func TestOtherProtocolsWithFallbackMechanisms(t *testing.T) {
	requireAutoRun(t, "it selects the fallback mechanisms itself")
	for _, mech := range []string{"sockops", "procfs"} {
		t.Run(mech, func(t *testing.T) {
			env := newProtoEnv(t)
			a := startAgent(t, env.ns, "--mechanism", mech)
			w := a.Watch(t)
			ctx := testCtx(t, 2*time.Minute)
			for _, c := range otherProtoCases {
				if c.name != "udplite" && c.name != "raw253" {
					continue
				}
				for _, v6 := range []bool{false, true} {
					mark := w.Mark()
					s := env.send(t, ctx, c, v6, 1001, "5s")
					conn := w.WaitAdded(t, mark, 15*time.Second, s.to(c))
					// Behind sockops the agent's /proc fallback names
					// both: no cgroup hook runs for a raw socket, nor
					// for connect() on UDP-Lite (it has no pre_connect;
					// only sendto() runs the sendmsg hook).
					want := s.want
					want.by = "procfs"
					checkProc(t, conn, want)
					a.Decide(t, conn.GetId(), deny, scopeConn)
					s.p.Kill()
				}
			}
		})
	}
}
