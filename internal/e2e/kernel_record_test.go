package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/procid"
	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// recordedConn is one test connection and what its record must say.
type recordedConn struct {
	pid    int
	action agentv1.Action
	ruleID string
	port   int
	local  string   // the source address and port, for allowed connections
	args   []string // the dialer's arguments
}

// TestKernelDecisionsRecordedLikeUserspace: three connections of the
// dialer to a port a user's rule (added through the rules service)
// allows, and three to one another rule denies; the first of each is
// decided in userspace, the others in the kernel. Every one of them
// appears once, alike, in the agent's decision stream and its replayed
// history, in `bastionctl decisions` (JSON and text), in the user's
// history (`bastionctl history`), in the rules' hit counts and in the
// agent's counters: same decided_by and rule ID, executable path, UID and
// PID, destination, and for allows the source address and port.
func TestKernelDecisionsRecordedLikeUserspace(t *testing.T) {
	b := uiBins(t)
	ns := testenv.NewNetNS(t)
	allowedL, deniedL := ns.Listen(t, "tcp4", "127.0.0.1:0"), ns.Listen(t, "tcp4", "127.0.0.1:0")
	a := startPolicyAgent(t, ns, kernelPolicy)
	live := recordDecisions(t, a)
	ctx := testCtx(t, 3*time.Minute)
	u := newAccount(t, attackerUID, "prompt_timeout = \"25s\"\ntimeout_action = \"deny\"\nsilent_action = \"reject\"\n")
	startUIServer(t, a, u)
	add := func(action rulesv1.Action, port int) string {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := u.UI.AddRule(actx, &uiv1.AddRuleRequest{Rule: portRule("", action, b.dialer, port)})
		if err != nil {
			t.Fatalf("add rule: %v", err)
		}
		return resp.GetRule().GetId()
	}
	allowID, denyID := add(rAllow, portOf(allowedL.Addr())), add(rDeny, portOf(deniedL.Addr()))
	before := a.Status(t).GetCounters()

	var conns []recordedConn
	for _, c := range []struct {
		action  agentv1.Action
		ruleID  string
		addr    string
		timeout string
	}{
		{allow, allowID, allowedL.Addr().String(), "5s"},
		{deny, denyID, deniedL.Addr().String(), "700ms"},
	} {
		for i := range 3 {
			args := []string{"-net", "tcp4", "-addr", c.addr, "-timeout", c.timeout}
			r, pid := dialInCgroup(t, ctx, ns, a, attackerUID, args...)
			if r.OK != (c.action == allow) {
				t.Fatalf("connection %d to %s: %+v", i, c.addr, r)
			}
			conns = append(conns, recordedConn{pid: pid, action: c.action, ruleID: c.ruleID, port: portOfString(t, c.addr), local: r.Local, args: args})
		}
	}

	// The agent's stream, live.
	records := make(map[int]*agentv1.DecisionEvent)
	for i, c := range conns {
		d := live.first(t, c.pid)
		records[c.pid] = d
		if n := len(live.of(c.pid)); n != 1 {
			t.Errorf("PID %d: %d decisions recorded, want 1", c.pid, n)
		}
		if kernel := i%3 != 0; byKernel(d) != kernel {
			t.Errorf("PID %d (connection %d of its rule): identified by %q; want the kernel: %v", c.pid, i%3, d.GetProcess().GetIdentifiedBy(), kernel)
		}
		checkRecord(t, "decision stream", c, b.dialer, d.GetAction(), d.GetDecidedBy(), d.GetRuleId(), d.GetProcess(), d.GetFlow())
		// The command line and parent too, which the kernel's record
		// does not carry: the agent completes it from what it knows of
		// the process. (Forced to procfs, which has no exec tracking, it
		// reads /proc, and a dialer that has exited by then has none:
		// that combination does not exist outside this test, since a
		// kernel without the eBPF mechanisms has no kernel decisions.)
		if p, want := d.GetProcess(), append([]string{b.dialer}, c.args...); !slices.Equal(p.GetArgs(), want) || p.GetPpid() == 0 {
			if mechanism() == string(procid.MechProcFS) && len(p.GetArgs()) == 0 {
				t.Logf("PID %d (connection %d of its rule): no command line (procfs: the process was gone)", c.pid, i%3)
			} else {
				t.Errorf("PID %d (connection %d of its rule): command line %q, parent %d; want %q and a parent", c.pid, i%3, p.GetArgs(), p.GetPpid(), want)
			}
		}
	}
	t.Logf("userspace record: %v", records[conns[0].pid])
	t.Logf("kernel record:    %v", records[conns[1].pid])

	// Replayed to a new watcher, as history.
	replay := recordDecisions(t, a)
	for _, c := range conns {
		if d := replay.first(t, c.pid); !proto.Equal(d, records[c.pid]) {
			t.Errorf("PID %d: replayed record differs:\n%v\nlive:\n%v", c.pid, d, records[c.pid])
		}
	}

	// bastionctl decisions, as the user: JSON, then text.
	byPID := make(map[int]*agentv1.DecisionEvent)
	for _, d := range ctlJSON[agentv1.DecisionEvent](t, ctx, ns, a, u, "decisions") {
		if d.GetFlow().GetProtocol() == agentv1.Protocol_PROTOCOL_TCP {
			byPID[int(d.GetProcess().GetTgid())] = d
		}
	}
	out, errOut, code := runSplit(t, ctlCommand(ctx, ns, a, u, "decisions"))
	if code != 0 {
		t.Fatalf("bastionctl decisions: exit %d: %s", code, errOut)
	}
	for _, c := range conns {
		if d := byPID[c.pid]; !proto.Equal(d, records[c.pid]) {
			t.Errorf("PID %d: bastionctl decisions --json shows\n%v\nthe stream:\n%v", c.pid, d, records[c.pid])
		}
		want := fmt.Sprintf("pid=%d %s uid=%d tcp 127.0.0.1:%d (by rule %s)", c.pid, b.dialer, attackerUID, c.port, c.ruleID)
		if !strings.Contains(out, want) {
			t.Errorf("bastionctl decisions has no line with %q:\n%s", want, out)
		}
	}

	// The user's history and the rules' hits, in the rules service.
	for _, c := range conns {
		hist := waitHistory(t, ctx, ns, a, u, c.port, "rule:"+c.ruleID, 3)
		var e *uiv1.HistoryEntry
		for _, h := range hist {
			if int(h.GetProcess().GetTgid()) == c.pid {
				e = h
			}
		}
		if e == nil {
			t.Errorf("PID %d not in the user's history", c.pid)
			continue
		}
		want := map[agentv1.Action]rulesv1.Action{allow: rAllow, deny: rDeny}[c.action]
		if e.GetAction() != want {
			t.Errorf("PID %d: history says %v, want %v", c.pid, e.GetAction(), want)
		}
		checkRecord(t, "history", c, b.dialer, c.action, e.GetDecidedBy(), e.GetRuleId(), e.GetProcess(), e.GetFlow())
	}
	testenv.WaitFor(t, 20*time.Second, "3 hits on each rule", func() bool {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := u.UI.ListRules(lctx, &uiv1.ListRulesRequest{})
		if err != nil {
			t.Fatalf("list rules: %v", err)
		}
		hits := make(map[string]uint64)
		for _, r := range resp.GetRules() {
			hits[r.GetId()] = r.GetHits()
		}
		return hits[allowID] == 3 && hits[denyID] == 3
	})

	// The counters: three allowed, three denied.
	after := a.Status(t).GetCounters()
	if d, n := after.GetAllowed()-before.GetAllowed(), after.GetDenied()-before.GetDenied(); d != 3 || n != 3 {
		t.Errorf("counters: %d more allowed and %d more denied, want 3 and 3", d, n)
	}
}

// checkRecord fails t unless one record (from where) of c says what it
// must.
func checkRecord(t *testing.T, where string, c recordedConn, exe string, action agentv1.Action, by, ruleID string, p *agentv1.Process, f *agentv1.Flow) {
	t.Helper()
	var errs []string
	if action != c.action || by != "rule:"+c.ruleID || ruleID != c.ruleID {
		errs = append(errs, fmt.Sprintf("%v by %q, rule %q; want %v by rule:%s", action, by, ruleID, c.action, c.ruleID))
	}
	if p.GetExe() != exe || p.GetUid() != attackerUID || int(p.GetTgid()) != c.pid {
		errs = append(errs, fmt.Sprintf("process %s uid %d pid %d", p.GetExe(), p.GetUid(), p.GetTgid()))
	}
	if f.GetProtocol() != agentv1.Protocol_PROTOCOL_TCP || f.GetIpVersion() != 4 || f.GetDstIp() != "127.0.0.1" || int(f.GetDstPort()) != c.port {
		errs = append(errs, fmt.Sprintf("flow %v", f))
	}
	if c.action == allow {
		if src := netip.AddrPortFrom(netip.MustParseAddr(orZero(f.GetSrcIp())), uint16(f.GetSrcPort())).String(); src != c.local {
			errs = append(errs, fmt.Sprintf("source %s, the dialer's was %s", src, c.local))
		}
	}
	if len(errs) > 0 {
		t.Errorf("%s, PID %d: %s", where, c.pid, strings.Join(errs, "; "))
	}
}

func orZero(ip string) string {
	if ip == "" {
		return "0.0.0.0"
	}
	return ip
}

// portOfString is the port of "host:port".
func portOfString(t *testing.T, addr string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return int(ap.Port())
}

// TestKernelDecisionsCountedUnderMixedLoad: one loop dialer's connections
// are decided in the kernel (an allow rule), while another's are decided
// in userspace, each (a rule on the command line, which the kernel cannot
// evaluate), at the same time. The rules service counts a hit for every
// one of them: the kernel's records, which reach it through the agent's
// ring buffer a little later than the userspace ones made at the same
// time, are not taken for replays and dropped.
func TestKernelDecisionsCountedUnderMixedLoad(t *testing.T) {
	uiBins(t)
	loopBin := loopDialerBin(t)
	ns := testenv.NewNetNS(t)
	kl, ul := ns.Listen(t, "tcp4", "127.0.0.1:0"), ns.Listen(t, "tcp4", "127.0.0.1:0")
	a := startPolicyAgent(t, ns, kernelPolicy)
	log := recordDecisions(t, a)
	ctx := testCtx(t, 3*time.Minute)
	u := newAccount(t, attackerUID, "prompt_timeout = \"25s\"\ntimeout_action = \"deny\"\nsilent_action = \"reject\"\n")
	startUIServer(t, a, u)
	add := func(r *rulesv1.Rule) string {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := u.UI.AddRule(actx, &uiv1.AddRuleRequest{Rule: r})
		if err != nil {
			t.Fatalf("add rule: %v", err)
		}
		return resp.GetRule().GetId()
	}
	kernelID := add(portRule("", rAllow, loopBin, portOf(kl.Addr())))
	ur := portRule("", rAllow, loopBin, portOf(ul.Addr()))
	ur.Cmdline = ".*"
	userID := add(ur)

	const n = 400
	lk := startLoop(t, ctx, ns, a.Cgroup, attackerUID, kl.Addr().String(), "-n", fmt.Sprint(n))
	lu := startLoop(t, ctx, ns, a.Cgroup, attackerUID, ul.Addr().String(), "-n", fmt.Sprint(n))
	for _, l := range []*loop{lk, lu} {
		if got := tally(l.Stop(t)); got["ok"] != n {
			t.Fatalf("loop: %v, want %d ok", got, n)
		}
	}
	inKernel := 0
	for _, d := range log.of(lk.Pid()) {
		if byKernel(d) {
			inKernel++
		}
	}
	t.Logf("%d of the first loop's %d connections decided in the kernel (as recorded)", inKernel, n)
	if inKernel < n/2 {
		t.Fatalf("only %d of %d connections decided in the kernel", inKernel, n)
	}
	var hits map[string]uint64
	if !testenv.Poll(20*time.Second, func() bool {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := u.UI.ListRules(lctx, &uiv1.ListRulesRequest{})
		if err != nil {
			t.Fatalf("list rules: %v", err)
		}
		hits = make(map[string]uint64)
		for _, r := range resp.GetRules() {
			hits[r.GetId()] = r.GetHits()
		}
		return hits[kernelID] == n && hits[userID] == n
	}) {
		t.Errorf("hits: %d on the kernel-decided rule, %d on the userspace one; want %d each", hits[kernelID], hits[userID], n)
	}
}
