package e2e

import (
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/ctl"
	"github.com/bastion-fw/bastion/internal/testenv"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

const (
	uidA, uidB, uidNoService = 1000, 1001, 1002

	ruleAllow = rulesv1.Action_ACTION_ALLOW

	// promptConfig is a user's config.toml with a prompt client expected:
	// prompts wait long enough for any test step.
	promptConfig = "prompt_timeout = \"25s\"\ntimeout_action = \"deny\"\nsilent_action = \"allow\"\n"
)

// TestUIServerTwoUsers runs the real agent with two users, 1000 (A) and
// 1001 (B), each with their own bastion-uiserver and prompt client, and
// checks that each user is asked only about their own connections, that
// each user's rules decide only their own, that B can neither answer A's
// prompt nor read or change A's rules, through the agent's socket or A's
// service socket, and that UID 1002 (no rules service) and root fall under
// the system policy with no prompt anywhere.
func TestUIServerTwoUsers(t *testing.T) {
	b := uiBins(t)
	ns := testenv.NewNetNS(t)
	url := ns.HTTPServer(t, "127.0.0.1:0")
	port := urlPort(t, url)
	a := startPolicyAgent(t, ns, twoUserPolicy)
	ctx := testCtx(t, 3*time.Minute)
	userA, userB := newAccount(t, uidA, promptConfig), newAccount(t, uidB, promptConfig)
	startUIServer(t, a, userA)
	startUIServer(t, a, userB)
	wA, wB := watchPrompts(t, userA, 1), watchPrompts(t, userB, 1)
	curlExe := realExe(t, "curl")

	// heldCurl starts curl as uid and waits for its prompt at w.
	heldCurl := func(t *testing.T, uid uint32, w *PromptWatcher) (*Proc, *uiv1.Prompt) {
		t.Helper()
		mark := w.Mark()
		p := start(t, curl(ctx, ns, uid, url, 20*time.Second))
		pr := w.WaitAdded(t, mark, 10*time.Second, promptTo(uid, port))
		if got := pr.GetProcess(); got.GetExe() != curlExe || int(got.GetTgid()) != p.Pid() {
			t.Errorf("uid %d's prompt names pid %d exe %q; want curl, pid %d", uid, got.GetTgid(), got.GetExe(), p.Pid())
		}
		return p, pr
	}
	// answered answers pr "allow once" as u and waits until u's prompt
	// client w has seen it withdrawn: events after that are not its.
	answered := func(t *testing.T, u *account, w *PromptWatcher, pr *uiv1.Prompt) {
		t.Helper()
		if err := answerOnce(t, u, pr, ruleAllow); err != nil {
			t.Fatalf("uid %d answers its own prompt: %v", u.UID, err)
		}
		if reason := w.WaitWithdrawn(t, pr.GetId(), 10*time.Second); reason != "answered" {
			t.Errorf("uid %d's prompt withdrawn as %q, want answered", u.UID, reason)
		}
	}
	curlDone := func(t *testing.T, p *Proc, uid uint32) {
		t.Helper()
		if err := p.Wait(t, 30*time.Second); err != nil || p.Stdout() != "200" {
			t.Errorf("uid %d's curl after allow: %v, output %q %q", uid, err, p.Stdout(), p.Stderr())
		}
	}

	t.Run("each user gets only their own prompts", func(t *testing.T) {
		for _, tc := range []struct {
			uid         uint32
			mine, other *PromptWatcher
			u           *account
		}{
			{uidA, wA, wB, userA},
			{uidB, wB, wA, userB},
		} {
			otherMark := tc.other.Mark()
			p, pr := heldCurl(t, tc.uid, tc.mine)
			answered(t, tc.u, tc.mine, pr)
			curlDone(t, p, tc.uid)
			if evs := tc.other.Events(otherMark); len(evs) != 0 {
				t.Errorf("uid %d's connection reached the other user's prompt client: %s", tc.uid, describeEvents(evs))
			}
		}
	})

	t.Run("B cannot answer A's prompt or touch A's rules", func(t *testing.T) {
		bastionctlB := func(args ...string) (string, int) {
			return run(t, ns.Command(ctx, uidB, uidB, b.ctl, append([]string{"--agent-socket", a.Socket}, args...)...))
		}
		out, code := run(t, ctlCommand(ctx, ns, a, userA, "rules", "add", "--action", "allow", "--exe", "/usr/bin/wget", "--port", "1-1024", "--note", "A's rule"))
		if code != 0 {
			t.Fatalf("A adds a rule: exit %d: %s", code, out)
		}
		rulesBefore := rulesOf(t, ctx, ns, a, userA)
		if len(rulesBefore) != 1 {
			t.Fatalf("A's rules: %v, want the one just added", rulesBefore)
		}
		ruleID := rulesBefore[0].GetId()

		bMark := wB.Mark()
		p, pr := heldCurl(t, uidA, wA)
		entry := a.WaitPending(t, 5*time.Second, flowTo(tcp, 4, port))
		if entry.GetProcess().GetUid() != uidA {
			t.Fatalf("pending entry %s is not A's", describe(entry))
		}

		// Through the agent's socket.
		out, code = bastionctlB("decide", entry.GetId(), "allow")
		if code != ctl.ExitNotFound {
			t.Errorf("B: bastionctl decide of A's connection: exit %d (%q), want %d (not found, as a missing one)", code, out, ctl.ExitNotFound)
		}
		t.Logf("B: bastionctl decide %s allow: exit %d: %s", entry.GetId(), code, strings.TrimSpace(out))
		req, _ := json.Marshal(map[string]any{"uid": uidA, "rules": []any{}})
		if out, code := run(t, ns.Command(ctx, uidB, uidB, "grpcurl", "-plaintext", "-unix", "-d", string(req), a.Socket,
			"bastion.agent.v1.AgentService/SetRules")); code == 0 || !strings.Contains(out, "PermissionDenied") {
			t.Errorf("B: grpcurl SetRules for uid %d: exit %d, output %q; want PermissionDenied", uidA, code, out)
		}
		allowA, _ := json.Marshal(map[string]any{"uid": uidA, "rules": []any{map[string]any{"enabled": true, "action": "ACTION_ALLOW", "exe": curlExe}}})
		if out, code := run(t, ns.Command(ctx, uidB, uidB, "grpcurl", "-plaintext", "-unix", "-d", string(allowA), a.Socket,
			"bastion.agent.v1.AgentService/SetRules")); code == 0 || !strings.Contains(out, "PermissionDenied") {
			t.Errorf("B: grpcurl SetRules allowing A's curl: exit %d, output %q; want PermissionDenied", code, out)
		}

		// Through A's service socket: its directory is A's, 0700, so B
		// cannot even connect. Every command must fail and say why.
		for _, args := range [][]string{
			{"rules", "list"},
			{"rules", "add", "--action", "allow", "--exe", curlExe},
			{"rules", "rm", ruleID},
			{"rules", "disable", ruleID},
			{"rules", "export"},
			{"later", "list"},
			{"history"},
		} {
			out, code := bastionctlB(append([]string{"--ui-socket", userA.UISocket()}, args...)...)
			if code != ctl.ExitDenied || !strings.Contains(out, "permission denied") {
				t.Errorf("B: bastionctl --ui-socket A's %v: exit %d, output %q; want exit %d, a permission error", args, code, out, ctl.ExitDenied)
			}
			t.Logf("B: bastionctl --ui-socket A's %v: exit %d: %s", args, code, strings.TrimSpace(out))
		}
		// B's prompt client on A's socket fails at once: no prompt, no answer.
		cmd := ns.Command(ctx, uidB, uidB, b.ctl, "--agent-socket", a.Socket, "--ui-socket", userA.UISocket(), "prompt")
		cmd.Stdin = strings.NewReader("a\n1\n1\nn\ny\n")
		if out, code := run(t, cmd); code != ctl.ExitDenied || !strings.Contains(out, "permission denied") || strings.Contains(out, "wants to connect") {
			t.Errorf("B: bastionctl prompt on A's socket: exit %d, output %q; want a permission error and no prompt", code, out)
		}
		// B's own gRPC client of A's socket, connecting as B.
		bOnA, err := testenv.ClientAs(userA.UISocket(), uidB, uidB)
		if err != nil {
			t.Fatal(err)
		}
		defer bOnA.Close()
		if err := answerOnce(t, &account{Account: &testenv.Account{UID: uidB}, UI: uiv1.NewUIServiceClient(bOnA)}, pr, ruleAllow); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("B: AnswerPrompt of A's prompt over A's socket: %v, want permission denied", err)
		}
		// Root passes the directory's permissions, so this reaches the
		// service's own check: SO_PEERCRED says root, not A.
		out, code = run(t, ns.Command(ctx, 0, 0, b.ctl, "--agent-socket", a.Socket, "--ui-socket", userA.UISocket(), "rules", "list"))
		if code != ctl.ExitDenied {
			t.Errorf("root: bastionctl --ui-socket A's rules list: exit %d (%q), want %d (PermissionDenied from the service)", code, out, ctl.ExitDenied)
		}
		t.Logf("root: bastionctl --ui-socket A's rules list: exit %d: %s", code, strings.TrimSpace(out))
		if out, code := run(t, ns.Command(ctx, 0, 0, "grpcurl", "-plaintext", "-unix", "-d", `{"id":"`+ruleID+`"}`, userA.UISocket(),
			"bastion.ui.v1.UIService/DeleteRule")); code == 0 || !strings.Contains(out, "PermissionDenied") {
			t.Errorf("root: grpcurl DeleteRule on A's socket: exit %d, output %q; want PermissionDenied", code, out)
		}

		// Nothing B or root tried changed anything.
		if p.Exited() {
			t.Fatalf("A's curl ended while its prompt was open: %q %q", p.Stdout(), p.Stderr())
		}
		for _, ev := range wA.Events(0) {
			if ev.GetKind() == uiv1.PromptEvent_KIND_WITHDRAWN && ev.GetPrompt().GetId() == pr.GetId() {
				t.Fatalf("A's prompt was withdrawn (%s) by someone else's attempt", ev.GetReason())
			}
		}
		if evs := wB.Events(bMark); len(evs) != 0 {
			t.Errorf("B's prompt client saw A's connection: %s", describeEvents(evs))
		}
		if after := rulesOf(t, ctx, ns, a, userA); !slices.EqualFunc(rulesBefore, after, func(x, y *rulesv1.Rule) bool { return proto.Equal(x, y) }) {
			t.Errorf("A's rules changed:\nbefore %v\nafter  %v", rulesBefore, after)
		}
		answered(t, userA, wA, pr)
		curlDone(t, p, uidA)
	})

	t.Run("each user's rules decide only their own connections", func(t *testing.T) {
		added := ctlJSON[rulesv1.Rule](t, ctx, ns, a, userA, "rules", "add", "--action", "deny", "--exe", curlExe,
			"--dst", "127.0.0.1", "--port", strconv.Itoa(port))
		if len(added) != 1 || added[0].GetId() == "" {
			t.Fatalf("A: bastionctl rules add printed %v, want the new rule", added)
		}
		denyRule := added[0]
		markA, markB := wA.Mark(), wB.Mark()
		// A's curl is dropped by A's rule, at the agent, without a prompt.
		out, code := run(t, curl(ctx, ns, uidA, url, 2*time.Second))
		if code != 28 { // curl: operation timed out
			t.Errorf("A's curl under A's deny rule: exit %d, output %q; want a time-out (28)", code, out)
		}
		if evs := wA.Events(markA); len(evs) != 0 {
			t.Errorf("A was prompted although a rule covers the connection: %s", describeEvents(evs))
		}
		waitHistory(t, ctx, ns, a, userA, port, "rule:"+denyRule.GetId(), 1)

		// B's identical curl is B's own business: B is asked.
		p, pr := heldCurl(t, uidB, wB)
		answered(t, userB, wB, pr)
		curlDone(t, p, uidB)
		if evs := wA.Events(markA); len(evs) != 0 {
			t.Errorf("B's connection reached A: %s", describeEvents(evs))
		}
		if n := len(wB.Added(markB)); n != 1 {
			t.Errorf("B got %d prompts for one curl, want 1", n)
		}
	})

	t.Run("UIDs without a rules service fall under the system policy", func(t *testing.T) {
		markA, markB := wA.Mark(), wB.Mark()
		r, err := ns.RunDialer(ctx, b.dialer, uidNoService, uidNoService, "-net", "tcp4", "-addr", hostPort(false, port), "-timeout", "5s")
		if err != nil {
			t.Fatal(err)
		}
		if r.OK || r.Kind != "refused" || time.Duration(r.ElapsedUS)*time.Microsecond > time.Second {
			t.Errorf("uid %d (policy reject): dialer %+v, want refused at once", uidNoService, r)
		}
		r, err = ns.RunDialer(ctx, b.dialer, 0, 0, "-net", "tcp4", "-addr", hostPort(false, port), "-timeout", "5s")
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK {
			t.Errorf("root (policy allow): dialer %+v, want allowed", r)
		}
		if evs := append(wA.Events(markA), wB.Events(markB)...); len(evs) != 0 {
			t.Errorf("system-policy connections were prompted: %s", describeEvents(evs))
		}
		if pend := a.ListPending(t); len(pend) != 0 {
			t.Errorf("system-policy connections held: %v", pend)
		}
	})
}

var ruleIDPattern = regexp.MustCompile(`: allow, rule ([0-9a-f]+), forever`)

// TestUIServerForeverRuleSurvivesRestarts answers a prompt in `bastionctl
// prompt` with "allow forever, this destination and port" and checks that
// the rule then decides the program's next connection without any prompt,
// and still does after the agent restarts and after the service restarts,
// both after SIGTERM and after SIGKILL.
func TestUIServerForeverRuleSurvivesRestarts(t *testing.T) {
	uiBins(t)
	ns := testenv.NewNetNS(t)
	url := ns.HTTPServer(t, "127.0.0.1:0")
	port := urlPort(t, url)
	policy := policyFile(t, twoUserPolicy)
	a := startAgent(t, ns, "--config", policy)
	socket := a.Socket
	ctx := testCtx(t, 3*time.Minute)
	u := newAccount(t, uidA, promptConfig)
	svc := startUIServer(t, a, u)

	term := startCtlPrompt(t, ctx, ns, a, u)
	waitPromptClients(t, u, 1)
	w := watchPrompts(t, u, 2)

	p := start(t, curl(ctx, ns, uidA, url, 20*time.Second))
	first := w.WaitAdded(t, 0, 10*time.Second, promptTo(uidA, port))
	term.WaitOutput(t, 10*time.Second, "Action?")
	if out := term.Stdout(); !strings.Contains(out, "wants to connect to 127.0.0.1:"+strconv.Itoa(port)) || !strings.Contains(out, realExe(t, "curl")) {
		t.Errorf("bastionctl prompt does not show the connection:\n%s", out)
	}
	// A: allow always (forever, this destination and port).
	term.Type(t, "A")
	var m []string
	if !testenv.Poll(10*time.Second, func() bool {
		m = ruleIDPattern.FindStringSubmatch(term.Stdout())
		return m != nil || term.Exited()
	}) || m == nil {
		t.Fatalf("bastionctl prompt did not report a forever rule:\n%s", term.Stdout())
	}
	ruleID := m[1]
	if err := p.Wait(t, 30*time.Second); err != nil || p.Stdout() != "200" {
		t.Fatalf("curl answered allow: %v %q %q", err, p.Stdout(), p.Stderr())
	}
	// The first answer wins: the other prompt client sees it withdrawn.
	if reason := w.WaitWithdrawn(t, first.GetId(), 10*time.Second); reason != "answered" {
		t.Errorf("prompt withdrawn at the other client as %q, want answered", reason)
	}
	rs := rulesOf(t, ctx, ns, a, u)
	if len(rs) != 1 || rs[0].GetId() != ruleID || rs[0].GetLifetime() != rulesv1.Lifetime_LIFETIME_FOREVER ||
		rs[0].GetDst() != "127.0.0.1" || rs[0].GetDstPortMin() != uint32(port) || rs[0].GetExe() != realExe(t, "curl") {
		t.Fatalf("rules after the answer: %v; want one forever rule %s for curl to 127.0.0.1:%d", rs, ruleID, port)
	}

	decided := 0
	// decidedByRule checks that a curl passes with no prompt at either
	// prompt client and that the history credits the rule.
	decidedByRule := func(t *testing.T, w *PromptWatcher, term *ctlPrompt) {
		t.Helper()
		mark, termOut := w.Mark(), ""
		if term != nil {
			termOut = term.Stdout()
		}
		// A prompt would hold curl for 25s: the 5s connect time-out
		// fails it if the rule did not decide.
		curlOK(t, ctx, ns, uidA, url, 5*time.Second)
		if evs := w.Events(mark); len(evs) != 0 {
			t.Errorf("prompted although the rule covers the connection: %s", describeEvents(evs))
		}
		if term != nil && strings.Count(term.Stdout(), "wants to connect") != strings.Count(termOut, "wants to connect") {
			t.Errorf("bastionctl prompt showed a new prompt:\n%s", term.Stdout())
		}
		decided++
		waitHistory(t, ctx, ns, a, u, port, "rule:"+ruleID, decided)
	}
	// The steps share the agent and the service they restart, so they
	// run in this test, not in subtests (whose cleanups would stop them).
	t.Log("step: the rule decides the next connection")
	decidedByRule(t, w, term)

	t.Log("step: agent restart (SIGTERM, start again)")
	a.Stop(t)
	a = startAgentOn(t, ns, socket, "--config", policy)
	svc.WaitConnected(t)
	decidedByRule(t, w, term)

	for _, sig := range []string{"SIGTERM", "SIGKILL"} {
		t.Logf("step: service restart after %s", sig)
		if sig == "SIGKILL" {
			svc.Kill(t)
		} else {
			svc.Stop(t)
		}
		w.Close()
		// The agent keeps a user's rules while the service is away;
		// drop them so that only the restarted service's push from its
		// store can decide the next connection.
		clearAgentRules(t, a, uidA)
		svc = startUIServer(t, a, u)
		w = watchPrompts(t, u, 1)
		if rs := rulesOf(t, ctx, ns, a, u); len(rs) != 1 || rs[0].GetId() != ruleID {
			t.Fatalf("rules after the restart: %v, want %s", rs, ruleID)
		}
		decidedByRule(t, w, nil)
	}
}

// TestUIServerOnePromptForParallelConnections has one program of UID 1000
// open 500 connections to one destination at once: its prompt client gets
// exactly one prompt, and one answer releases all 500.
func TestUIServerOnePromptForParallelConnections(t *testing.T) {
	uiBins(t)
	const n = 500
	ns := testenv.NewNetNS(t)
	port := portOf(ns.Listen(t, "tcp4", "127.0.0.1:0").Addr())
	a := startPolicyAgent(t, ns, twoUserPolicy)
	ctx := testCtx(t, 2*time.Minute)
	u := newAccount(t, uidA, promptConfig)
	startUIServer(t, a, u)
	w := watchPrompts(t, u, 1)

	p := start(t, ns.Command(ctx, uidA, uidA, burstBin, "-addr", hostPort(false, port), "-n", strconv.Itoa(n), "-timeout", "60s"))
	pr := w.WaitAdded(t, 0, 10*time.Second, promptTo(uidA, port))
	if pr.GetProcess().GetExe() != burstBin || int(pr.GetProcess().GetTgid()) != p.Pid() {
		t.Errorf("prompt names %v, want the burst dialer, pid %d", pr.GetProcess(), p.Pid())
	}
	// Answer only once every connect() has been issued and the agent
	// holds all of their first packets under the one entry.
	testenv.WaitFor(t, 10*time.Second, "the burst issued", func() bool { return strings.Contains(p.Stdout(), `"issued":`) || p.Exited() })
	var held uint32
	if !testenv.Poll(20*time.Second, func() bool {
		held = 0
		for _, c := range a.ListPending(t) {
			if flowTo(tcp, 4, port)(c) {
				held += c.GetPackets()
			}
		}
		return held >= n
	}) {
		t.Fatalf("the agent holds %d packets for the burst, want %d; burst: %q %q", held, n, p.Stdout(), p.Stderr())
	}
	if added := w.Added(0); len(added) != 1 {
		t.Fatalf("%d prompts before answering, want 1: %s", len(added), describeEvents(w.Events(0)))
	}
	if err := answerOnce(t, u, pr, ruleAllow); err != nil {
		t.Fatalf("answer the prompt: %v", err)
	}
	if err := p.Wait(t, 90*time.Second); err != nil {
		t.Fatalf("burst dialer: %v: %q %q", err, p.Stdout(), p.Stderr())
	}
	lines := strings.Split(strings.TrimSpace(p.Stdout()), "\n")
	var res struct {
		Issued, OK, Failed int
		Errors             map[string]int
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("burst dialer output %q: %v", p.Stdout(), err)
	}
	if res.Issued != n || res.OK != n {
		t.Errorf("burst: %+v; want all %d connections established after one answer", res, n)
	}
	if added := w.Added(0); len(added) != 1 {
		t.Errorf("%d prompts for %d parallel connections, want exactly 1: %s", len(added), n, describeEvents(w.Events(0)))
	}
	if pend := a.ListPending(t); len(pend) != 0 {
		t.Errorf("still pending after the answer: %v", pend)
	}
}

// TestUIServerSilentActionAndDecideLater has no prompt client connected:
// the user's silent action (reject, from config.toml) applies at once, the
// connection is listed by `bastionctl later list`, and `bastionctl later
// rule ID --action allow` makes a rule that decides the next connection.
func TestUIServerSilentActionAndDecideLater(t *testing.T) {
	uiBins(t)
	ns := testenv.NewNetNS(t)
	url := ns.HTTPServer(t, "127.0.0.1:0")
	port := urlPort(t, url)
	a := startPolicyAgent(t, ns, twoUserPolicy)
	ctx := testCtx(t, 2*time.Minute)
	u := newAccount(t, uidA, "prompt_timeout = \"25s\"\nsilent_action = \"reject\"\n")
	startUIServer(t, a, u)
	if st, err := u.Status(ctx); err != nil || st.GetPromptClients() != 0 || st.GetSilentAction() != rulesv1.Action_ACTION_REJECT {
		t.Fatalf("status %v, %v; want no prompt client and silent reject from config.toml", st, err)
	}

	start := time.Now()
	out, code := run(t, curl(ctx, ns, uidA, url, 20*time.Second))
	// 7: could not connect (refused). A prompt or the deadline would
	// have taken 25s or given a time-out.
	if code != 7 || time.Since(start) > 5*time.Second {
		t.Errorf("curl with nobody to ask: exit %d after %v (%q); want refused at once", code, time.Since(start), out)
	}
	waitHistory(t, ctx, ns, a, u, port, "default", 1)
	var entry *uiv1.DecideLaterEntry
	testenv.WaitFor(t, 10*time.Second, "curl in the decide-later list", func() bool {
		for _, e := range ctlJSON[uiv1.DecideLaterEntry](t, ctx, ns, a, u, "later", "list") {
			if e.GetFlow().GetDstPort() == uint32(port) && e.GetProcess().GetExe() == realExe(t, "curl") {
				entry = e
				return true
			}
		}
		return false
	})
	if entry.GetApplied() != rulesv1.Action_ACTION_REJECT || entry.GetProcess().GetUid() != uidA {
		t.Errorf("decide-later entry %v: want applied reject, uid %d", entry, uidA)
	}

	rs := ctlJSON[rulesv1.Rule](t, ctx, ns, a, u, "later", "rule", entry.GetId(), "--action", "allow")
	if len(rs) != 1 || rs[0].GetId() == "" || rs[0].GetAction() != ruleAllow {
		t.Fatalf("later rule: %v, want the new allow rule", rs)
	}
	curlOK(t, ctx, ns, uidA, url, 5*time.Second)
	waitHistory(t, ctx, ns, a, u, port, "rule:"+rs[0].GetId(), 1)
	for _, e := range ctlJSON[uiv1.DecideLaterEntry](t, ctx, ns, a, u, "later", "list") {
		if e.GetId() == entry.GetId() {
			t.Errorf("entry %s still listed after making a rule from it", e.GetId())
		}
	}
}
