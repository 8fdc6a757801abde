package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// rawSequences are what user B plants in its program's file name and argv,
// each a thing a terminal acts on or a reader is fooled by.
var rawSequences = map[string]string{
	"ESC":                   "\x1b",
	"OSC 52 clipboard":      "\x1b]52;c;ZXZpbA==\x07",
	"BEL":                   "\a",
	"CR":                    "\r",
	"C1 CSI U+009B":         "\u009b",
	"RLO U+202E":            "\u202e",
	"RLI U+2067":            "\u2067",
	"line separator U+2028": "\u2028",
	"invalid UTF-8":         "\xff",
}

// TestAttackTerminalEscapesInProcessNames: B (UID 1001) runs a copy of
// the dialer whose file name holds U+202E and ESC ("dial‮fdp.sh" poses as
// "dialhs.pdf") with argv holding an OSC 52 clipboard write, BEL, CR, a C1
// CSI, bidi controls, a line separator, an invalid byte and 4 KiB of
// filler. The connection is held; root's `bastionctl pending`, `bastionctl
// decisions` and B's terminal prompt (`bastionctl prompt`, its full command
// line shown with m) must not print any planted sequence raw, and
// `--json pending` must keep the exact strings with every control escaped.
func TestAttackTerminalEscapesInProcessNames(t *testing.T) {
	b := bins(t)
	uiBins(t)
	ns := testenv.NewNetNS(t)
	s := startServers(t, ns)
	a := startPolicyAgent(t, ns, twoUserPolicy)
	userB := newAccount(t, 1001, "")
	startUIServer(t, a, userB)
	ctx := testCtx(t, 2*time.Minute)
	prompt := startCtlPrompt(t, ctx, ns, a, userB)
	waitPromptClients(t, userB, 1)

	exe := copyExe(t, b.dialer, "dial\u202efdp.sh\x1b[2K")
	args := []string{"-net", "tcp4", "-addr", hostPort(false, s.tcp4), "-reply", "-timeout", "60s",
		"\x1b]52;c;ZXZpbA==\x07", "ok\rnc evil.example 4444", "bell\a", "\u009b31m", "\u2067x\u2069\u2028y", "bad\xffbyte",
		strings.Repeat("A", 4096)}
	p := start(t, ns.Command(ctx, 1001, 1001, exe, args...))
	conn := a.WaitPending(t, 15*time.Second, func(c *agentv1.PendingConnection) bool {
		return flowTo(tcp, 4, s.tcp4)(c) && c.GetProcess().GetUid() == 1001
	})
	if got := conn.GetProcess().GetExe(); !strings.HasSuffix(got, "dial\u202efdp.sh\x1b[2K") {
		t.Errorf("precondition: the agent names exe %q, want the planted file name", got)
	}

	root := func(args ...string) string {
		t.Helper()
		out, code := run(t, ns.Command(ctx, 0, 0, b.ctl, append([]string{"--agent-socket", a.Socket}, args...)...))
		if code != 0 {
			t.Fatalf("bastionctl %v as root: exit %d: %q", args, code, out)
		}
		return out
	}
	outputs := map[string]string{}
	outputs["pending"] = root("pending")

	// --json stays exact: a decoder reads back the planted strings (the
	// invalid byte as U+FFFD, the one thing the API cannot carry).
	jsonOut := root("--json", "pending")
	var pc struct {
		Process struct {
			Exe  string   `json:"exe"`
			Args []string `json:"args"`
		} `json:"process"`
	}
	if err := json.Unmarshal([]byte(strings.Split(strings.TrimSpace(jsonOut), "\n")[0]), &pc); err != nil {
		t.Errorf("bastionctl --json pending: %v: %q", err, jsonOut)
	} else if pc.Process.Exe != exe || len(pc.Process.Args) != len(args)+1 || pc.Process.Args[8] != "\x1b]52;c;ZXZpbA==\x07" {
		t.Errorf("bastionctl --json pending changed the strings: exe %q args %q", pc.Process.Exe, pc.Process.Args)
	}
	outputs["pending --json"] = jsonOut

	prompt.WaitOutput(t, 15*time.Second, "wants to connect to")
	prompt.Type(t, "m", "?")
	prompt.WaitOutput(t, 10*time.Second, "command line: ")
	if !testenv.Poll(10*time.Second, func() bool { return strings.Count(prompt.Stdout(), "wants to connect to") >= 2 }) {
		t.Errorf("bastionctl prompt did not show the prompt again after ?: %q", prompt.Stdout())
	}

	a.Decide(t, conn.GetId(), reject, scopeConn)
	p.Wait(t, 30*time.Second)
	outputs["decisions"] = root("decisions")
	outputs["prompt (B's terminal)"] = prompt.Stdout() + prompt.Stderr()

	tries, through := 0, 0
	for what, out := range outputs {
		if !strings.Contains(out, "dial") {
			t.Errorf("%s does not show the connection at all: %q", what, out)
		}
		for name, seq := range rawSequences {
			tries++
			if n := strings.Count(out, seq); n > 0 {
				through++
				t.Errorf("%s prints %s raw (%d times)", what, name, n)
			}
		}
		if what == "pending" || what == "decisions" { // the prompt's m shows all, on purpose
			for _, l := range strings.Split(out, "\n") {
				if len(l) > 2048 {
					t.Errorf("%s prints a %d-byte line: the 4 KiB argument is not bounded", what, len(l))
				}
			}
		}
	}
	if t.Failed() {
		for what, out := range outputs {
			t.Logf("%s:\n%q", what, out)
		}
	}
	reportAttack(t, "raw terminal escape, bidi or invalid byte from B's exe/argv in root's and B's bastionctl output", tries, through, 0)
}
