package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

const (
	tcp    = agentv1.Protocol_PROTOCOL_TCP
	udp    = agentv1.Protocol_PROTOCOL_UDP
	icmp   = agentv1.Protocol_PROTOCOL_ICMP
	icmpv6 = agentv1.Protocol_PROTOCOL_ICMPV6

	allow  = agentv1.Action_ACTION_ALLOW
	deny   = agentv1.Action_ACTION_DENY
	reject = agentv1.Action_ACTION_REJECT

	scopeConn = agentv1.Scope_SCOPE_CONNECTION
)

// servers are what the clients of one namespace talk to.
type servers struct {
	http4, http6 string // URLs
	httpPort4    int
	httpPort6    int
	tcp4, tcp6   int // echo ports
	udp4, udp6   int
}

func startServers(t *testing.T, ns *testenv.NS) servers {
	t.Helper()
	var s servers
	s.http4 = ns.HTTPServer(t, "127.0.0.1:0")
	s.http6 = ns.HTTPServer(t, "[::1]:0")
	s.httpPort4 = urlPort(t, s.http4)
	s.httpPort6 = urlPort(t, s.http6)
	s.tcp4 = portOf(ns.Listen(t, "tcp4", "127.0.0.1:0").Addr())
	s.tcp6 = portOf(ns.Listen(t, "tcp6", "[::1]:0").Addr())
	s.udp4 = portOf(ns.ListenPacket(t, "udp4", "127.0.0.1:0").LocalAddr())
	s.udp6 = portOf(ns.ListenPacket(t, "udp6", "[::1]:0").LocalAddr())
	return s
}

func urlPort(t *testing.T, url string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return n
}

func hostPort(v6 bool, port int) string {
	if v6 {
		return net.JoinHostPort("::1", strconv.Itoa(port))
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

func loopback(v6 bool) string {
	if v6 {
		return "::1"
	}
	return "127.0.0.1"
}

// clientCase is one client run held by the agent and then allowed.
type clientCase struct {
	name  string
	prog  string // as passed to exec: a PATH name or an absolute path
	args  []string
	stdin string
	proto agentv1.Protocol
	ipv   uint32
	port  int
	// succeeded waits for the allowed client's outcome and reports a
	// failure as an error.
	succeeded func(t *testing.T, p *Proc) error
}

func exitedOK(wantOut string) func(t *testing.T, p *Proc) error {
	return func(t *testing.T, p *Proc) error {
		if err := p.Wait(t, 30*time.Second); err != nil {
			return fmt.Errorf("%v: stdout %q stderr %q", err, p.Stdout(), p.Stderr())
		}
		if wantOut != "" && p.Stdout() != wantOut {
			return fmt.Errorf("stdout %q, want %q", p.Stdout(), wantOut)
		}
		return nil
	}
}

// echoed waits until a client that never exits by itself (nc -u) printed
// want, then ends it.
func echoed(want string) func(t *testing.T, p *Proc) error {
	return func(t *testing.T, p *Proc) error {
		defer p.Kill()
		if !testenv.Poll(15*time.Second, func() bool { return strings.Contains(p.Stdout(), want) || p.Exited() }) ||
			!strings.Contains(p.Stdout(), want) {
			return fmt.Errorf("no echo %q: stdout %q stderr %q", want, p.Stdout(), p.Stderr())
		}
		return nil
	}
}

func dialedOK(t *testing.T, p *Proc) error {
	r := p.DialResult(t, 30*time.Second)
	if !r.OK {
		return fmt.Errorf("dialer failed: %+v", r)
	}
	return nil
}

// matrixCases lists every client kind over every protocol it speaks.
func matrixCases(s servers) []clientCase {
	var cases []clientCase
	for _, v6 := range []bool{false, true} {
		ipv, fam := uint32(4), "4"
		url, httpPort, tcpPort, udpPort := s.http4, s.httpPort4, s.tcp4, s.udp4
		if v6 {
			ipv, fam = 6, "6"
			url, httpPort, tcpPort, udpPort = s.http6, s.httpPort6, s.tcp6, s.udp6
		}
		host := loopback(v6)
		ping, pingProto := "ping4", icmp
		if v6 {
			ping, pingProto = "ping6", icmpv6
		}
		cases = append(cases,
			clientCase{name: "curl/tcp" + fam, prog: "curl", args: []string{"-sS", "--max-time", "30", url},
				proto: tcp, ipv: ipv, port: httpPort, succeeded: exitedOK(testenv.HTTPBody)},
			clientCase{name: "wget/tcp" + fam, prog: "wget", args: []string{"-q", "-T", "30", "-t", "1", "-O", "-", url},
				proto: tcp, ipv: ipv, port: httpPort, succeeded: exitedOK(testenv.HTTPBody)},
			clientCase{name: "nc/tcp" + fam, prog: "nc", args: []string{"-z", "-w", "30", host, strconv.Itoa(tcpPort)},
				proto: tcp, ipv: ipv, port: tcpPort, succeeded: exitedOK("")},
			clientCase{name: "nc/udp" + fam, prog: "nc", args: []string{"-u", host, strconv.Itoa(udpPort)}, stdin: "hello bastion\n",
				proto: udp, ipv: ipv, port: udpPort, succeeded: echoed("hello bastion\n")},
			clientCase{name: "dialer/tcp" + fam, prog: builtBins.dialer, args: []string{"-net", "tcp" + fam, "-addr", hostPort(v6, tcpPort), "-reply", "-timeout", "30s"},
				proto: tcp, ipv: ipv, port: tcpPort, succeeded: dialedOK},
			clientCase{name: "dialer/udp" + fam, prog: builtBins.dialer, args: []string{"-net", "udp" + fam, "-addr", hostPort(v6, udpPort), "-reply", "-timeout", "30s"},
				proto: udp, ipv: ipv, port: udpPort, succeeded: dialedOK},
			clientCase{name: "dialer/" + ping, prog: builtBins.dialer, args: []string{"-net", ping, "-addr", host, "-timeout", "30s"},
				proto: pingProto, ipv: ipv, port: 0, succeeded: dialedOK},
		)
	}
	return cases
}

// runHeldClient starts c as uid, waits for its pending event, checks who it
// names, allows it and checks that the client succeeded.
func runHeldClient(t *testing.T, ns *testenv.NS, a *Agent, w *Watcher, uid uint32, c clientCase, by string, cg *testenv.Cgroup) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	var cmd *exec.Cmd
	if cg != nil {
		cmd = ns.CommandInCgroup(ctx, cg, uid, uid, c.prog, c.args...)
	} else {
		cmd = ns.Command(ctx, uid, uid, c.prog, c.args...)
	}
	if c.stdin != "" {
		cmd.Stdin = strings.NewReader(c.stdin)
	}
	mark := w.Mark()
	p := start(t, cmd)
	conn := w.WaitAdded(t, mark, 15*time.Second, flowTo(c.proto, c.ipv, c.port))
	want := wantProc{pid: p.Pid(), uid: uid, exe: realExe(t, c.prog), args: append([]string{c.prog}, c.args...), by: by}
	checkProc(t, conn, want)
	if p.Exited() {
		t.Errorf("client exited while its connection was held: stdout %q stderr %q", p.Stdout(), p.Stderr())
	}
	a.Decide(t, conn.GetId(), allow, scopeConn)
	if err := c.succeeded(t, p); err != nil {
		t.Errorf("allowed client failed: %v", err)
	}
}

// TestAttributionMatrix runs curl, wget, nc and the Go dialer as UIDs 0,
// 1000 and 1001 over TCP, UDP and ICMP echo, v4 and v6, holds each
// connection with a root watcher connected (so that root's connections are
// asked about too), checks that the pending event names the very process,
// allows it and checks that the client got through.
func TestAttributionMatrix(t *testing.T) {
	bins(t)
	ns := testenv.NewNetNS(t)
	s := startServers(t, ns)
	a := startAgent(t, ns)
	w := a.Watch(t)
	for _, uid := range []uint32{0, 1000, 1001} {
		for _, c := range matrixCases(s) {
			t.Run(fmt.Sprintf("uid%d/%s", uid, c.name), func(t *testing.T) {
				runHeldClient(t, ns, a, w, uid, c, "", nil)
			})
		}
	}
}

// TestAttributionOfExitedProcess checks that a process that is gone before
// its connection is decided is still named: the dialer sends one datagram
// and exits, or gives up a TCP connect after 50ms. The eBPF mechanisms
// name it from their exec records; procfs, which has nothing to read once
// the process is gone, must name it correctly or not at all.
func TestAttributionOfExitedProcess(t *testing.T) {
	bins(t)
	ns := testenv.NewNetNS(t)
	s := startServers(t, ns)
	a := startAgent(t, ns)
	w := a.Watch(t)
	ctx := testCtx(t, 2*time.Minute)
	for _, tc := range []struct {
		net   string
		proto agentv1.Protocol
		ipv   uint32
		port  int
		v6    bool
	}{
		{"udp4", udp, 4, s.udp4, false},
		{"udp6", udp, 6, s.udp6, true},
		{"tcp4", tcp, 4, s.tcp4, false},
		{"tcp6", tcp, 6, s.tcp6, true},
	} {
		t.Run(tc.net, func(t *testing.T) {
			args := []string{"-net", tc.net, "-addr", hostPort(tc.v6, tc.port), "-timeout", "50ms"}
			mark := w.Mark()
			p := start(t, inCgroup(dialer(ctx, ns, 1000, args...), a.Cgroup)) // where sockops names it
			r := p.DialResult(t, 10*time.Second)
			// UDP: the datagram was sent; TCP: the held SYN made the
			// connect time out. Either way the process is gone now.
			if tc.proto == udp && !r.OK || tc.proto == tcp && r.Kind != "timeout" {
				t.Errorf("dialer result %+v; want a sent datagram or a TCP time-out", r)
			}
			conn := w.WaitAdded(t, mark, 10*time.Second, flowTo(tc.proto, tc.ipv, tc.port))
			dialerExe, _ := filepath.EvalSymlinks(builtBins.dialer)
			want := wantProc{pid: p.Pid(), uid: 1000, exe: dialerExe, args: append([]string{builtBins.dialer}, args...)}
			if mechanismCanSee(seesExited) {
				checkProc(t, conn, want)
			} else if !checkProcOrUnknown(t, conn, want) {
				// procfs reads /proc when the packet is queued; a
				// process gone by then has no /proc entry to read.
				t.Logf("mechanism %s cannot see %s: the connection names UID %d and no process", mechanism(), seesExited, want.uid)
			}
			a.Decide(t, conn.GetId(), deny, scopeConn)
		})
	}
}

// TestMechanisms selects each identification mechanism by flag and checks
// that it names a TCP v4 and a UDP v6 client of UID 1000. The clients stay
// alive until decided, which procfs needs; for sockops they start inside
// the cgroup the programs are attached to.
func TestMechanisms(t *testing.T) {
	requireAutoRun(t, "it selects each mechanism itself")
	bins(t)
	for _, mech := range []string{"netfilter-link", "sockops", "procfs"} {
		t.Run(mech, func(t *testing.T) {
			ns := testenv.NewNetNS(t)
			s := startServers(t, ns)
			args := []string{"--mechanism", mech}
			var cg *testenv.Cgroup
			if mech == "sockops" {
				cg = testenv.NewCgroup(t)
				args = append(args, "--cgroup", cg.Path)
			}
			a := startAgent(t, ns, args...)
			if got := a.Status(t).GetMechanism(); got != mech {
				t.Fatalf("GetStatus mechanism %q, want %q", got, mech)
			}
			w := a.Watch(t)
			for _, c := range []clientCase{
				{name: "tcp4", prog: builtBins.dialer, args: []string{"-net", "tcp4", "-addr", hostPort(false, s.tcp4), "-reply", "-timeout", "30s"},
					proto: tcp, ipv: 4, port: s.tcp4, succeeded: dialedOK},
				{name: "udp6", prog: builtBins.dialer, args: []string{"-net", "udp6", "-addr", hostPort(true, s.udp6), "-reply", "-timeout", "30s"},
					proto: udp, ipv: 6, port: s.udp6, succeeded: dialedOK},
			} {
				t.Run(c.name, func(t *testing.T) {
					runHeldClient(t, ns, a, w, 1000, c, mech, cg)
				})
			}
		})
	}
}
