package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// tmuxPane is a terminal a person looks at: `bastionctl prompt` run as a
// user in a tmux pane, driven with send-keys and read with capture-pane.
type tmuxPane struct {
	t    *testing.T
	sock string
}

func (p *tmuxPane) tmux(args ...string) string {
	p.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", p.sock}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

// screen is the pane's whole scrollback, lines joined where they wrapped.
func (p *tmuxPane) screen() string { return p.tmux("capture-pane", "-p", "-J", "-S", "-1000") }

// waitScreen waits until the pane shows s n times, and returns when.
func (p *tmuxPane) waitScreen(s string, n int, timeout time.Duration) time.Time {
	p.t.Helper()
	if !testenv.Poll(timeout, func() bool { return strings.Count(p.screen(), s) >= n }) {
		p.t.Fatalf("the terminal never showed %q %d times in %v:\n%s", s, n, timeout, p.screen())
	}
	return time.Now()
}

// keys presses keys, as tmux names them ("a", "Enter", "Escape").
func (p *tmuxPane) keys(keys ...string) { p.tmux(append([]string{"send-keys"}, keys...)...) }

// TestTerminalPromptInTmux answers real prompts in `bastionctl prompt` in a
// tmux pane, as a person at a terminal does: one key (no Enter) allows
// once, allows always or denies (the program fails at once); three keys
// drop silently once; and the terminal says what finally happened when the
// deadline decides or another client answers. It logs the keystrokes and
// the seconds from the prompt on the screen to the program's verdict.
func TestTerminalPromptInTmux(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is needed to test the terminal prompt as a person uses it: apt-get install tmux")
	}
	b := bins(t)
	uiBins(t)
	ns := testenv.NewNetNS(t)
	urls := map[string]string{}
	for _, name := range []string{"once", "always", "deny", "drop", "deadline", "elsewhere"} {
		urls[name] = ns.HTTPServer(t, "127.0.0.1:0")
	}
	a := startPolicyAgent(t, ns, twoUserPolicy)
	u := newAccount(t, uidA, "prompt_timeout = \"4s\"\ntimeout_action = \"reject\"\nsilent_action = \"allow\"\n")
	startUIServer(t, a, u)
	ctx := testCtx(t, 4*time.Minute)

	pane := &tmuxPane{t: t, sock: filepath.Join(testenv.TempDir(t), "tmux.sock")}
	cmd := fmt.Sprintf("setpriv --reuid=%d --regid=%d --clear-groups env XDG_RUNTIME_DIR=%s %s --agent-socket %s prompt",
		u.UID, u.UID, u.RuntimeDir, b.ctl, a.Socket)
	pane.tmux("new-session", "-d", "-x", "220", "-y", "50", cmd+"; sleep 600")
	t.Cleanup(func() { exec.Command("tmux", "-S", pane.sock, "kill-server").Run() }) //nolint:errcheck // best effort
	pane.waitScreen("Press the key in brackets (no Enter needed)", 1, 30*time.Second)
	waitPromptClients(t, u, 1)

	type figure struct {
		answer  string
		keys    int
		seconds float64
	}
	var figures []figure
	prompts := 0
	// ask starts curl to url as the user and waits for its prompt.
	ask := func(url string, connectTimeout time.Duration) (*Proc, time.Time) {
		t.Helper()
		p := start(t, curl(ctx, ns, uidA, url, connectTimeout))
		prompts++
		shown := pane.waitScreen("curl wants to connect to 127.0.0.1:"+strconv.Itoa(urlPort(t, url)), 1, 15*time.Second)
		pane.waitScreen("[Enter] leave it", prompts, 5*time.Second)
		return p, shown
	}

	// a: allow once.
	p, shown := ask(urls["once"], 20*time.Second)
	pane.keys("a")
	if err := p.Wait(t, 20*time.Second); err != nil || p.Stdout() != "200" {
		t.Fatalf("curl after a: %v %q %q\n%s", err, p.Stdout(), p.Stderr(), pane.screen())
	}
	figures = append(figures, figure{"allow once (a)", 1, time.Since(shown).Seconds()})
	pane.waitScreen(": allow once", 1, 5*time.Second)

	// A: allow always; the next connection is not asked about.
	p, shown = ask(urls["always"], 20*time.Second)
	pane.keys("A")
	if err := p.Wait(t, 20*time.Second); err != nil || p.Stdout() != "200" {
		t.Fatalf("curl after A: %v %q\n%s", err, p.Stdout(), pane.screen())
	}
	figures = append(figures, figure{"allow always (A)", 1, time.Since(shown).Seconds()})
	pane.waitScreen(": allow, rule ", 1, 5*time.Second)
	curlOK(t, ctx, ns, uidA, urls["always"], 10*time.Second)
	if n := strings.Count(pane.screen(), "wants to connect to"); n != prompts {
		t.Errorf("the allow-always rule did not decide the next connection: %d prompts shown, want %d", n, prompts)
	}

	// d: deny once, and the program fails at once (no connect timeout).
	p, shown = ask(urls["deny"], 60*time.Second)
	pane.keys("d")
	if err := p.Wait(t, 10*time.Second); err == nil {
		t.Errorf("curl after d succeeded: %q", p.Stdout())
	}
	figures = append(figures, figure{"deny once (d), the program failed", 1, time.Since(shown).Seconds()})
	pane.waitScreen(": deny once", 1, 5*time.Second)

	// m s Enter: drop silently once, from the other choices.
	p, shown = ask(urls["drop"], 3*time.Second)
	pane.keys("m")
	pane.waitScreen("[s] drop silently", 1, 5*time.Second)
	pane.keys("s")
	pane.waitScreen("For how long?", 1, 5*time.Second)
	pane.keys("Enter")
	pane.waitScreen(": drop silently once", 1, 5*time.Second)
	figures = append(figures, figure{"drop silently once (m s Enter)", 3, time.Since(shown).Seconds()})
	if err := p.Wait(t, 20*time.Second); err == nil {
		t.Errorf("curl after a silent drop succeeded: %q", p.Stdout())
	}

	// Nobody answers: the terminal says that the deadline decided, and how.
	p, _ = ask(urls["deadline"], 30*time.Second)
	pane.waitScreen("timed out; the default applied: denied (refused at once)", 1, 20*time.Second)
	if err := p.Wait(t, 10*time.Second); err == nil {
		t.Errorf("curl after the deadline's reject succeeded")
	}

	// Another client answers: the terminal says so, with the answer.
	w := watchPrompts(t, u, 2)
	p, _ = ask(urls["elsewhere"], 20*time.Second)
	pr := w.WaitAdded(t, 0, 10*time.Second, func(q *uiv1.Prompt) bool { return q.GetFlow().GetDstPort() == uint32(urlPort(t, urls["elsewhere"])) })
	rule := &rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: pr.GetProcess().GetExe(), Lifetime: rulesv1.Lifetime_LIFETIME_ONCE}
	if _, err := u.UI.AnswerPrompt(ctx, &uiv1.AnswerPromptRequest{PromptId: pr.GetId(), Rule: rule}); err != nil {
		t.Fatal(err)
	}
	pane.waitScreen("allowed, answered in another prompt client", 1, 10*time.Second)
	if err := p.Wait(t, 20*time.Second); err != nil || p.Stdout() != "200" {
		t.Errorf("curl answered elsewhere: %v %q", err, p.Stdout())
	}

	for _, f := range figures {
		t.Logf("person's time: %-36s %d keystroke(s), %.2f s from the prompt on screen to the answer applied (scripted keys; add a person's reading time)",
			f.answer, f.keys, f.seconds)
		if f.seconds > 10 {
			t.Errorf("%s took %.1f s with scripted keys; the deadline is 25 s", f.answer, f.seconds)
		}
	}
	t.Logf("terminal:\n%s", pane.screen())
}
