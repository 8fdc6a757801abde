package ctl

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/inert/inerttest"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Strings a hostile program puts in its exe path, argv and comm.
const (
	osc52    = "\x1b]52;c;ZXZpbA==\x07" // writes "evil" to the clipboard
	hostExe  = "/tmp/b/exe\u202efdp.sh\x1b[2K"
	hostComm = "\x1b[31mcomm\u2066"
)

var hostArgs = []string{"curl" + osc52, "ok\rnc evil 4444", "nul\x00bel\a", "\u009b31m", strings.Repeat("A", 5000)}

func hostileProcess() *agentv1.Process {
	return &agentv1.Process{Pid: 666, Tgid: 666, Ppid: 1, Uid: 1001, Gid: 1001, Comm: hostComm, Exe: hostExe,
		Args: hostArgs, IdentifiedBy: "netfilter-link"}
}

func hostileFlow() *agentv1.Flow {
	return &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 4, SrcIp: "10.0.0.2", SrcPort: 40000,
		DstIp: "192.0.2.7", DstPort: 443}
}

func checkInert(t *testing.T, what, out string, maxLine int) {
	t.Helper()
	if raw := inerttest.RawControls(out, '\n'); raw != "" {
		t.Errorf("%s prints %q raw:\n%s", what, raw, out)
	}
	if !strings.Contains(out, `\x1b`) {
		t.Errorf("%s does not show the escapes visibly:\n%s", what, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if n := utf8.RuneCountInString(l); maxLine > 0 && n > maxLine {
			t.Errorf("%s prints a %d-rune line (the 5000-byte argument is not bounded): %.200s…", what, n, l)
		}
	}
}

func TestAgentCommandsShowHostileStringsInert(t *testing.T) {
	p := &agentv1.PendingConnection{Id: "c1", Process: hostileProcess(), Flow: hostileFlow(), Host: "evil\x1b.test",
		Packets: 1, Deadline: timestamppb.New(time.Now().Add(time.Minute)), DeadlineAction: agentv1.Action_ACTION_DENY}
	checkInert(t, "pending", describePending(p), 300)
	noExe := &agentv1.Process{Comm: hostComm, Tgid: 1}
	if out := describeProcess(noExe); inerttest.RawControls(out, '\n') != "" {
		t.Errorf("describeProcess by comm: %q", out)
	}
}

func TestUICommandsShowHostileStringsInert(t *testing.T) {
	h := newHarness(t, true, false)
	h.ui.AddHistory(&uiv1.HistoryEntry{Time: timestamppb.New(testNow), Process: hostileProcess(), Flow: hostileFlow(),
		Host: "h\u202e.test", Action: rulesv1.Action_ACTION_DENY, DecidedBy: "rule:\x1b[1m", RuleId: "\x1b[1m"})
	h.ui.AddDecideLater(&uiv1.DecideLaterEntry{Id: "l1", Time: timestamppb.New(testNow), Process: hostileProcess(), Flow: hostileFlow(),
		Applied: rulesv1.Action_ACTION_DENY})
	h.ui.SetRules(&rulesv1.Rule{Id: "r1", Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: hostExe,
		Cmdline: strings.Join(hostArgs, " "), Note: "note" + osc52, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER})
	for _, tc := range []struct {
		args    []string
		maxLine int
	}{
		{[]string{"history"}, 0},
		{[]string{"later", "list"}, 400},
		{[]string{"rules", "list"}, 400},
	} {
		r := h.run(t, "", tc.args...)
		if r.code != ExitOK {
			t.Errorf("%v: exit %d: %s", tc.args, r.code, r.stderr)
			continue
		}
		checkInert(t, strings.Join(tc.args, " "), r.stdout, tc.maxLine)
	}
}

// TestPromptShowsHostileStringsInert answers a prompt from a hostile
// program: shows everything ("m", the rule with its command line) and
// starts over; nothing raw reaches the terminal.
func TestPromptShowsHostileStringsInert(t *testing.T) {
	h := newHarness(t, true, false)
	h.ui.AddPrompt(&uiv1.Prompt{Id: "p1", Process: hostileProcess(), Flow: hostileFlow(),
		Deadline: timestamppb.New(testNow.Add(30 * time.Second)), DeadlineAction: rulesv1.Action_ACTION_DENY, Connections: 1})
	r := h.run(t, "m\n?\nr\n4\n4\ny\nn\n", "prompt")
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	checkInert(t, "prompt", r.stdout+r.stderr, 0)
	if !strings.Contains(r.stdout, `exe\u202efdp.sh\x1b[2K`) {
		t.Errorf("prompt does not show the exe's escapes:\n%s", r.stdout)
	}
}

// TestJSONOutputIsExactAndInert: --json keeps the exact strings (a
// decoder reads them back) and writes every control as a \u escape.
func TestJSONOutputIsExactAndInert(t *testing.T) {
	h := newHarness(t, true, false)
	h.ui.AddDecideLater(&uiv1.DecideLaterEntry{Id: "l1", Time: timestamppb.New(testNow), Process: hostileProcess(), Flow: hostileFlow(),
		Applied: rulesv1.Action_ACTION_DENY})
	r := h.run(t, "", "--json", "later", "list")
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if raw := inerttest.RawControls(r.stdout, '\n'); raw != "" {
		t.Errorf("--json prints %q raw: %s", raw, r.stdout)
	}
	if !strings.Contains(r.stdout, `\u001b]52;c;ZXZpbA==\u0007`) || !strings.Contains(r.stdout, `\u202e`) || !strings.Contains(r.stdout, `\u009b`) {
		t.Errorf("--json does not escape ESC, BEL, U+202E and U+009B as \\u: %s", r.stdout)
	}
	var got struct {
		Process struct {
			Exe  string   `json:"exe"`
			Comm string   `json:"comm"`
			Args []string `json:"args"`
		} `json:"process"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	if got.Process.Exe != hostExe || got.Process.Comm != hostComm || strings.Join(got.Process.Args, "|") != strings.Join(hostArgs, "|") {
		t.Errorf("--json changed the values: %+v", got.Process)
	}
}
