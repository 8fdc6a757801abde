package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// TestVerdictsAsClientSeesThem holds a dialer's connection and answers it
// with allow, deny or reject, and checks what the dialer observed: success,
// a time-out, or a quick refusal (TCP reset, or ICMP port unreachable read
// back on the connected UDP socket), over TCP and UDP, v4 and v6.
func TestVerdictsAsClientSeesThem(t *testing.T) {
	bins(t)
	ns := testenv.NewNetNS(t)
	s := startServers(t, ns)
	a := startAgent(t, ns)
	w := a.Watch(t)
	ctx := testCtx(t, 3*time.Minute)
	const dialTimeout = 2 * time.Second
	for _, action := range []agentv1.Action{allow, deny, reject} {
		for _, tc := range []struct {
			net   string
			proto agentv1.Protocol
			ipv   uint32
			port  int
		}{
			{"tcp4", tcp, 4, s.tcp4},
			{"tcp6", tcp, 6, s.tcp6},
			{"udp4", udp, 4, s.udp4},
			{"udp6", udp, 6, s.udp6},
		} {
			t.Run(fmt.Sprintf("%s/%s", strings.ToLower(strings.TrimPrefix(action.String(), "ACTION_")), tc.net), func(t *testing.T) {
				mark := w.Mark()
				p := start(t, dialer(ctx, ns, 1000, "-net", tc.net, "-addr", hostPort(tc.ipv == 6, tc.port), "-reply", "-timeout", dialTimeout.String()))
				conn := w.WaitAdded(t, mark, 10*time.Second, flowTo(tc.proto, tc.ipv, tc.port))
				decided := time.Now()
				a.Decide(t, conn.GetId(), action, scopeConn)
				r := p.DialResult(t, 30*time.Second)
				sinceDecide := time.Since(decided)
				switch action {
				case allow:
					if !r.OK {
						t.Errorf("allowed: dialer %+v, want success", r)
					}
				case deny:
					if r.OK || r.Kind != "timeout" {
						t.Errorf("denied: dialer %+v, want a time-out", r)
					}
				case reject:
					if r.OK || r.Kind != "refused" {
						t.Errorf("rejected: dialer %+v, want refused", r)
					}
					// The refusal comes with the verdict, not at the
					// client's time-out (the slack covers process exit).
					if sinceDecide > dialTimeout/2 {
						t.Errorf("rejected: dialer ended %v after the verdict, want well under its %v time-out", sinceDecide, dialTimeout)
					}
				}
			})
		}
	}
}

// TestDeadlineAppliesTimeoutAction lets the 2s prompt deadline pass for a
// UID 1000 connection: with deny the client times out, with reject it is
// refused at about 2s; the decision is reported as decided by "deadline"
// through WatchDecisions and bastionctl.
func TestDeadlineAppliesTimeoutAction(t *testing.T) {
	b := bins(t)
	for _, tc := range []struct {
		action   string
		dialWait time.Duration
	}{
		{"deny", 4 * time.Second},
		{"reject", 8 * time.Second},
	} {
		t.Run(tc.action, func(t *testing.T) {
			ns := testenv.NewNetNS(t)
			s := startServers(t, ns)
			a := startAgent(t, ns, "--prompt-timeout", "2s", "--timeout-action", tc.action)
			ctx := testCtx(t, time.Minute)
			p := start(t, dialer(ctx, ns, 1000, "-net", "tcp4", "-addr", hostPort(false, s.tcp4), "-timeout", tc.dialWait.String()))
			conn := a.WaitPending(t, 10*time.Second, flowTo(tcp, 4, s.tcp4))
			if got := conn.GetDeadlineAction().String(); got != "ACTION_"+strings.ToUpper(tc.action) {
				t.Errorf("pending deadline action %s, want %s", got, tc.action)
			}
			if d := conn.GetDeadline().AsTime().Sub(conn.GetFirstSeen().AsTime()); d != 2*time.Second {
				t.Errorf("pending deadline %v after first seen, want 2s", d)
			}
			r := p.DialResult(t, 30*time.Second)
			elapsed := time.Duration(r.ElapsedUS) * time.Microsecond
			switch tc.action {
			case "deny":
				if r.OK || r.Kind != "timeout" || elapsed < tc.dialWait {
					t.Errorf("deadline deny: dialer %+v (after %v), want a time-out after %v", r, elapsed, tc.dialWait)
				}
			case "reject":
				if r.OK || r.Kind != "refused" || elapsed < 1500*time.Millisecond || elapsed > 4*time.Second {
					t.Errorf("deadline reject: dialer %+v (after %v), want refused at about 2s", r, elapsed)
				}
			}

			// WatchDecisions (root, in process).
			wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := a.Client.WatchDecisions(wctx, &agentv1.WatchDecisionsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			var got *agentv1.DecisionEvent
			for got == nil {
				ev, err := stream.Recv()
				if err != nil {
					t.Fatalf("no deadline decision for port %d in WatchDecisions: %v", s.tcp4, err)
				}
				if ev.GetFlow().GetDstPort() == uint32(s.tcp4) && ev.GetDecidedBy() == "deadline" {
					got = ev
				}
			}
			if got.GetAction().String() != "ACTION_"+strings.ToUpper(tc.action) || int(got.GetProcess().GetTgid()) != p.Pid() {
				t.Errorf("deadline decision %v, want %s for pid %d", got, tc.action, p.Pid())
			}

			// bastionctl decisions as an administrator would read them.
			out, err := exec.CommandContext(ctx, b.ctl, "--agent-socket", a.Socket, "--json", "decisions").Output()
			if err != nil {
				t.Fatalf("bastionctl decisions: %v", err)
			}
			found := false
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				var ev agentv1.DecisionEvent
				if err := protojson.Unmarshal([]byte(line), &ev); err != nil {
					t.Fatalf("bastionctl decisions: line %q: %v", line, err)
				}
				if ev.GetFlow().GetDstPort() == uint32(s.tcp4) && ev.GetDecidedBy() == "deadline" &&
					ev.GetAction().String() == "ACTION_"+strings.ToUpper(tc.action) {
					found = true
				}
			}
			if !found || !strings.Contains(string(out), `"decided_by":"deadline"`) {
				t.Errorf("bastionctl --json decisions has no deadline %s for port %d:\n%s", tc.action, s.tcp4, out)
			}
		})
	}
}

// netstat reads a TcpExt counter of the namespace (/proc/thread-self/net
// is the calling thread's namespace).
func netstat(t *testing.T, ns *testenv.NS, name string) int {
	t.Helper()
	var data []byte
	if err := ns.Do(func() (err error) {
		data, err = os.ReadFile("/proc/thread-self/net/netstat")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(keys) == 0 || keys[0] != "TcpExt:" || len(keys) != len(vals) {
			continue
		}
		for k := range keys {
			if keys[k] == name {
				n, err := strconv.Atoi(vals[k])
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
	}
	t.Fatalf("no TcpExt %s in netstat", name)
	return 0
}

// TestRetransmissionsJoinTheirPrompt checks that resent first packets never
// make a second prompt.
//
// A SYN held in the queue is never actually retransmitted: the queue holds
// the clone of the socket's SYN, and TCP skips a retransmission while its
// previous copy is still in a host queue (TcpExtTCPSpuriousRtxHostQueues).
// So a connection held past the 1s and 3s retransmission times keeps one
// entry with one packet and succeeds once allowed; after a deny, the SYN
// is gone from the queue and the retransmissions do reach the agent, which
// answers them from the verdict it gave, without a prompt. A UDP program
// resending its first datagram while it is held (as DNS resolvers do) adds
// a packet to the same entry.
func TestRetransmissionsJoinTheirPrompt(t *testing.T) {
	bins(t)
	ns := testenv.NewNetNS(t)
	s := startServers(t, ns)
	a := startAgent(t, ns)
	w := a.Watch(t)
	ctx := testCtx(t, 2*time.Minute)
	oneAdded := func(t *testing.T, mark int, match func(*agentv1.PendingConnection) bool) {
		t.Helper()
		if added := w.Added(mark, match); len(added) != 1 {
			var ds []string
			for _, c := range added {
				ds = append(ds, describe(c))
			}
			t.Errorf("%d KIND_ADDED events for one connection, want 1: %v", len(added), ds)
		}
	}

	t.Run("held-syn-past-retransmit-times", func(t *testing.T) {
		spurious := netstat(t, ns, "TCPSpuriousRtxHostQueues")
		mark := w.Mark()
		p := start(t, dialer(ctx, ns, 1000, "-net", "tcp4", "-addr", hostPort(false, s.tcp4), "-reply", "-timeout", "20s"))
		first := w.WaitAdded(t, mark, 10*time.Second, flowTo(tcp, 4, s.tcp4))
		// Held past the retransmission times (1s, 3s): this test is about
		// time, so it waits on the clock. The kernel counts every skipped
		// retransmission (and retries those every 500ms).
		testenv.WaitFor(t, 10*time.Second, "3.5s since the first SYN", func() bool {
			return time.Since(first.GetFirstSeen().AsTime()) > 3500*time.Millisecond
		})
		if n := netstat(t, ns, "TCPSpuriousRtxHostQueues") - spurious; n < 2 {
			t.Errorf("TCPSpuriousRtxHostQueues grew by %d while the SYN was held, want >= 2 (1s and 3s)", n)
		}
		if p.Exited() {
			t.Fatalf("dialer ended while held: %q", p.Stdout())
		}
		oneAdded(t, mark, flowTo(tcp, 4, s.tcp4))
		if got := a.ListPending(t); len(got) != 1 || got[0].GetId() != first.GetId() {
			t.Errorf("pending %v, want only %s", got, first.GetId())
		}
		a.Decide(t, first.GetId(), allow, scopeConn)
		if r := p.DialResult(t, 30*time.Second); !r.OK {
			t.Errorf("allowed after 3s: dialer %+v", r)
		}
	})

	t.Run("retransmits-after-deny", func(t *testing.T) {
		mark := w.Mark()
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		decisions, err := a.Client.WatchDecisions(dctx, &agentv1.WatchDecisionsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		p := start(t, dialer(ctx, ns, 1000, "-net", "tcp6", "-addr", hostPort(true, s.tcp6), "-timeout", "4s"))
		first := w.WaitAdded(t, mark, 10*time.Second, flowTo(tcp, 6, s.tcp6))
		a.Decide(t, first.GetId(), deny, scopeConn)
		// The SYN retransmitted at 1s is answered by the deny.
		for {
			ev, err := decisions.Recv()
			if err != nil {
				t.Fatalf("no retransmission decided within 20s: %v", err)
			}
			if ev.GetFlow().GetDstPort() == uint32(s.tcp6) && ev.GetDecidedBy() == "retransmit" {
				if ev.GetAction() != deny || ev.GetFlow().GetSrcPort() != first.GetFlow().GetSrcPort() {
					t.Errorf("retransmission decided %v, want deny for source port %d", ev, first.GetFlow().GetSrcPort())
				}
				break
			}
		}
		if r := p.DialResult(t, 30*time.Second); r.OK || r.Kind != "timeout" {
			t.Errorf("denied: dialer %+v, want a time-out", r)
		}
		oneAdded(t, mark, flowTo(tcp, 6, s.tcp6))
	})

	t.Run("udp-resend", func(t *testing.T) {
		mark := w.Mark()
		cmd := ns.Command(ctx, 1000, 1000, "nc", "-u", "127.0.0.1", strconv.Itoa(s.udp4))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		p := start(t, cmd)
		defer p.Kill()
		io.WriteString(stdin, "first\n")
		first := w.WaitAdded(t, mark, 10*time.Second, flowTo(udp, 4, s.udp4))
		io.WriteString(stdin, "again\n")
		held := a.WaitPending(t, 10*time.Second, func(c *agentv1.PendingConnection) bool {
			return c.GetId() == first.GetId() && c.GetPackets() >= 2
		})
		oneAdded(t, mark, flowTo(udp, 4, s.udp4))
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := a.Client.Decide(rctx, &agentv1.DecideRequest{Id: held.GetId(), Action: allow})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetPackets() != 2 {
			t.Errorf("Decide released %d packets, want 2", resp.GetPackets())
		}
		if !testenv.Poll(10*time.Second, func() bool { return p.Stdout() == "first\nagain\n" }) {
			t.Errorf("nc got back %q, want both datagrams echoed", p.Stdout())
		}
	})
}

// TestOthersFlowWhilePromptPending holds UID 1000's curl and checks that
// meanwhile root's curl (allowed by the system policy) and UID 1001's
// curl, already allowed with a cached decision, get through at once.
func TestOthersFlowWhilePromptPending(t *testing.T) {
	bins(t)
	ns := testenv.NewNetNS(t)
	s := startServers(t, ns)
	a := startAgent(t, ns)
	ctx := testCtx(t, time.Minute)
	curl := func(uid uint32) *Proc {
		return start(t, ns.Command(ctx, uid, uid, "curl", "-sS", "--max-time", "20", s.http4))
	}
	byUID := func(uid uint32) func(*agentv1.PendingConnection) bool {
		return func(c *agentv1.PendingConnection) bool {
			return c.GetProcess().GetUid() == uid && flowTo(tcp, 4, s.httpPort4)(c)
		}
	}

	// UID 1001 asks once and its answer is cached for curl to this server.
	first := curl(1001)
	c := a.WaitPending(t, 10*time.Second, byUID(1001))
	a.Decide(t, c.GetId(), allow, agentv1.Scope_SCOPE_DESTINATION_PORT)
	if err := exitedOK(testenv.HTTPBody)(t, first); err != nil {
		t.Fatalf("uid 1001's first curl: %v", err)
	}

	held := curl(1000)
	heldConn := a.WaitPending(t, 10*time.Second, byUID(1000))

	for _, uid := range []uint32{0, 1001} {
		begin := time.Now()
		if err := exitedOK(testenv.HTTPBody)(t, curl(uid)); err != nil {
			t.Errorf("uid %d's curl while uid 1000's is pending: %v", uid, err)
		}
		// Promptly: not after waiting for anything (a SYN retransmission
		// alone would take 1s).
		if d := time.Since(begin); d > 900*time.Millisecond {
			t.Errorf("uid %d's curl took %v while uid 1000's was pending", uid, d)
		}
	}
	if held.Exited() {
		t.Fatalf("uid 1000's curl finished while pending: %q %q", held.Stdout(), held.Stderr())
	}
	if got := a.ListPending(t); len(got) != 1 || got[0].GetId() != heldConn.GetId() {
		t.Errorf("pending %v, want only uid 1000's %s", got, heldConn.GetId())
	}
	if hits := a.Status(t).GetCounters().GetCacheHits(); hits < 1 {
		t.Errorf("cache hits %d, want uid 1001's second curl decided by the cache", hits)
	}
	a.Decide(t, heldConn.GetId(), allow, scopeConn)
	if err := exitedOK(testenv.HTTPBody)(t, held); err != nil {
		t.Errorf("uid 1000's curl after allow: %v", err)
	}
}

// TestSystemPolicyFromConfig makes UID 1000 "reject" and 1001 "allow" in a
// config file: 1000's connection is refused at once, 1001's passes, and no
// prompt appears for either even with a root watcher connected.
func TestSystemPolicyFromConfig(t *testing.T) {
	bins(t)
	ns := testenv.NewNetNS(t)
	s := startServers(t, ns)
	cfg := filepath.Join(testenv.TempDir(t), "agent.toml")
	if err := os.WriteFile(cfg, []byte(`[policy]
prompt_timeout = "30s"
timeout_action = "deny"
default_action = "ask"

[[policy.users]]
uids = "1000-1000"
action = "reject"
log = true

[[policy.users]]
uids = "1001"
action = "allow"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, ns, "--config", cfg)
	w := a.Watch(t)
	ctx := testCtx(t, time.Minute)
	for _, tc := range []struct {
		uid    uint32
		net    string
		port   int
		wantOK bool
	}{
		{1000, "tcp4", s.tcp4, false},
		{1000, "tcp6", s.tcp6, false},
		{1000, "udp4", s.udp4, false},
		{1001, "tcp4", s.tcp4, true},
		{1001, "udp6", s.udp6, true},
	} {
		r, err := ns.RunDialer(ctx, builtBins.dialer, tc.uid, tc.uid, "-net", tc.net, "-addr", hostPort(strings.HasSuffix(tc.net, "6"), tc.port), "-reply", "-timeout", "5s")
		if err != nil {
			t.Fatal(err)
		}
		elapsed := time.Duration(r.ElapsedUS) * time.Microsecond
		switch {
		case tc.wantOK && !r.OK:
			t.Errorf("uid %d %s: dialer %+v, want allowed by policy", tc.uid, tc.net, r)
		case !tc.wantOK && (r.OK || r.Kind != "refused" || elapsed > time.Second):
			t.Errorf("uid %d %s: dialer %+v after %v, want refused at once", tc.uid, tc.net, r, elapsed)
		}
	}
	if evs := w.Events(0); len(evs) != 0 {
		t.Errorf("system policy decisions prompted: %v", evs)
	}
	k := a.Status(t).GetCounters()
	if k.GetPolicyDecisions() < 5 || k.GetRejected() < 3 {
		t.Errorf("counters %v: want 5 policy decisions, 3 of them rejections", k)
	}
}
