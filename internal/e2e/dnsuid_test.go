package e2e

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

const bankName = "www.bank.example"

// hostRulePolicy: UIDs 1000 and 1001 are rejected unless a rule of theirs
// allows; root and system users (the stub resolver's 990) are allowed.
const hostRulePolicy = `[policy]
prompt_timeout = "30s"
timeout_action = "deny"
default_action = "allow"

[[policy.users]]
uids = "1000-1001"
action = "reject"
`

// startZoneDNS answers A queries for the names in zone, and NXDOMAIN for
// others, on addr (UDP) in ns until t ends; it counts what it answered.
func startZoneDNS(t *testing.T, ns *testenv.NS, addr string, zone map[string]string) *dnsServer {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		t.Fatalf("DNS server on %s: %v", addr, err)
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
			var q dnsmessage.Message
			if err := q.Unpack(buf[:n]); err != nil || len(q.Questions) != 1 {
				continue
			}
			qu := q.Questions[0]
			m := dnsmessage.Message{Header: dnsmessage.Header{ID: q.Header.ID, Response: true, Authoritative: true}, Questions: q.Questions}
			ip, ok := zone[strings.TrimSuffix(strings.ToLower(qu.Name.String()), ".")]
			switch {
			case !ok:
				m.Header.RCode = dnsmessage.RCodeNameError
			case qu.Type == dnsmessage.TypeA:
				m.Answers = []dnsmessage.Resource{{
					Header: dnsmessage.ResourceHeader{Name: qu.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
					Body:   &dnsmessage.AResource{A: netip.MustParseAddr(ip).As4()},
				}}
			}
			if b, err := m.Pack(); err == nil {
				pc.WriteTo(b, from)
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

// setHostRules gives uid the rules allowing DNS (UDP port 53) and TCP to
// *.bank.example, as that user's rules service would.
func setHostRules(t *testing.T, a *Agent, uid uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := a.Client.SetRules(ctx, &agentv1.SetRulesRequest{Uid: proto.Uint32(uid), Rules: []*rulesv1.Rule{
		{Id: "dns", Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Protocol: rulesv1.Protocol_PROTOCOL_UDP,
			DstPortMin: 53, DstPortMax: 53, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER},
		{Id: "bank", Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Host: "*.bank.example",
			Protocol: rulesv1.Protocol_PROTOCOL_TCP, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER},
	}})
	if err != nil {
		t.Fatalf("set uid %d's rules: %v", uid, err)
	}
}

// resolve runs dnsclient as uid: it asks server for bankName and, with
// port > 0, connects to the first address. It returns the outcome.
func resolve(ctx context.Context, t *testing.T, ns *testenv.NS, uid uint32, server string, port int) dnsResult {
	t.Helper()
	args := []string{"-server", server, "-name", bankName + ".", "-timeout", "10s"}
	if port > 0 {
		args = append(args, "-port", strconv.Itoa(port))
	} else {
		args = append(args, "-resolve-only")
	}
	p := start(t, ns.Command(ctx, uid, uid, dnsClient(t), args...))
	return p.dnsResult(t, 20*time.Second)
}

// TestAttackNamesTaughtByAnotherUser: user B asks B's own DNS server for
// www.bank.example and is told B's address. User A allows *.bank.example
// and connects to B's address: A's connection must not carry B's name, so
// A's host rule must not allow it. A's own query, to the system's server,
// still names the bank's address for A.
func TestAttackNamesTaughtByAnotherUser(t *testing.T) {
	dnsClient(t)
	bins(t)
	ns := testenv.NewNetNS(t)
	bankPort := portOf(ns.Listen(t, "tcp4", "127.0.0.8:0").Addr())
	evil := ns.Listen(t, "tcp4", "127.0.0.9:0")
	evilPort := portOf(evil.Addr())
	startZoneDNS(t, ns, "127.0.0.1:53", map[string]string{bankName: "127.0.0.8"}) // the system's server
	bServer := startZoneDNS(t, ns, "127.0.0.2:53", map[string]string{bankName: "127.0.0.9"})
	a := startPolicyAgent(t, ns, hostRulePolicy)
	setHostRules(t, a, uidA)
	setHostRules(t, a, uidB)
	ctx := testCtx(t, 3*time.Minute)

	const tries = 3
	through := 0
	for i := range tries {
		// B's lookup through B's own server: B's rules allow DNS.
		if r := resolve(ctx, t, ns, uidB, "127.0.0.2:53", 0); !r.OK || len(r.Addrs) != 1 || r.Addrs[0] != "127.0.0.9" {
			t.Fatalf("try %d: B's lookup: %+v", i, r)
		}
		res := start(t, dialer(ctx, ns, uidA, "-net", "tcp4", "-addr", "127.0.0.9:"+strconv.Itoa(evilPort), "-timeout", "5s")).DialResult(t, 20*time.Second)
		if res.OK {
			through++
		} else if res.Kind != "refused" {
			t.Errorf("try %d: A's connection to B's address: %+v, want refused by the policy", i, res)
		}
	}
	if bServer.answered.Load() < tries {
		t.Errorf("B's server answered %d queries, want %d", bServer.answered.Load(), tries)
	}
	// Nor does the history name A's connection after B's answer.
	out, _ := run(t, ns.Command(ctx, 0, 0, builtBins.ctl, "--agent-socket", a.Socket, "decisions"))
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "uid=1000") && strings.Contains(l, "127.0.0.9:"+strconv.Itoa(evilPort)+" ("+bankName+")") {
			t.Errorf("A's connection carries B's name: %s", l)
		}
	}
	reportAttack(t, "B's own DNS server names B's address www.bank.example; A's *.bank.example rule allows it", tries, through, 0)

	// A's own lookup names the bank's address for A.
	if r := resolve(ctx, t, ns, uidA, "127.0.0.1:53", bankPort); !r.OK || r.Addrs[0] != "127.0.0.8" {
		t.Errorf("A's own lookup and connection under A's *.bank.example rule: %+v, want allowed", r)
	}
	// And B's lookup of the real server names nothing for A either:
	// B's connection goes through, A's without a lookup does not.
	if r := resolve(ctx, t, ns, uidB, "127.0.0.1:53", bankPort); !r.OK {
		t.Errorf("B's own lookup and connection: %+v, want allowed", r)
	}
}

// stubUID is the system user the stub resolver runs as.
const stubUID = 990

// startStub runs dnsclient's stub resolver as stubUID on 127.0.0.53:53,
// forwarding to upstream. The test binds the port (it is privileged) and
// hands the socket over, as systemd does with socket activation.
func startStub(ctx context.Context, t *testing.T, ns *testenv.NS, upstream string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", "127.0.0.53:53")
		return err
	}); err != nil {
		t.Fatalf("stub socket: %v", err)
	}
	f, err := pc.(*net.UDPConn).File()
	pc.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := ns.Command(ctx, stubUID, stubUID, dnsClient(t), "-stub-fd", "3", "-upstream", upstream)
	cmd.ExtraFiles = []*os.File{f}
	start(t, cmd)
}

// TestDNSNamesThroughStubResolver: programs ask a local stub resolver
// (its own system user, 990, on 127.0.0.53), which asks the upstream
// server. The stub's answer to A names the address for A only; B, who did
// not ask, gets no name for it until B asks. With the stub's UID trusted
// (dns_trusted_resolver_uids), its own upstream answers name addresses for
// everyone. Run with loopback intercepted (queries seen by the connection
// queue) and without (queries read by the DNS queue; the bank's address is
// then off-host, behind a veth whose peer answers nobody, so that
// connections to it are still asked about: allowed ones time out there,
// rejected ones are refused).
func TestDNSNamesThroughStubResolver(t *testing.T) {
	dnsClient(t)
	bins(t)
	for _, tc := range []struct {
		name        string
		intercept   bool
		trusted     bool
		bankAddr    string
		bOwnThrough bool // B connects without asking: through?
	}{
		{"loopback intercepted", true, false, "127.0.0.8", false},
		{"loopback not intercepted", false, false, "10.77.0.8", false},
		{"stub UID trusted", true, true, "127.0.0.8", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testenv.NewNetNS(t)
			ctx := testCtx(t, 3*time.Minute)
			port := 443
			if tc.intercept {
				port = portOf(ns.Listen(t, "tcp4", tc.bankAddr+":0").Addr())
			} else {
				for _, args := range [][]string{
					{"link", "add", "v0", "type", "veth", "peer", "name", "v1"}, {"link", "set", "v0", "up"}, {"link", "set", "v1", "up"},
					{"addr", "add", "10.77.0.1/24", "dev", "v0"},
					{"neigh", "add", "10.77.0.8", "lladdr", "02:00:00:00:00:08", "dev", "v0", "nud", "permanent"},
				} {
					if out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput(); err != nil {
						t.Fatalf("ip %v: %v: %s", args, err, out)
					}
				}
			}
			upstream := startZoneDNS(t, ns, "127.0.0.1:53", map[string]string{bankName: tc.bankAddr})
			config := hostRulePolicy
			if tc.trusted {
				config = "dns_trusted_resolver_uids = [" + strconv.Itoa(stubUID) + "]\n" + config
			}
			a := startAgent(t, ns, "--config", policyFile(t, config), "--intercept-loopback="+strconv.FormatBool(tc.intercept))
			setHostRules(t, a, uidA)
			setHostRules(t, a, uidB)
			startStub(ctx, t, ns, "127.0.0.1:53")

			// allowed reports whether uid's connection to the bank got
			// through (or, off-host, was let out).
			dst := tc.bankAddr + ":" + strconv.Itoa(port)
			allowed := func(who string, uid uint32) bool {
				t.Helper()
				res := start(t, dialer(ctx, ns, uid, "-net", "tcp4", "-addr", dst, "-timeout", "3s")).DialResult(t, 20*time.Second)
				switch {
				case res.OK || !tc.intercept && res.Kind == "timeout":
					return true
				case res.Kind == "refused":
					return false
				}
				t.Fatalf("%s's connection to %s: %+v", who, dst, res)
				return false
			}
			lookup := func(who string, uid uint32) {
				t.Helper()
				if r := resolve(ctx, t, ns, uid, "127.0.0.53:53", 0); !r.OK || len(r.Addrs) != 1 || r.Addrs[0] != tc.bankAddr {
					t.Fatalf("%s's lookup through the stub: %+v", who, r)
				}
			}

			lookup("A", uidA)
			if !allowed("A", uidA) {
				t.Errorf("A's connection after A's lookup through the stub was not named %s", bankName)
			}
			if got := allowed("B", uidB); got != tc.bOwnThrough {
				t.Errorf("B's connection without a lookup: allowed %v, want %v (A's answer, and the stub's own, name nothing for B unless the stub is trusted)",
					got, tc.bOwnThrough)
			}
			lookup("B", uidB)
			if !allowed("B", uidB) {
				t.Errorf("B's connection after B's own lookup through the stub was not named")
			}
			if upstream.answered.Load() == 0 {
				t.Error("the stub never asked upstream")
			}
		})
	}
}
