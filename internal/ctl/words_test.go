package ctl

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/bastion-fw/bastion/internal/testenv"
	"github.com/bastion-fw/bastion/internal/testenv/fakeui"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// TestOptionsAnywhere: global options go after the command too, and
// command options after operands.
func TestOptionsAnywhere(t *testing.T) {
	h := newHarness(t, true, false)
	r := h.run(t, "", "rules", "add", "--action", "allow", "--exe", "/usr/bin/curl", "--forever", "--json")
	if r.code != ExitOK {
		t.Fatalf("rules add ... --json: exit %d: %s", r.code, r.stderr)
	}
	var added rulesv1.Rule
	if err := protojson.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &added); err != nil || added.GetId() == "" {
		t.Fatalf("rules add --json printed %q (%v), want the rule with its new id", r.stdout, err)
	}
	r = h.run(t, "", "rules", "list", "--json")
	if r.code != ExitOK || !strings.Contains(r.stdout, `"id":"`+added.GetId()+`"`) {
		t.Errorf("rules list --json: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r = h.run(t, "", "rules", "disable", added.GetId(), "--json"); r.code != ExitOK || !strings.HasPrefix(r.stdout, "{") {
		t.Errorf("rules disable ID --json: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
}

// TestAddWithIDIsIdempotent: `rules add --id` twice stores one rule.
func TestAddWithIDIsIdempotent(t *testing.T) {
	h := newHarness(t, true, false)
	for range 2 {
		if r := h.run(t, "", "rules", "add", "--id", "mine1", "--action", "deny", "--port", "25", "--forever"); r.code != ExitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	}
	if n := len(h.ui.Rules()); n != 1 {
		t.Errorf("%d rules after adding twice with one id, want 1", n)
	}
}

// TestHelp: `help CMD`, `CMD --help` and the list of commands.
func TestHelp(t *testing.T) {
	h := newHarness(t, false, false)
	for _, args := range [][]string{{"help", "rules", "add"}, {"rules", "add", "--help"}, {"rules", "add", "-h"}} {
		r := h.run(t, "", args...)
		if r.code != ExitOK || !strings.Contains(r.stdout, "usage: bastionctl rules add") || !strings.Contains(r.stdout, "-any") {
			t.Errorf("%v: exit %d, %q %q", args, r.code, r.stdout, r.stderr)
		}
	}
	r := h.run(t, "", "help")
	if r.code != ExitOK || !strings.Contains(r.stdout, "completion bash|zsh|fish") {
		t.Errorf("help: exit %d, %q", r.code, r.stdout)
	}
	r = h.run(t, "", "help", "rules")
	if r.code != ExitOK || !strings.Contains(r.stdout, "bastionctl rules import") {
		t.Errorf("help rules: exit %d, %q", r.code, r.stdout)
	}
}

// TestCompletionScriptsLoad: each script is valid for its shell (checked
// with the shells that are installed) and offers the commands and the
// options of `rules add`.
func TestCompletionScriptsLoad(t *testing.T) {
	h := newHarness(t, false, false)
	dir := t.TempDir()
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := h.run(t, "", "completion", sh)
		if r.code != ExitOK || !strings.Contains(r.stdout, "decisions") || !strings.Contains(r.stdout, "any-mount-ns") {
			t.Fatalf("completion %s: exit %d, %q", sh, r.code, r.stderr)
		}
		file := filepath.Join(dir, "c."+sh)
		if err := os.WriteFile(file, []byte(r.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := exec.LookPath(sh); err != nil {
			t.Logf("%s not installed: syntax not checked", sh)
			continue
		}
		if out, err := exec.Command(sh, "-n", file).CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v: %s", sh, err, out)
		}
	}
	// bash: the function completes `bastionctl rules a` to add.
	script := filepath.Join(dir, "c.bash")
	out, err := exec.Command("bash", "-c", `source "$1"; COMP_WORDS=(bastionctl rules a); COMP_CWORD=2; _bastionctl; echo "${COMPREPLY[@]}"`, "-", script).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "add" {
		t.Errorf("bash completion of `rules a`: %q %v", out, err)
	}
	out, err = exec.Command("bash", "-c", `source "$1"; COMP_WORDS=(bastionctl rules add --an); COMP_CWORD=3; _bastionctl; echo "${COMPREPLY[@]}"`, "-", script).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "--any --any-mount-ns" {
		t.Errorf("bash completion of `rules add --an`: %q %v", out, err)
	}
}

// TestManPage: `bastionctl man` is a roff page naming every command and
// the options of each.
func TestManPage(t *testing.T) {
	h := newHarness(t, false, false)
	r := h.run(t, "", "man")
	if r.code != ExitOK || !strings.HasPrefix(r.stdout, ".TH BASTIONCTL 1") {
		t.Fatalf("man: exit %d, %q", r.code, r.stderr)
	}
	for _, cmd := range commands() {
		if !strings.Contains(r.stdout, strings.ReplaceAll(cmd.name, "-", `\-`)) {
			t.Errorf("the page does not name %q", cmd.name)
		}
	}
	for _, opt := range []string{`\-\-any\-mount\-ns`, `\-\-follow`, `\-\-limit`, `\-\-scope`} {
		if !strings.Contains(r.stdout, opt) {
			t.Errorf("the page does not name option %s", opt)
		}
	}
}

// dropListener records the connections it accepts, so that a test can
// break them as a crash or a lost network would.
type dropListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *dropListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *dropListener) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

// droppingUI stores the first AddRule, then breaks the connection before
// answering; with down set, it stops listening as well.
type droppingUI struct {
	*fakeui.Service
	lis     *dropListener
	srv     *grpc.Server
	down    bool
	dropped atomic.Bool
}

func (d *droppingUI) AddRule(ctx context.Context, req *uiv1.AddRuleRequest) (*uiv1.AddRuleResponse, error) {
	resp, err := d.Service.AddRule(ctx, req)
	if d.dropped.CompareAndSwap(false, true) {
		if d.down {
			d.lis.Listener.Close()
		}
		d.lis.drop()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return resp, err
}

// TestAddOutcomeUnknown: a `rules add` whose connection drops after the
// service stored the rule (issue 14: "rules service not reachable", yet
// the rule was saved) retries with the same id and stores it once; when
// the service stays away, it says that the outcome is unknown and how to
// check and retry, not that the service was not reachable.
func TestAddOutcomeUnknown(t *testing.T) {
	for _, down := range []bool{false, true} {
		t.Run(fmt.Sprintf("down=%v", down), func(t *testing.T) {
			h := newHarness(t, false, false)
			sock := filepath.Join(h.dir, "drop.sock")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			d := &droppingUI{Service: h.ui, lis: &dropListener{Listener: l}, srv: grpc.NewServer(), down: down}
			uiv1.RegisterUIServiceServer(d.srv, d)
			go d.srv.Serve(d.lis) //nolint:errcheck // ends with Stop
			t.Cleanup(d.srv.Stop)
			h.uiSock = sock
			r := h.run(t, "", "rules", "add", "--action", "allow", "--exe", "/usr/bin/curl", "--forever")
			calls := h.ui.CallsTo("AddRule")
			if !down {
				if r.code != ExitOK || len(h.ui.Rules()) != 1 || len(calls) != 2 {
					t.Fatalf("exit %d (%s), %d rules, %d calls; want success, 1 rule, 2 calls", r.code, r.stderr, len(h.ui.Rules()), len(calls))
				}
				if a, b := calls[0].(*uiv1.AddRuleRequest).GetRule().GetId(), calls[1].(*uiv1.AddRuleRequest).GetRule().GetId(); a == "" || a != b {
					t.Errorf("the retry's id %q differs from the first's %q", b, a)
				}
				return
			}
			if r.code != ExitNoAgent || !strings.Contains(r.stderr, "may or may not have been added") ||
				!strings.Contains(r.stderr, "--id r000000000000001") || strings.Contains(r.stderr, "not running") {
				t.Errorf("exit %d, stderr %q; want the outcome unknown, with --id to retry", r.code, r.stderr)
			}
		})
	}
}

// TestInterruptIsQuiet: Ctrl-C (the context ends) while a command waits
// on a service ends it with exit 0 and no "context canceled".
func TestInterruptIsQuiet(t *testing.T) {
	h := newHarness(t, true, false)
	for _, args := range [][]string{{"watch"}, {"prompt"}} {
		ctx, cancel := context.WithCancel(t.Context())
		out, errb := newSyncBuffer(), newSyncBuffer()
		done := make(chan int, 1)
		inR, inW := io.Pipe()
		go func() {
			done <- Run(ctx, append([]string{"--ui-socket", h.uiSock, "--agent-socket", h.agentSock}, args...), h.env(t, inR, out, errb))
		}()
		// Wait until the command is watching, then interrupt it.
		testenv.WaitFor(t, 10*time.Second, "a watcher", func() bool {
			return len(h.ui.CallsTo("WatchHistory"))+len(h.ui.CallsTo("WatchPrompts")) > 0 || strings.Contains(out.String(), "Waiting")
		})
		cancel()
		code := <-done
		inW.Close()
		if code != ExitOK || errb.String() != "" {
			t.Errorf("%v interrupted: exit %d, stderr %q; want 0 and nothing", args, code, errb.String())
		}
	}
}

// TestAgentListsInWords: cache list names the scope as the flag spells it
// (destination-port), and an empty list says so in a sentence.
func TestAgentListsInWords(t *testing.T) {
	h := newHarness(t, false, true)
	r := h.run(t, "", "cache", "list")
	if r.code != ExitOK || !strings.Contains(r.stdout, " destination-port ") || strings.Contains(r.stdout, "destination_port") {
		t.Errorf("cache list: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r = h.run(t, "", "pending"); r.code != ExitOK || r.stdout != "No connections are waiting.\n" {
		t.Errorf("pending with nothing waiting: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r = h.run(t, "", "pending", "--json"); r.code != ExitOK || r.stdout != "" {
		t.Errorf("pending --json with nothing waiting: exit %d, %q", r.code, r.stdout)
	}
}
