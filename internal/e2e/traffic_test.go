package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/conntrack"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

var udpSenderBin = helperBin("bastion-udpsender", "github.com/bastion-fw/bastion/internal/e2e/udpsender")

// trafficLog keeps every TrafficSample one WatchTraffic stream delivers.
type trafficLog struct {
	mu      sync.Mutex
	samples []*agentv1.TrafficSample
	dropped uint64
	err     error
}

// watchTraffic connects a WatchTraffic stream as uid, recording until t
// ends.
func watchTraffic(t *testing.T, a *Agent, uid uint32) *trafficLog {
	t.Helper()
	conn, err := testenv.ClientAs(a.Socket, uid, uid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := agentv1.NewAgentServiceClient(conn).WatchTraffic(ctx, &agentv1.WatchTrafficRequest{})
	if err != nil {
		cancel()
		t.Fatalf("WatchTraffic as uid %d: %v", uid, err)
	}
	l := &trafficLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			b, err := stream.Recv()
			l.mu.Lock()
			if err != nil {
				l.err = err
				l.mu.Unlock()
				return
			}
			l.samples = append(l.samples, b.GetSamples()...)
			l.dropped += b.GetDropped()
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return l
}

// connTraffic adds up one connection's samples.
type connTraffic struct {
	id                 string
	first              *agentv1.TrafficSample
	sent, recv         uint64 // sums of the samples' growth
	sentPkts, recvPkts uint64
	totalSent, totRecv uint64 // the last sample's totals
	samples            int
	ended              bool
	afterEnd           int // samples after the one that ended it
}

// of adds up the samples of pid's connections of protocol p, by connection.
func (l *trafficLog) of(pid int, p agentv1.Protocol) map[string]*connTraffic {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]*connTraffic{}
	for _, s := range l.samples {
		if int(s.GetProcess().GetTgid()) != pid || s.GetFlow().GetProtocol() != p {
			continue
		}
		c := out[s.GetConnectionId()]
		if c == nil {
			c = &connTraffic{id: s.GetConnectionId(), first: s}
			out[c.id] = c
		}
		if c.ended {
			c.afterEnd++
		}
		c.samples++
		c.sent += s.GetBytesSent()
		c.recv += s.GetBytesReceived()
		c.sentPkts += s.GetPacketsSent()
		c.recvPkts += s.GetPacketsReceived()
		c.totalSent, c.totRecv = s.GetTotalBytesSent(), s.GetTotalBytesReceived()
		c.ended = c.ended || s.GetEnded()
	}
	return out
}

// only returns the single connection of pid's in l, waiting until cond
// holds for it.
func (l *trafficLog) wait(t *testing.T, what string, pid int, p agentv1.Protocol, cond func(*connTraffic) bool) *connTraffic {
	t.Helper()
	var c *connTraffic
	if !testenv.Poll(30*time.Second, func() bool {
		conns := l.of(pid, p)
		if len(conns) != 1 {
			return false
		}
		for _, c = range conns {
		}
		return cond(c)
	}) {
		l.mu.Lock()
		err := l.err
		l.mu.Unlock()
		t.Fatalf("%s (PID %d): connections %+v within 30 s, stream error %v", what, pid, l.of(pid, p), err)
	}
	return c
}

// uids returns the UIDs of the processes in l's samples.
func (l *trafficLog) uids() map[uint32]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[uint32]int{}
	for _, s := range l.samples {
		out[s.GetProcess().GetUid()]++
	}
	return out
}

// byteServer answers every HTTP request on 127.0.0.1 in a namespace with n
// bytes of body, and records what each connection carried, by the client's
// port: the bytes it wrote and, from TCP_INFO once the client closed, the
// bytes it had to send again (a loaded machine drops loopback packets too,
// and conntrack counts every copy).
type byteServer struct {
	url  string
	port int
	mu   sync.Mutex
	sent map[int]tcpSent
}

type tcpSent struct{ written, retrans uint64 }

func serveBytes(t *testing.T, ns *testenv.NS, n int) *byteServer {
	t.Helper()
	body := bytes.Repeat([]byte("bastion!"), n/8)
	head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(body))
	srv := &byteServer{sent: map[int]tcpSent{}}
	l := ns.Serve(t, "tcp4", "127.0.0.1:0", func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		if _, err := io.WriteString(c, head); err != nil {
			return
		}
		if _, err := c.Write(body); err != nil {
			return
		}
		tc := c.(*net.TCPConn)
		tc.CloseWrite()
		io.Copy(io.Discard, r) // until the client closes: all was acknowledged
		rc, err := tc.SyscallConn()
		if err != nil {
			return
		}
		var info *unix.TCPInfo
		rc.Control(func(fd uintptr) { info, _ = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
		if info == nil {
			return
		}
		srv.mu.Lock()
		srv.sent[portOf(c.RemoteAddr())] = tcpSent{written: uint64(len(head) + len(body)), retrans: info.Bytes_retrans}
		srv.mu.Unlock()
	})
	srv.url, srv.port = "http://"+l.Addr().String()+"/", portOf(l.Addr())
	return srv
}

// to waits for what the server sent to the client at port.
func (s *byteServer) to(t *testing.T, port int) tcpSent {
	t.Helper()
	var got tcpSent
	testenv.WaitFor(t, 10*time.Second, fmt.Sprintf("the server's count of port %d's connection", port), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		var ok bool
		got, ok = s.sent[port]
		return ok
	})
	return got
}

// within1 checks that the IP bytes conntrack counted are at least the
// payload and at most 1% more: headers are all they may add.
func within1(t *testing.T, what string, ipBytes, payload uint64) {
	t.Helper()
	t.Logf("%s: %d IP bytes for %d bytes of payload (+%.3f%%)", what, ipBytes, payload, 100*(float64(ipBytes)/float64(payload)-1))
	if ipBytes < payload || float64(ipBytes) > 1.01*float64(payload) {
		t.Errorf("%s: %d IP bytes counted, want within 1%% above the %d bytes of payload transferred", what, ipBytes, payload)
	}
}

// curlDownload runs curl as uid in the agent's cgroup and returns its PID
// and the bytes it received over HTTP (headers and body).
func curlDownload(t *testing.T, ctx context.Context, ns *testenv.NS, a *Agent, uid uint32, url string) (int, uint64) {
	t.Helper()
	p := start(t, ns.CommandInCgroup(ctx, a.Cgroup, uid, uid, realExe(t, "curl"), "-sS", "-o", "/dev/null",
		"-w", "%{size_download} %{size_header}", url))
	if err := p.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("curl as uid %d: %v: %s", uid, err, p.Stderr())
	}
	var body, header uint64
	if _, err := fmt.Sscan(p.Stdout(), &body, &header); err != nil {
		t.Fatalf("curl's output %q: %v", p.Stdout(), err)
	}
	return p.Pid(), body + header
}

// endConnection deletes the conntrack entry of the connection whose first
// sample is s, which makes the kernel notify its destruction.
func endConnection(t *testing.T, ns *testenv.NS, s *agentv1.TrafficSample) {
	t.Helper()
	f := s.GetFlow()
	proto := flow.TCP
	if f.GetProtocol() == agentv1.Protocol_PROTOCOL_UDP {
		proto = flow.UDP
	}
	tup := flow.Tuple{Proto: proto, Src: netip.MustParseAddr(f.GetSrcIp()), Dst: netip.MustParseAddr(f.GetDstIp()),
		SrcPort: uint16(f.GetSrcPort()), DstPort: uint16(f.GetDstPort())}
	ct, err := conntrack.Open(ns.File)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	if err := ct.Delete(tup); err != nil {
		t.Fatalf("delete the conntrack entry of %v: %v", tup, err)
	}
}

// TestTrafficAccounting runs real programs as a test user and checks what
// WatchTraffic reports of them: curl's download (decided in userspace by a
// rule, then remembered and decided in the kernel) and a UDP upload, within
// 1% of the bytes transferred, attributed to the right program and user; a
// program a rule denies, nothing; another user, none of it.
//
// "Transferred" is the payload put on the wire: for curl, the HTTP
// response's headers and body (what curl counts, and the server wrote) plus
// what the server's TCP sent again (TCP_INFO's bytes_retrans: a loaded
// machine drops loopback packets too); for the UDP sender, its datagrams'
// payload (each echoed before the next is sent, so none is lost). Conntrack
// counts IP bytes, headers included: they must be at least the payload and
// at most 1% more (loopback's 64 KiB MTU keeps TCP's headers near 0.06%,
// and the 8000-byte datagrams' 28 bytes of IP and UDP header are 0.35%).
func TestTrafficAccounting(t *testing.T) {
	ns := testenv.NewNetNS(t)
	hostBefore, err := conntrack.Accounting(nil)
	if err != nil {
		t.Fatal(err)
	}
	const download = 4 << 20
	srv := serveBytes(t, ns, download)
	url, httpPort := srv.url, srv.port
	echo := ns.ListenPacket(t, "udp4", "127.0.0.1:0")
	denied := ns.Listen(t, "tcp4", "127.0.0.1:0")
	a := startAgent(t, ns, "--config", policyFile(t, kernelPolicy), "--traffic-interval", "200ms")
	ctx := testCtx(t, 3*time.Minute)

	st := a.Status(t).GetTrafficAccounting()
	if st.GetState() != "active" || st.GetInterval().AsDuration() != 200*time.Millisecond {
		t.Fatalf("traffic accounting %+v, want active every 200ms", st)
	}
	if on, err := conntrack.Accounting(ns.File); err != nil || !on {
		t.Fatalf("nf_conntrack_acct in the agent's namespace: %v, %v; want on", on, err)
	}

	const udpN, udpSize = 64, 8000
	udpSender := udpSenderBin(t)
	setRules(t, a, attackerUID,
		portRule("curl", rAllow, realExe(t, "curl"), httpPort),
		portRule("dialer", rDeny, bins(t).dialer, portOf(denied.Addr())),
		&rulesv1.Rule{Id: "udp", Enabled: true, Action: rAllow, Exe: udpSender, Protocol: rulesv1.Protocol_PROTOCOL_UDP,
			DstPortMin: uint32(portOf(echo.LocalAddr())), DstPortMax: uint32(portOf(echo.LocalAddr())),
			Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER})
	mine, others := watchTraffic(t, a, attackerUID), watchTraffic(t, a, 1000)
	decisions := recordDecisions(t, a)

	// The denied program first: the samples of the others, which come
	// from later reads of the conntrack table, prove that a read after it
	// found nothing of it.
	r, deniedPID := dialInCgroup(t, ctx, ns, a, attackerUID, "-net", "tcp4", "-addr", denied.Addr().String(), "-timeout", "2s")
	if r.OK {
		t.Fatalf("the denied dialer got through: %+v", r)
	}

	// curl, decided in userspace by its rule, then in the kernel.
	queuePID, queuePayload := curlDownload(t, ctx, ns, a, attackerUID, url)
	kernelPID, kernelPayload := curlDownload(t, ctx, ns, a, attackerUID, url)
	kernelActive := a.Status(t).GetKernelDecisions().GetMechanism() == "cgroup-sock-addr+xt-bpf"

	up := start(t, ns.CommandInCgroup(ctx, a.Cgroup, attackerUID, attackerUID, udpSender,
		"-addr", echo.LocalAddr().String(), "-n", strconv.Itoa(udpN), "-size", strconv.Itoa(udpSize)))
	if err := up.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("udp sender: %v: %s %s", err, up.Stdout(), up.Stderr())
	}
	var upOut struct{ Sent int }
	if err := json.Unmarshal([]byte(up.Stdout()), &upOut); err != nil || upOut.Sent != udpN*udpSize {
		t.Fatalf("udp sender's output %q (%v), want %d bytes sent", up.Stdout(), err, udpN*udpSize)
	}

	// User 1000's own download, which its stream must show, so that its
	// showing nothing of 1001's is not for want of working.
	otherPID, _ := curlDownload(t, ctx, ns, a, 1000, url)

	curlExe := realExe(t, "curl")
	for _, c := range []struct {
		name    string
		pid     int
		payload uint64
		kernel  bool
	}{{"curl decided in userspace", queuePID, queuePayload, false}, {"curl decided in the kernel", kernelPID, kernelPayload, true}} {
		if c.kernel && !kernelActive {
			t.Logf("%s: kernel decisions are not active here (%v); not checked", c.name, a.Status(t).GetKernelDecisions())
			continue
		}
		// Its first sample names its source port, by which the server
		// says what it transferred (retransmissions included); then all
		// of that must come in (the samples lag the wire by up to an
		// interval).
		s := mine.wait(t, c.name, c.pid, agentv1.Protocol_PROTOCOL_TCP, func(*connTraffic) bool { return true }).first
		sent := srv.to(t, int(s.GetFlow().GetSrcPort()))
		got := mine.wait(t, c.name, c.pid, agentv1.Protocol_PROTOCOL_TCP, func(ct *connTraffic) bool { return ct.recv >= sent.written+sent.retrans })
		if s.GetProcess().GetExe() != curlExe || s.GetProcess().GetUid() != attackerUID || s.GetDecidedBy() != "rule:curl" || s.GetRuleId() != "curl" {
			t.Errorf("%s attributed to %v, decided by %q (rule %q); want %s of uid %d by rule:curl", c.name, s.GetProcess(), s.GetDecidedBy(), s.GetRuleId(), curlExe, attackerUID)
		}
		if byKernel := s.GetProcess().GetIdentifiedBy() == kdecide.Source; byKernel != c.kernel {
			t.Errorf("%s: identified by %q, want decided in the kernel: %v (decisions: %d)", c.name, s.GetProcess().GetIdentifiedBy(), c.kernel, len(decisions.of(c.pid)))
		}
		if sent.written != c.payload {
			t.Errorf("%s: curl received %d bytes, the server wrote %d", c.name, c.payload, sent.written)
		}
		t.Logf("%s: %d packets sent, %d received; the server sent %d bytes again", c.name, got.sentPkts, got.recvPkts, sent.retrans)
		within1(t, c.name+", received", got.recv, sent.written+sent.retrans)
		if got.totRecv != got.recv || got.sent == 0 || got.totalSent != got.sent {
			t.Errorf("%s: totals %d/%d, sums of the growth %d/%d", c.name, got.totalSent, got.totRecv, got.sent, got.recv)
		}
		// The end of a TCP connection: curl has closed it, and the read
		// that finds its entry closed (TIME_WAIT, where it lingers for
		// 120 s) brings the final sample, whose totals are the sums of
		// what came before.
		got = mine.wait(t, c.name+", its end", c.pid, agentv1.Protocol_PROTOCOL_TCP, func(ct *connTraffic) bool { return ct.ended })
		if got.totRecv != got.recv || got.totalSent != got.sent || got.afterEnd != 0 {
			t.Errorf("%s's end: totals %d/%d, sums %d/%d, %d samples after the end", c.name, got.totalSent, got.totRecv, got.sent, got.recv, got.afterEnd)
		}
	}

	// The UDP upload: every datagram was echoed, so both directions
	// carried the payload.
	udp := mine.wait(t, "udp sender", up.Pid(), agentv1.Protocol_PROTOCOL_UDP, func(ct *connTraffic) bool { return ct.sent >= udpN*udpSize })
	if p := udp.first.GetProcess(); p.GetExe() != udpSender || p.GetUid() != attackerUID || udp.first.GetDecidedBy() != "rule:udp" {
		t.Errorf("udp upload attributed to %v by %q", p, udp.first.GetDecidedBy())
	}
	within1(t, "udp sender, sent", udp.sent, udpN*udpSize)
	within1(t, "udp sender, received", udp.recv, udpN*udpSize)

	// Its end: the sender's socket is gone, and with it (through the
	// agent's UDP tuple-reuse protection, which reads the entry's last
	// counts before it deletes it) its conntrack entry.
	if p := a.Status(t).GetUdpReuseProtection(); p != "active" {
		t.Logf("udp tuple-reuse protection is %q: the test ends the flow itself", p)
		endConnection(t, ns, udp.first)
	}
	udp = mine.wait(t, "udp sender's end", up.Pid(), agentv1.Protocol_PROTOCOL_UDP, func(ct *connTraffic) bool { return ct.ended })
	if udp.totalSent != udp.sent || udp.totRecv != udp.recv || udp.afterEnd != 0 {
		t.Errorf("udp upload's end: totals %d/%d, sums %d/%d, %d samples after the end", udp.totalSent, udp.totRecv, udp.sent, udp.recv, udp.afterEnd)
	}
	within1(t, "udp sender, sent, at its end", udp.totalSent, udpN*udpSize)

	// The denied program carried nothing.
	if got := mine.of(deniedPID, agentv1.Protocol_PROTOCOL_TCP); len(got) != 0 {
		t.Errorf("the denied dialer has traffic samples: %+v", got)
	}
	// User 1000 sees its own download and nothing of 1001's; 1001 nothing
	// of 1000's.
	others.wait(t, "uid 1000's own curl", otherPID, agentv1.Protocol_PROTOCOL_TCP, func(ct *connTraffic) bool { return ct.recv >= download })
	if u := others.uids(); len(u) != 1 || u[1000] == 0 {
		t.Errorf("uid 1000's stream has samples of uids %v, want its own only", u)
	}
	if u := mine.uids(); len(u) != 1 || u[attackerUID] == 0 {
		t.Errorf("uid %d's stream has samples of uids %v, want its own only", attackerUID, u)
	}
	if mine.dropped != 0 {
		t.Errorf("%d samples dropped for a stream that kept up", mine.dropped)
	}
	// Every connection has ended (uid 1000's download too, once a read
	// finds its entry closed): none is followed any more.
	if !testenv.Poll(10*time.Second, func() bool {
		st = a.Status(t).GetTrafficAccounting()
		return st.GetTracked() == 0
	}) {
		t.Errorf("%d connections still followed 10 s after all ended", st.GetTracked())
	}
	t.Logf("traffic accounting: %+v", st)
	if st.GetSamplesSent() == 0 || st.GetMemoryBytes() != 0 || st.GetLost() != 0 {
		t.Errorf("status %+v after the transfers, want samples sent, and no memory or loss", st)
	}

	// The agent's namespace was the only one it changed.
	if after, err := conntrack.Accounting(nil); err != nil || after != hostBefore {
		t.Errorf("this machine's own nf_conntrack_acct: %v before the test, %v (%v) after", hostBefore, after, err)
	}
}

// TestTrafficAccountingWithReadOnlySysctl runs the agent as the packaged
// unit does in one respect, a read-only /proc/sys (ProtectKernelTunables=):
// it cannot write nf_conntrack_acct, and its chain's accounting rule makes
// the kernel turn accounting on instead, so that a UDP upload is counted.
func TestTrafficAccountingWithReadOnlySysctl(t *testing.T) {
	testenv.RequireTools(t, "unshare", "mount")
	ns := testenv.NewNetNS(t)
	echo := ns.ListenPacket(t, "udp4", "127.0.0.1:0")
	// In a mount namespace of its own, /proc/sys is bound read-only over
	// itself; the agent's network namespace is ns (nsenter), so it needs
	// no --netns.
	const readOnlySysctl = `set -e
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
exec "$@"`
	a := &Agent{testenv.StartAgent(t, testenv.Options{
		Bin:               bins(t).agent,
		Wrap:              []string{"nsenter", "--net=" + ns.Path, "unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", readOnlySysctl, "sh"},
		InterceptLoopback: true, QueueNum: queueNum(), LogLevel: "debug",
		Args: append(mechanismArgs(t), "--traffic-interval", "200ms"),
	})}
	if st := a.Status(t).GetTrafficAccounting(); st.GetState() != "active" {
		t.Fatalf("traffic accounting %v with a read-only /proc/sys, want active\n%s", st, a.LogTail(20))
	}
	// The write was tried and refused (debug log), so what turned
	// accounting on was the rule.
	if !strings.Contains(a.Log(), "read-only file system") {
		t.Errorf("the agent's log does not say that writing nf_conntrack_acct failed:\n%s", a.LogTail(30))
	}
	if strings.Contains(a.Log(), "nf_conntrack_acct) turned on") {
		t.Errorf("the agent says it wrote nf_conntrack_acct through a read-only /proc/sys:\n%s", a.LogTail(20))
	}
	if on, err := conntrack.Accounting(ns.File); err != nil || !on {
		t.Fatalf("nf_conntrack_acct in the agent's namespace: %v, %v; want on", on, err)
	}
	root := watchTraffic(t, a, 0)
	ctx := testCtx(t, time.Minute)
	const n, size = 16, 8000
	up := start(t, ns.Command(ctx, 0, 0, udpSenderBin(t), "-addr", echo.LocalAddr().String(), "-n", strconv.Itoa(n), "-size", strconv.Itoa(size)))
	if err := up.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("udp sender: %v: %s %s", err, up.Stdout(), up.Stderr())
	}
	got := root.wait(t, "udp sender", up.Pid(), agentv1.Protocol_PROTOCOL_UDP, func(ct *connTraffic) bool { return ct.sent >= n*size })
	within1(t, "udp sender, sent", got.sent, n*size)
}
