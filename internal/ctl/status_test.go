package ctl

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

func TestStatus(t *testing.T) {
	tests := []struct {
		name          string
		ui, agent     bool
		code          int
		golden        string
		stderrSays    []string
		stderrNotSays string
	}{
		{"both", true, true, ExitOK, "status_both.golden", nil, "bastionctl"},
		{"rules service down", false, true, ExitOK, "status_agent_only.golden",
			[]string{"your rules service is not running (nothing answers at DIR/absent-ui.sock). Start it with"}, "agent"},
		{"agent down", true, false, ExitOK, "status_ui_only.golden",
			[]string{"the agent is not running (nothing answers at DIR/absent-agent.sock). Start it with `sudo systemctl start bastion-agent`"}, "rules service"},
		{"both down", false, false, ExitNoAgent, "status_none.golden",
			[]string{"the agent is not running", "your rules service is not running"}, "transport"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.ui, tc.agent)
			r := h.run(t, "", "status")
			if r.code != tc.code {
				t.Errorf("exit %d, want %d", r.code, tc.code)
			}
			for _, s := range tc.stderrSays {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr %q does not say %q", r.stderr, s)
				}
			}
			if tc.stderrNotSays != "" && strings.Contains(r.stderr, tc.stderrNotSays) {
				t.Errorf("stderr %q says %q", r.stderr, tc.stderrNotSays)
			}
			golden(t, tc.golden, r.stdout)
		})
	}
}

func historyEntry(sec int, action rulesv1.Action, by, ruleID string) *uiv1.HistoryEntry {
	return &uiv1.HistoryEntry{
		Time:    timestamppb.New(testNow.Add(time.Duration(sec) * time.Second)),
		Process: &agentv1.Process{Tgid: uint32(4000 + sec), Uid: 1000, Exe: "/usr/bin/curl", Args: []string{"curl", "example.com"}},
		Flow: &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 4, SrcIp: "10.0.0.2", SrcPort: 40000,
			DstIp: "93.184.216.34", DstPort: 443},
		Host: "example.com", Action: action, DecidedBy: by, RuleId: ruleID,
	}
}

func TestHistoryAndWatch(t *testing.T) {
	h := newHarness(t, true, false)
	h.ui.AddHistory(
		historyEntry(1, rulesv1.Action_ACTION_ALLOW, "rule:00000000000000aa", "00000000000000aa"),
		historyEntry(2, rulesv1.Action_ACTION_DENY, "prompt", "00000000000000bb"),
		historyEntry(3, rulesv1.Action_ACTION_DENY, "deadline", ""),
		historyEntry(4, rulesv1.Action_ACTION_REJECT, "default", ""),
	)
	r := h.run(t, "", "history")
	if r.code != ExitOK {
		t.Fatalf("history: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "history.golden", r.stdout)
	r = h.run(t, "", "history", "--limit", "2")
	if want := strings.Join(strings.Split(readGolden(t, "history.golden"), "\n")[2:], "\n"); r.stdout != want {
		t.Errorf("history --limit 2:\n%s\nwant the last two lines of the full history:\n%s", r.stdout, want)
	}
	r = h.run(t, "", "--json", "history", "--limit", "1")
	if r.code != ExitOK || strings.Count(r.stdout, "\n") != 1 || !strings.Contains(r.stdout, `"decided_by":"default"`) {
		t.Errorf("history --json --limit 1: exit %d: %s", r.code, r.stdout)
	}
	if r = h.run(t, "", "history", "--limit", "-1"); r.code != ExitUsage {
		t.Errorf("history --limit -1: exit %d, want %d", r.code, ExitUsage)
	}

	// watch prints what streams until it is stopped.
	out := newSyncBuffer()
	var errb strings.Builder
	env := h.env(t, strings.NewReader(""), nil, nil)
	env.Stdout, env.Stderr = out, &errb
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() { done <- Run(ctx, []string{"--ui-socket", h.uiSock, "watch"}, env) }()
	out.waitFor(t, "\n", 4)
	cancel()
	if code := <-done; code != ExitOK {
		t.Errorf("watch: exit %d: %s", code, errb.String())
	}
	if got := out.String(); got != readGolden(t, "history.golden") {
		t.Errorf("watch printed\n%s\nwant what history printed", got)
	}

	down := newHarness(t, false, false)
	if r = down.run(t, "", "watch"); r.code != ExitNoAgent {
		t.Errorf("watch with the service down: exit %d, want %d", r.code, ExitNoAgent)
	}
}

func TestLater(t *testing.T) {
	h := newHarness(t, true, false)
	entry := func(id string, p *uiv1.Prompt) *uiv1.DecideLaterEntry {
		return &uiv1.DecideLaterEntry{Id: id, Time: timestamppb.New(testNow.Add(-time.Hour)), Process: p.GetProcess(),
			Flow: p.GetFlow(), Host: p.GetHost(), Applied: rulesv1.Action_ACTION_DENY}
	}
	h.ui.AddDecideLater(entry("l1", testPrompt("x")), entry("l2", otherPrompt("y")), entry("l3", testPrompt("z")))
	r := h.run(t, "", "later", "list")
	if r.code != ExitOK {
		t.Fatalf("later list: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "later_list.golden", r.stdout)

	// The prompt's scope, then operand flags on top.
	r = h.run(t, "", "later", "rule", "l1", "--action", "allow", "--scope", "domain", "--for", "1h", "--note", "later")
	if r.code != ExitOK {
		t.Fatalf("later rule: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "later_rule.golden", r.stdout)
	r = h.run(t, "", "later", "rule", "l2", "--action", "deny", "--port", "53-54", "--with-cmdline")
	if r.code != ExitOK {
		t.Fatalf("later rule: exit %d: %s", r.code, r.stderr)
	}
	if r = h.run(t, "", "later", "rule", "l3", "--action", "allow", "--scope", "everywhere"); r.code != ExitUsage {
		t.Errorf("unknown scope: exit %d, want %d", r.code, ExitUsage)
	}
	if r = h.run(t, "", "later", "forget", "l3"); r.code != ExitOK || r.stdout != "forgot l3\n" {
		t.Errorf("later forget: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r = h.run(t, "", "later", "forget", "l3"); r.code != ExitNotFound {
		t.Errorf("later forget again: exit %d, want %d", r.code, ExitNotFound)
	}
	want := []*uiv1.ResolveDecideLaterRequest{
		{Id: "l1", Rule: &rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: "/usr/bin/curl", Host: "*.example.com",
			Lifetime: rulesv1.Lifetime_LIFETIME_DURATION, Expires: timestamppb.New(testNow.Add(time.Hour)), Note: "later"}},
		{Id: "l2", Rule: &rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_DENY, Exe: "/usr/bin/python3.11",
			Cmdline: `/usr/bin/python3 /home/alice/bin/sync-calendars\.py --config /home/alice/\.config/sync/calendars\.toml --verbose --server https://calendar\.example\.org/dav/ --since 2026-01-01 --until 2026-12-31`,
			Dst:     "2001:db8::53", DstPortMin: 53, DstPortMax: 54, Protocol: rulesv1.Protocol_PROTOCOL_UDP,
			Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}},
		{Id: "l3"},
		{Id: "l3"}, // forgotten already: NotFound
	}
	got := h.ui.CallsTo("ResolveDecideLater")
	if len(got) != len(want) {
		t.Fatalf("%d ResolveDecideLater requests, want %d", len(got), len(want))
	}
	for i := range want {
		if d := protoDiff(want[i], got[i].(*uiv1.ResolveDecideLaterRequest)); d != "" {
			t.Errorf("ResolveDecideLater request %d:\n%s", i, d)
		}
	}
	if r = h.run(t, "", "later", "list"); r.stdout != "Nothing to decide later.\n" {
		t.Errorf("later list when empty: %q", r.stdout)
	}
}

// TestStatusKernelDecisions: the status says how connections are decided
// in the kernel, whether it is on, off or unavailable, and shows the
// kernel's counters to root only.
func TestStatusKernelDecisions(t *testing.T) {
	const mech = "cgroup-sock-addr+xt-bpf"
	counters := &agentv1.KernelDecisions{Mechanism: mech, Entries: 120, LastMinuteKernel: 1, LastMinuteUserspace: 999,
		Allowed: 70, Denied: 2, Rejected: 1, Lost: 0, Packets: 71}
	for _, tc := range []struct {
		name string
		uid  uint32
		kd   *agentv1.KernelDecisions
		want string
	}{
		{"user", 1000, &agentv1.KernelDecisions{Mechanism: mech, Entries: 4, LastMinuteKernel: 30, LastMinuteUserspace: 10,
			Allowed: 99}, // not root's: the counters are not shown
			"kernel decisions: cgroup-sock-addr+xt-bpf; 4 remembered decisions in force\n" +
				"  last minute: 30 in the kernel, 10 in userspace (75% in the kernel)\n"},
		{"root", 0, counters,
			"kernel decisions: cgroup-sock-addr+xt-bpf; 120 remembered decisions in force\n" +
				"  last minute: 1 in the kernel, 999 in userspace (<1% in the kernel)\n" +
				"  kernel counters: allowed 70, denied 2, rejected 1, packets let through 71, records lost 0\n"},
		{"records lost", 0, &agentv1.KernelDecisions{Mechanism: mech, LastMinuteKernel: 5, Lost: 3},
			"kernel decisions: cgroup-sock-addr+xt-bpf; 0 remembered decisions in force\n" +
				"  last minute: 5 in the kernel, 0 in userspace (100% in the kernel)\n" +
				"  kernel counters: allowed 0, denied 0, rejected 0, packets let through 0, records lost 3 (decided, but missing from the history and counters)\n"},
		{"off", 0, &agentv1.KernelDecisions{Mechanism: "off", Reason: "kernel_decisions = false", LastMinuteUserspace: 8},
			"kernel decisions: off: kernel_decisions = false; every new connection goes through the queue\n" +
				"  last minute: 0 in the kernel, 8 in userspace (0% in the kernel)\n"},
		{"unavailable", 1000, &agentv1.KernelDecisions{Mechanism: "unavailable", Reason: "kernel decisions: attach connect4: operation not permitted\x1b[2J"},
			"kernel decisions: unavailable: kernel decisions: attach connect4: operation not permitted\\x1b[2J; every new connection goes through the queue\n" +
				"  last minute: no decisions\n"},
		{"maps unreadable", 1000, &agentv1.KernelDecisions{Mechanism: mech, Reason: "kernel decisions: list: bad file descriptor"},
			"kernel decisions: cgroup-sock-addr+xt-bpf; remembered decisions unknown: kernel decisions: list: bad file descriptor\n" +
				"  last minute: no decisions\n"},
		{"older agent", 1000, nil, "kernel decisions: unknown (the agent does not report them)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			c := &cli{out: &out}
			c.printKernelDecisions(&agentv1.GetStatusResponse{CallerUid: tc.uid, KernelDecisions: tc.kd})
			if out.String() != tc.want {
				t.Errorf("printed\n%s\nwant\n%s", out.String(), tc.want)
			}
		})
	}

	// --json has the same fields.
	h := newHarness(t, false, true)
	r := h.run(t, "", "--json", "status")
	var st agentv1.GetStatusResponse
	if err := protojson.Unmarshal([]byte(strings.SplitN(r.stdout, "\n", 2)[0]), &st); err != nil {
		t.Fatalf("status --json: %v: %s", err, r.stdout)
	}
	want := &agentv1.KernelDecisions{Mechanism: mech, Entries: 4, LastMinuteKernel: 30, LastMinuteUserspace: 10}
	if !proto.Equal(st.GetKernelDecisions(), want) || st.GetCounters().GetKernelDecisions() != 5 {
		t.Errorf("status --json: kernel decisions %v and counter %d, want %v and 5",
			st.GetKernelDecisions(), st.GetCounters().GetKernelDecisions(), want)
	}
}

// TestStatusSaysProtectionIsPaused: while the user's protection is paused,
// status says so and until when.
func TestStatusSaysProtectionIsPaused(t *testing.T) {
	h := newHarness(t, true, true)
	if r := h.run(t, "", "status"); strings.Contains(r.stdout, "paused") {
		t.Fatalf("status before any pause says paused:\n%s", r.stdout)
	}
	resp, err := h.ui.PauseProtection(context.Background(), &uiv1.PauseProtectionRequest{Duration: durationpb.New(5 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	want := "protection paused until " + resp.GetPausedUntil().AsTime().Local().Format("15:04:05")
	if r := h.run(t, "", "status"); !strings.Contains(r.stdout, want) {
		t.Errorf("status while paused does not say %q:\n%s", want, r.stdout)
	}
}
