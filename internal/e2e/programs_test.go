package e2e

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// TestProgramsViewThroughTheRulesService is issue 15's proof, as a user's
// client sees it: real programs run as a test user in a namespace whose
// rules the user's rules service holds — curl downloading a known number of
// bytes from a local server, a UDP sender, and a program a rule denies —
// and the rules service's API (ListPrograms, GetProgram, QueryConnections)
// then reports their connections, destinations and bytes: within 1% of
// the bytes transferred (counted as TestTrafficAccounting counts them),
// and 0 bytes for the denied program.
func TestProgramsViewThroughTheRulesService(t *testing.T) {
	ns := testenv.NewNetNS(t)
	const download = 4 << 20
	srv := serveBytes(t, ns, download)
	echo := ns.ListenPacket(t, "udp4", "127.0.0.1:0")
	denied := ns.Listen(t, "tcp4", "127.0.0.1:0")
	a := startAgent(t, ns, "--traffic-interval", "200ms")
	u := newAccount(t, attackerUID, "")
	startUIServer(t, a, u).WaitConnected(t)
	ctx := testCtx(t, 3*time.Minute)

	curl, dialer, udpSender := realExe(t, "curl"), bins(t).dialer, udpSenderBin(t)
	echoPort := portOf(echo.LocalAddr())
	// The user's rules, added as a client adds them; the rules service
	// decides by them whether or not the agent has them yet.
	ids := map[string]string{}
	for name, r := range map[string]*rulesv1.Rule{
		"curl":   portRule("", rAllow, curl, srv.port),
		"dialer": portRule("", rDeny, dialer, portOf(denied.Addr())),
		"udp": {Enabled: true, Action: rAllow, Exe: udpSender, Protocol: rulesv1.Protocol_PROTOCOL_UDP,
			DstPortMin: uint32(echoPort), DstPortMax: uint32(echoPort), Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER},
	} {
		resp, err := u.UI.AddRule(ctx, &uiv1.AddRuleRequest{Rule: r})
		if err != nil {
			t.Fatalf("add the %s rule: %v", name, err)
		}
		ids[name] = resp.GetRule().GetId()
	}

	if r, _ := dialInCgroup(t, ctx, ns, a, attackerUID, "-net", "tcp4", "-addr", denied.Addr().String(), "-timeout", "2s"); r.OK {
		t.Fatalf("the denied dialer got through: %+v", r)
	}
	_, payload := curlDownload(t, ctx, ns, a, attackerUID, srv.url)
	const udpN, udpSize = 64, 8000
	up := start(t, ns.CommandInCgroup(ctx, a.Cgroup, attackerUID, attackerUID, udpSender,
		"-addr", echo.LocalAddr().String(), "-n", strconv.Itoa(udpN), "-size", strconv.Itoa(udpSize)))
	if err := up.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("udp sender: %v: %s %s", err, up.Stdout(), up.Stderr())
	}
	var upOut struct{ Sent int }
	if err := json.Unmarshal([]byte(up.Stdout()), &upOut); err != nil || upOut.Sent != udpN*udpSize {
		t.Fatalf("udp sender's output %q (%v), want %d bytes sent", up.Stdout(), err, udpN*udpSize)
	}

	// The agent reads the counts every 200 ms, the rules service writes
	// what it learnt every second: poll until the bytes are in.
	program := func(exe string) *uiv1.GetProgramResponse {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := u.UI.GetProgram(cctx, &uiv1.GetProgramRequest{Program: exe, Range: uiv1.ChartRange_CHART_RANGE_HOUR})
		if err != nil {
			t.Logf("GetProgram %s: %v", exe, err)
			return nil
		}
		return resp
	}
	// What was transferred to curl: the server's bytes (what it wrote and
	// what its TCP sent again), found by the source port of curl's one
	// connection in the history.
	var q *uiv1.QueryConnectionsResponse
	testenv.WaitFor(t, 30*time.Second, "curl's connection in the history", func() bool {
		var err error
		q, err = u.UI.QueryConnections(ctx, &uiv1.QueryConnectionsRequest{Filter: &uiv1.ConnectionFilter{Program: curl}})
		return err == nil && len(q.GetEntries()) > 0
	})
	if len(q.GetEntries()) != 1 {
		t.Fatalf("QueryConnections for curl: %d entries, want its 1 connection: %v", len(q.GetEntries()), q.GetEntries())
	}
	conn := q.GetEntries()[0]
	if conn.GetProcess().GetExe() != curl || conn.GetAction() != rAllow || conn.GetRuleId() != ids["curl"] {
		t.Errorf("curl's history entry %v, want allowed by rule %s", conn, ids["curl"])
	}
	sent := srv.to(t, int(conn.GetFlow().GetSrcPort()))
	transferred := sent.written + sent.retrans
	if sent.written != payload {
		t.Errorf("curl received %d bytes, the server wrote %d", payload, sent.written)
	}

	// The agent reads the counts every 200 ms, the rules service writes
	// what it learnt every second: poll until all the bytes are in (the
	// check below then says whether more were counted than transferred).
	var curlView, udpView, dialerView *uiv1.GetProgramResponse
	if !testenv.Poll(30*time.Second, func() bool {
		curlView, udpView = program(curl), program(udpSender)
		return curlView.GetProgram().GetBytesReceived() >= transferred && udpView.GetProgram().GetBytesSent() >= udpN*udpSize
	}) {
		t.Errorf("after 30 s, the programs view has curl receiving %d bytes (%d transferred) and the UDP sender sending %d (%d transferred)",
			curlView.GetProgram().GetBytesReceived(), transferred, udpView.GetProgram().GetBytesSent(), udpN*udpSize)
	}
	if dialerView = program(dialer); dialerView == nil {
		t.Fatalf("the denied dialer is not in the programs view")
	}

	// Each program's summary, rules, destination and chart.
	type want struct {
		name              string
		view              *uiv1.GetProgramResponse
		rule              string
		proto             agentv1.Protocol
		port              int
		allowed           bool
		sent, received    uint64 // payload transferred; 0: nothing may be counted
		checkSent, chkRcv bool
	}
	for _, w := range []want{
		{"curl", curlView, ids["curl"], agentv1.Protocol_PROTOCOL_TCP, srv.port, true, 0, transferred, false, true},
		{"udp sender", udpView, ids["udp"], agentv1.Protocol_PROTOCOL_UDP, echoPort, true, udpN * udpSize, udpN * udpSize, true, true},
		{"denied dialer", dialerView, ids["dialer"], agentv1.Protocol_PROTOCOL_TCP, portOf(denied.Addr()), false, 0, 0, true, true},
	} {
		p := w.view.GetProgram()
		t.Logf("%s: %v", w.name, p)
		if p.GetRules() != 1 || len(w.view.GetRules()) != 1 || w.view.GetRules()[0].GetId() != w.rule {
			t.Errorf("%s: %d rules counted, rules %v; want its one rule %s", w.name, p.GetRules(), w.view.GetRules(), w.rule)
		}
		if w.allowed && (p.GetAllowed() != 1 || p.GetDenied() != 0) || !w.allowed && (p.GetAllowed() != 0 || p.GetDenied() != 1) {
			t.Errorf("%s: %d allowed, %d denied today; want allowed: %v", w.name, p.GetAllowed(), p.GetDenied(), w.allowed)
		}
		if !w.allowed && (p.GetBytesSent() != 0 || p.GetBytesReceived() != 0) {
			t.Errorf("%s: %d bytes sent, %d received; a denied program carries none", w.name, p.GetBytesSent(), p.GetBytesReceived())
		}
		if w.allowed && w.checkSent {
			within1(t, w.name+", sent today", p.GetBytesSent(), w.sent)
		}
		if w.allowed && w.chkRcv {
			within1(t, w.name+", received today", p.GetBytesReceived(), w.received)
		}
		if p.GetDestinations() != 1 || len(w.view.GetDestinations()) != 1 {
			t.Errorf("%s: %d destinations (%v), want 1", w.name, p.GetDestinations(), w.view.GetDestinations())
			continue
		}
		d := w.view.GetDestinations()[0]
		if d.GetAddress() != "127.0.0.1" || d.GetProtocol() != w.proto || int(d.GetPort()) != w.port || d.GetRuleId() != w.rule ||
			d.GetBytesSent() != p.GetBytesSent() || d.GetBytesReceived() != p.GetBytesReceived() {
			t.Errorf("%s: destination %v, want 127.0.0.1 %v port %d by rule %s with the program's bytes", w.name, d, w.proto, w.port, w.rule)
		}
		// The hour's chart holds the same bytes, in 60 buckets.
		var chartSent, chartRecv uint64
		for _, b := range w.view.GetChart() {
			chartSent += b.GetBytesSent()
			chartRecv += b.GetBytesReceived()
		}
		if len(w.view.GetChart()) != 60 || chartSent != p.GetBytesSent() || chartRecv != p.GetBytesReceived() {
			t.Errorf("%s: hour chart of %d buckets with %d/%d bytes, want 60 with the program's %d/%d", w.name,
				len(w.view.GetChart()), chartSent, chartRecv, p.GetBytesSent(), p.GetBytesReceived())
		}
	}

	// ListPrograms says the same of each, and QueryConnections finds the
	// denied connection by its action.
	list, err := u.UI.ListPrograms(ctx, &uiv1.ListProgramsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]*uiv1.ProgramSummary{}
	for _, p := range list.GetPrograms() {
		listed[p.GetExe()] = p
	}
	for _, v := range []*uiv1.GetProgramResponse{curlView, udpView, dialerView} {
		l, p := listed[v.GetProgram().GetExe()], v.GetProgram()
		if l.GetAllowed() != p.GetAllowed() || l.GetDenied() != p.GetDenied() || l.GetBytesReceived() < p.GetBytesReceived() ||
			l.GetBytesSent() < p.GetBytesSent() || l.GetDestinations() != p.GetDestinations() || l.GetRules() != p.GetRules() {
			t.Errorf("ListPrograms says %v of %s, GetProgram %v", l, p.GetExe(), p)
		}
	}
	den, err := u.UI.QueryConnections(ctx, &uiv1.QueryConnectionsRequest{Filter: &uiv1.ConnectionFilter{Action: rDeny}})
	if err != nil || len(den.GetEntries()) == 0 {
		t.Fatalf("QueryConnections for denied connections: %v, %v", err, den.GetEntries())
	}
	for _, e := range den.GetEntries() {
		t.Logf("denied: %s by %s (port %d)", e.GetProcess().GetExe(), e.GetDecidedBy(), e.GetFlow().GetSrcPort())
		if e.GetProcess().GetExe() != dialer || e.GetRuleId() != ids["dialer"] {
			t.Errorf("denied connection %v, want only the dialer's, by rule %s", e, ids["dialer"])
		}
	}
}
