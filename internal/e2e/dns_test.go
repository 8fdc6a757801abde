package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// The name the test DNS server answers, through a CNAME, and its addresses:
// loopback addresses of the test's namespace where TCP listeners run.
const (
	dnsName   = "www.example.test"
	dnsTarget = "edge.cdn-example.test"
	dnsAddr   = "127.0.0.7"
	dnsAddr6  = "::1"
)

// dnsClient builds internal/e2e/dnsclient once.
var dnsClient = helperBin("dnsclient", "github.com/bastion-fw/bastion/internal/e2e/dnsclient")

// dnsServer answers A and AAAA queries for dnsName with a CNAME to
// dnsTarget and an A record dnsAddr or an AAAA record dnsAddr6, on
// 127.0.0.1:53 (and [::1]:53 with startDNSServerOn) in ns, until t ends;
// other names get NXDOMAIN. It counts the queries it answered.
type dnsServer struct{ answered atomic.Int64 }

func startDNSServer(t *testing.T, ns *testenv.NS) *dnsServer {
	t.Helper()
	return startDNSServerOn(t, ns, "127.0.0.1:53")
}

func startDNSServerOn(t *testing.T, ns *testenv.NS, addr string) *dnsServer {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatalf("DNS server in %s: %v", ns.Name, err)
	}
	s := &dnsServer{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp, ok := dnsResponse(buf[:n]); ok {
				pc.WriteTo(resp, from)
				s.answered.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return s
}

func dnsResponse(query []byte) ([]byte, bool) {
	var q dnsmessage.Message
	if err := q.Unpack(query); err != nil || len(q.Questions) != 1 {
		return nil, false
	}
	qu := q.Questions[0]
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: q.Header.ID, Response: true, Authoritative: true, RecursionDesired: q.Header.RecursionDesired},
		Questions: q.Questions,
	}
	// The name is a CNAME of dnsTarget, which has the address.
	target := dnsmessage.MustNewName(dnsTarget + ".")
	cname := dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: qu.Name, Type: dnsmessage.TypeCNAME, Class: dnsmessage.ClassINET, TTL: 30},
		Body:   &dnsmessage.CNAMEResource{CNAME: target},
	}
	addr := dnsmessage.ResourceHeader{Name: target, Type: qu.Type, Class: dnsmessage.ClassINET, TTL: 30}
	switch {
	case !strings.EqualFold(qu.Name.String(), dnsName+"."):
		m.Header.RCode = dnsmessage.RCodeNameError
	case qu.Type == dnsmessage.TypeA:
		m.Answers = []dnsmessage.Resource{cname, {Header: addr, Body: &dnsmessage.AResource{A: netip.MustParseAddr(dnsAddr).As4()}}}
	case qu.Type == dnsmessage.TypeAAAA:
		m.Answers = []dnsmessage.Resource{cname, {Header: addr, Body: &dnsmessage.AAAAResource{AAAA: netip.MustParseAddr(dnsAddr6).As16()}}}
	}
	b, err := m.Pack()
	return b, err == nil
}

// dnsResult is dnsclient's output.
type dnsResult struct {
	Addrs []string `json:"addrs"`
	OK    bool     `json:"ok"`
	Err   string   `json:"err"`
}

func (p *Proc) dnsResult(t *testing.T, timeout time.Duration) dnsResult {
	t.Helper()
	p.Wait(t, timeout)
	var r dnsResult
	if err := json.Unmarshal([]byte(strings.TrimSpace(p.Stdout())), &r); err != nil {
		t.Fatalf("dnsclient: no result: %v; stdout %q stderr %q", err, p.Stdout(), p.Stderr())
	}
	return r
}

func dnsClientCmd(ctx context.Context, t *testing.T, ns *testenv.NS, uid uint32, port int, extra ...string) *Proc {
	args := append([]string{"-server", "127.0.0.1:53", "-name", dnsName + ".", "-port", strconv.Itoa(port), "-timeout", "25s"}, extra...)
	return start(t, ns.Command(ctx, uid, uid, dnsClient(t), args...))
}

// TestDNSNamesNamePendingConnections: a program of UID 1000 resolves
// www.example.test (a CNAME to another name, then an A or AAAA record) at a
// DNS server on the namespace's loopback, over IPv4 or IPv6, and connects to
// the address. The agent reads the answer from its DNS queue, so the
// pending connection carries the name the program asked for; the status
// counts it.
func TestDNSNamesNamePendingConnections(t *testing.T) {
	dnsClient(t)
	for _, tc := range []struct {
		name, server, listen, want, lookup string
		v                                  uint32
	}{
		{"IPv4", "127.0.0.1:53", dnsAddr + ":0", dnsAddr, "ip4", 4},
		{"IPv6", "[::1]:53", "[" + dnsAddr6 + "]:0", dnsAddr6, "ip6", 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testenv.NewNetNS(t)
			srv := startDNSServerOn(t, ns, tc.server)
			port := portOf(ns.Listen(t, "tcp", tc.listen).Addr())
			a := startPolicyAgent(t, ns, twoUserPolicy) // UID 1000 is asked
			ctx := testCtx(t, 2*time.Minute)

			p := start(t, ns.Command(ctx, uidA, uidA, dnsClient(t), "-server", tc.server, "-net", tc.lookup,
				"-name", dnsName+".", "-port", strconv.Itoa(port), "-timeout", "25s"))
			// The query itself is a new UDP flow of UID 1000: allow it,
			// and the resent ones, for this program and port 53.
			q := a.WaitPending(t, 15*time.Second, flowTo(udp, tc.v, 53))
			if q.GetHost() != "" {
				t.Errorf("the DNS server's address got a name: %q", q.GetHost())
			}
			a.Decide(t, q.GetId(), allow, agentv1.Scope_SCOPE_DESTINATION_PORT)
			c := a.WaitPending(t, 15*time.Second, flowTo(tcp, tc.v, port))
			if c.GetHost() != dnsName || c.GetFlow().GetDstIp() != tc.want {
				t.Errorf("pending connection %s host %q, want %q (the name asked, not the CNAME target)", describe(c), c.GetHost(), dnsName)
			}
			a.Decide(t, c.GetId(), allow, scopeConn)
			if r := p.dnsResult(t, 30*time.Second); !r.OK || len(r.Addrs) != 1 || r.Addrs[0] != tc.want {
				t.Errorf("dnsclient: %+v, want it to resolve %s and connect", r, tc.want)
			}
			st := a.Status(t)
			if st.GetDnsQueueNum() == 0 || st.GetCounters().GetDnsAnswers() < 1 || st.GetDnsNames() < 1 || st.GetCounters().GetDnsMalformed() != 0 {
				t.Errorf("status: dns queue %d, answers %d, names %d, malformed %d; want a queue, >=1, >=1, 0",
					st.GetDnsQueueNum(), st.GetCounters().GetDnsAnswers(), st.GetDnsNames(), st.GetCounters().GetDnsMalformed())
			}
			if srv.answered.Load() == 0 {
				t.Error("the DNS server answered nothing")
			}
			// bastionctl decisions names it too.
			dst := tc.want
			if tc.v == 6 {
				dst = "[" + dst + "]"
			}
			out, code := run(t, ns.Command(ctx, 0, 0, builtBins.ctl, "--agent-socket", a.Socket, "decisions"))
			if code != 0 || !strings.Contains(out, dst+":"+strconv.Itoa(port)+" ("+dnsName+")") {
				t.Errorf("bastionctl decisions (exit %d) does not name the destination:\n%s", code, out)
			}
		})
	}
}

// TestDNSHostRuleDecidesWithoutPrompt: through UID 1000's rules service, a
// *.example.test rule decides the connection to the address the name
// resolved to, with no prompt, and the history keeps the name.
func TestDNSHostRuleDecidesWithoutPrompt(t *testing.T) {
	client := dnsClient(t)
	uiBins(t)
	ns := testenv.NewNetNS(t)
	startDNSServer(t, ns)
	port := portOf(ns.Listen(t, "tcp4", dnsAddr+":0").Addr())
	a := startPolicyAgent(t, ns, twoUserPolicy)
	ctx := testCtx(t, 2*time.Minute)
	u := newAccount(t, uidA, promptConfig)
	startUIServer(t, a, u)
	w := watchPrompts(t, u, 1)

	add := func(r *rulesv1.Rule) string {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := u.UI.AddRule(actx, &uiv1.AddRuleRequest{Rule: r})
		if err != nil {
			t.Fatalf("add rule %v: %v", r, err)
		}
		return resp.GetRule().GetId()
	}
	add(&rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: client, Protocol: rulesv1.Protocol_PROTOCOL_UDP,
		DstPortMin: 53, DstPortMax: 53, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER, Note: "DNS"})
	hostRule := add(&rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: client, Host: "*.example.test",
		Protocol: rulesv1.Protocol_PROTOCOL_TCP, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER, Note: "example.test"})

	mark := w.Mark()
	// A prompt would hold the connection for 25 s; the client gives up
	// after 10.
	p := dnsClientCmd(ctx, t, ns, uidA, port, "-timeout", "10s")
	if r := p.dnsResult(t, 20*time.Second); !r.OK {
		t.Fatalf("dnsclient under a *.example.test rule: %+v", r)
	}
	if evs := w.Events(mark); len(evs) != 0 {
		t.Errorf("prompted although the host rule covers the connection: %s", describeEvents(evs))
	}
	hist := waitHistory(t, ctx, ns, a, u, port, "rule:"+hostRule, 1)
	if h := hist[0].GetHost(); h != dnsName {
		t.Errorf("history entry host %q, want %q", h, dnsName)
	}
}

// TestDNSWorksWhileAgentIsGone: the DNS queue always bypasses, even with
// --fail-open=false: after the agent is killed (its rules left behind),
// names still resolve. Loopback is not intercepted here, so the query
// itself is not held by the connection chain.
func TestDNSWorksWhileAgentIsGone(t *testing.T) {
	dnsClient(t)
	ns := testenv.NewNetNS(t)
	srv := startDNSServer(t, ns)
	ctx := testCtx(t, 2*time.Minute)
	a := startAgent(t, ns, "--fail-open=false", "--intercept-loopback=false")

	resolve := func(what string) {
		t.Helper()
		before := srv.answered.Load()
		p := dnsClientCmd(ctx, t, ns, 0, 0, "-resolve-only", "-timeout", "10s")
		if r := p.dnsResult(t, 20*time.Second); !r.OK || len(r.Addrs) != 1 || r.Addrs[0] != dnsAddr {
			t.Fatalf("%s: dnsclient %+v, want %s", what, r, dnsAddr)
		}
		if srv.answered.Load() == before {
			t.Fatalf("%s: resolved without asking the server", what)
		}
	}
	resolve("agent running")
	st := a.Status(t)
	if st.GetCounters().GetDnsAnswers() < 1 {
		t.Fatalf("agent running: the answer on loopback was not read (dns answers %d)", st.GetCounters().GetDnsAnswers())
	}
	// An answer nobody asked for (a new flow from port 53) is not read.
	echo := ns.ListenPacket(t, "udp4", "127.0.0.1:0")
	var forged net.PacketConn
	if err := ns.Do(func() (err error) {
		forged, err = net.ListenPacket("udp4", "127.0.0.2:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer forged.Close()
	msg, _ := dnsResponse(forgedQuery(t))
	if _, err := forged.WriteTo(msg, echo.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	forged.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := forged.ReadFrom(make([]byte, 1500)); err != nil {
		t.Fatalf("the unsolicited answer was not delivered: %v", err)
	}
	if got := a.Status(t).GetCounters().GetDnsAnswers(); got != st.GetCounters().GetDnsAnswers() {
		t.Errorf("an unsolicited answer was read: dns answers %d -> %d", st.GetCounters().GetDnsAnswers(), got)
	}
	a.Kill(t)
	if rs := ruleset(t, ns); !strings.Contains(rs, "--sport 53 -m conntrack --ctstate ESTABLISHED -j NFQUEUE") {
		t.Fatalf("precondition: the killed agent's DNS rule should be left behind:\n%s", rs)
	}
	resolve("agent killed")
}

// forgedQuery is an A query for dnsName, from which dnsResponse makes an
// answer.
func forgedQuery(t *testing.T) []byte {
	t.Helper()
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 99},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(dnsName + "."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
