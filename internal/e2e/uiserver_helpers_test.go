package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// The rules service and the burst dialer, built once into bins(t)'s
// directory.
var (
	uiBuildOnce sync.Once
	uiServerBin string
	burstBin    string
	uiBuildErr  error
)

func uiBins(t *testing.T) binaries {
	t.Helper()
	b := bins(t)
	uiBuildOnce.Do(func() {
		if uiServerBin, uiBuildErr = testenv.GoBuild(buildDir, "bastion-uiserver", "github.com/bastion-fw/bastion/cmd/bastion-uiserver"); uiBuildErr != nil {
			return
		}
		burstBin, uiBuildErr = testenv.GoBuild(buildDir, "burstdialer", "github.com/bastion-fw/bastion/internal/e2e/burstdialer")
	})
	if uiBuildErr != nil {
		t.Fatalf("build binaries: %v", uiBuildErr)
	}
	return b
}

// twoUserPolicy is an agent configuration in which UIDs 1000 and 1001
// (the users with a rules service) are asked, root and system accounts are
// allowed, and UID 1002, which has no rules service, is rejected.
const twoUserPolicy = `[policy]
prompt_timeout = "30s"
timeout_action = "deny"
default_action = "allow"

[[policy.users]]
uids = "0-999"
action = "allow"

[[policy.users]]
uids = "1000-1001"
action = "ask"

[[policy.users]]
uids = "1002"
action = "reject"
`

// policyFile writes config as an agent configuration file.
func policyFile(t *testing.T, config string) string {
	t.Helper()
	path := filepath.Join(testenv.TempDir(t), "agent.toml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startPolicyAgent starts an agent with config as its configuration file.
func startPolicyAgent(t *testing.T, ns *testenv.NS, config string) *Agent {
	t.Helper()
	return startAgent(t, ns, "--config", policyFile(t, config))
}

// account is a desktop user as the rules service sees one: a UID, a home
// and XDG runtime, data and config directories, each 0700 and owned by the
// user, and a gRPC client of the user's rules service that connects as the
// user (the service admits only its owner, by SO_PEERCRED).
type account struct {
	*testenv.Account
	UI uiv1.UIServiceClient
}

// newAccount makes uid's directories, with config (TOML) as its rules
// service's config, and a client of its rules service's socket.
func newAccount(t *testing.T, uid uint32, config string) *account {
	t.Helper()
	u := &account{Account: testenv.NewAccount(t, uid, config)}
	conn, err := testenv.ClientAs(u.UISocket(), uid, uid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	u.UI = uiv1.NewUIServiceClient(conn)
	return u
}

// UIServer is a running bastion-uiserver of one user.
type UIServer struct {
	*testenv.UIServer
}

// startUIServer starts bastion-uiserver as u, with u's environment (so
// its socket, store and config come from the XDG directories) and the
// agent's socket, and waits until it is connected to the agent. It is
// stopped when t ends, its log shown if t failed.
func startUIServer(t *testing.T, a *Agent, u *account) *UIServer {
	t.Helper()
	uiBins(t)
	return &UIServer{testenv.StartUIServer(t, testenv.Options{Bin: uiServerBin, Socket: a.Socket, User: u.Account, LogLevel: "debug"})}
}

// Stop ends the service with SIGTERM and fails t unless it exited cleanly.
func (s *UIServer) Stop(t *testing.T) {
	t.Helper()
	if err := s.UIServer.Stop(); err != nil {
		t.Fatalf("uiserver of uid %d did not stop cleanly: %v", s.User.UID, err)
	}
}

// Kill ends the service with SIGKILL, as a crash would.
func (s *UIServer) Kill(t *testing.T) {
	t.Helper()
	if err := s.UIServer.Kill(); err != nil {
		t.Fatal(err)
	}
}

// Status returns the service's GetStatus, called as its user.
func (u *account) Status(ctx context.Context) (*uiv1.GetStatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return u.UI.GetStatus(ctx, &uiv1.GetStatusRequest{})
}

// WaitConnected waits until the service says it is connected to the agent
// (it has pushed its rules and watches the user's pending connections).
func (s *UIServer) WaitConnected(t *testing.T) {
	t.Helper()
	if err := s.UIServer.WaitConnected(context.Background(), testenv.UIServerStartTimeout); err != nil {
		t.Fatal(err)
	}
}

// waitPromptClients waits until u's service counts n prompt clients.
func waitPromptClients(t *testing.T, u *account, n uint32) {
	t.Helper()
	var got uint32
	if !testenv.Poll(10*time.Second, func() bool {
		st, err := u.Status(context.Background())
		got = st.GetPromptClients()
		return err == nil && got == n
	}) {
		t.Fatalf("uid %d's service has %d prompt clients, want %d", u.UID, got, n)
	}
}

// PromptWatcher is a prompt client inside the test: a WatchPrompts stream
// opened as the user, recording every event.
type PromptWatcher struct {
	u      *account
	mu     sync.Mutex
	events []*uiv1.PromptEvent
	err    error
	done   chan struct{}
	cancel context.CancelFunc
}

// watchPrompts makes a prompt client of u's service, closed when t ends,
// and waits until the service counts clients prompt clients in all.
func watchPrompts(t *testing.T, u *account, clients uint32) *PromptWatcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := u.UI.WatchPrompts(ctx, &uiv1.WatchPromptsRequest{}, grpc.WaitForReady(true))
	if err != nil {
		cancel()
		t.Fatalf("WatchPrompts as uid %d: %v", u.UID, err)
	}
	w := &PromptWatcher{u: u, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(w.done)
		for {
			ev, err := stream.Recv()
			w.mu.Lock()
			if err != nil {
				w.err = err
				w.mu.Unlock()
				return
			}
			w.events = append(w.events, ev)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(w.Close)
	waitPromptClients(t, u, clients)
	return w
}

// Close ends the stream.
func (w *PromptWatcher) Close() {
	w.cancel()
	<-w.done
}

func (w *PromptWatcher) Mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.events)
}

func (w *PromptWatcher) Events(from int) []*uiv1.PromptEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.events[min(from, len(w.events)):])
}

// Added returns the prompts added from event index from on.
func (w *PromptWatcher) Added(from int) []*uiv1.Prompt {
	var out []*uiv1.Prompt
	for _, ev := range w.Events(from) {
		if ev.GetKind() == uiv1.PromptEvent_KIND_ADDED {
			out = append(out, ev.GetPrompt())
		}
	}
	return out
}

// WaitAdded waits for a prompt added from index from on that matches.
func (w *PromptWatcher) WaitAdded(t *testing.T, from int, timeout time.Duration, match func(*uiv1.Prompt) bool) *uiv1.Prompt {
	t.Helper()
	var found *uiv1.Prompt
	if testenv.Poll(timeout, func() bool {
		for _, p := range w.Added(from) {
			if match(p) {
				found = p
				return true
			}
		}
		return false
	}) {
		return found
	}
	w.mu.Lock()
	err := w.err
	w.mu.Unlock()
	t.Fatalf("uid %d's prompt client: no matching prompt within %v (stream error: %v); events: %v", w.u.UID, timeout, err, describeEvents(w.Events(from)))
	return nil
}

// WaitWithdrawn waits for prompt id to be withdrawn and returns the reason.
func (w *PromptWatcher) WaitWithdrawn(t *testing.T, id string, timeout time.Duration) string {
	t.Helper()
	var reason string
	if !testenv.Poll(timeout, func() bool {
		for _, ev := range w.Events(0) {
			if ev.GetKind() == uiv1.PromptEvent_KIND_WITHDRAWN && ev.GetPrompt().GetId() == id {
				reason = ev.GetReason()
				return true
			}
		}
		return false
	}) {
		t.Fatalf("uid %d's prompt %s not withdrawn within %v; events %v", w.u.UID, id, timeout, describeEvents(w.Events(0)))
	}
	return reason
}

func describeEvents(evs []*uiv1.PromptEvent) string {
	var b strings.Builder
	for _, ev := range evs {
		p := ev.GetPrompt()
		fmt.Fprintf(&b, "\n  %v %s %s uid=%d exe=%q dst=%s:%d conns=%d", ev.GetKind(), ev.GetReason(), p.GetId(),
			p.GetProcess().GetUid(), p.GetProcess().GetExe(), p.GetFlow().GetDstIp(), p.GetFlow().GetDstPort(), p.GetConnections())
	}
	return b.String()
}

// promptTo matches prompts of uid for TCP to port.
func promptTo(uid uint32, port int) func(*uiv1.Prompt) bool {
	return func(p *uiv1.Prompt) bool {
		return p.GetProcess().GetUid() == uid && p.GetFlow().GetProtocol() == tcp && p.GetFlow().GetDstPort() == uint32(port)
	}
}

// answerOnce answers prompt p as its user with action for its connections
// only (LIFETIME_ONCE, this program, destination and port).
func answerOnce(t *testing.T, u *account, p *uiv1.Prompt, action rulesv1.Action) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := u.UI.AnswerPrompt(ctx, &uiv1.AnswerPromptRequest{PromptId: p.GetId(), Rule: &rulesv1.Rule{
		Enabled:    true,
		Action:     action,
		Exe:        p.GetProcess().GetExe(),
		Dst:        p.GetFlow().GetDstIp(),
		DstPortMin: p.GetFlow().GetDstPort(),
		DstPortMax: p.GetFlow().GetDstPort(),
		Protocol:   rulesv1.Protocol(p.GetFlow().GetProtocol()),
		Lifetime:   rulesv1.Lifetime_LIFETIME_ONCE,
	}})
	return err
}

// runSplit runs cmd and returns stdout, stderr and the exit code.
func runSplit(t *testing.T, cmd *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), errb.String(), 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return string(out), errb.String(), ee.ExitCode()
	}
	t.Fatalf("%v: %v: %s %s", cmd.Args, err, out, errb.String())
	return "", "", -1
}

// ctlCommand is bastionctl run as u in ns, with u's XDG_RUNTIME_DIR (so it
// finds u's rules service) and the agent's socket.
func ctlCommand(ctx context.Context, ns *testenv.NS, a *Agent, u *account, args ...string) *exec.Cmd {
	cmd := ns.Command(ctx, u.UID, u.UID, builtBins.ctl, append([]string{"--agent-socket", a.Socket}, args...)...)
	cmd.Env = append(cmd.Env, "XDG_RUNTIME_DIR="+u.RuntimeDir)
	return cmd
}

// ctlJSON runs `bastionctl --json ARGS` as u, fails t unless it exits 0,
// and parses each output line into a new T.
func ctlJSON[T any, PT interface {
	*T
	proto.Message
}](t *testing.T, ctx context.Context, ns *testenv.NS, a *Agent, u *account, args ...string) []PT {
	t.Helper()
	out, errOut, code := runSplit(t, ctlCommand(ctx, ns, a, u, append([]string{"--json"}, args...)...))
	if code != 0 {
		t.Fatalf("bastionctl --json %s as uid %d: exit %d: %s", strings.Join(args, " "), u.UID, code, errOut)
	}
	var res []PT
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		m := PT(new(T))
		if err := protojson.Unmarshal([]byte(line), m); err != nil {
			t.Fatalf("bastionctl --json %s: line %q: %v", strings.Join(args, " "), line, err)
		}
		res = append(res, m)
	}
	return res
}

// rulesOf lists u's rules with bastionctl, as proto text for comparing.
func rulesOf(t *testing.T, ctx context.Context, ns *testenv.NS, a *Agent, u *account) []*rulesv1.Rule {
	t.Helper()
	return ctlJSON[rulesv1.Rule](t, ctx, ns, a, u, "rules", "list")
}

// waitHistory waits until u's history (bastionctl history) holds at least
// n entries for TCP to port decided by decidedBy, and returns them.
func waitHistory(t *testing.T, ctx context.Context, ns *testenv.NS, a *Agent, u *account, port int, decidedBy string, n int) []*uiv1.HistoryEntry {
	t.Helper()
	var got, all []*uiv1.HistoryEntry
	if !testenv.Poll(20*time.Second, func() bool {
		all = ctlJSON[uiv1.HistoryEntry](t, ctx, ns, a, u, "history")
		got = got[:0]
		for _, e := range all {
			if e.GetFlow().GetDstPort() == uint32(port) && e.GetDecidedBy() == decidedBy {
				got = append(got, e)
			}
		}
		return len(got) >= n
	}) {
		var b strings.Builder
		for _, e := range all {
			fmt.Fprintf(&b, "\n  %s %v uid=%d %s :%d by %q rule %q", e.GetTime().AsTime().Format(time.TimeOnly), e.GetAction(),
				e.GetProcess().GetUid(), e.GetProcess().GetExe(), e.GetFlow().GetDstPort(), e.GetDecidedBy(), e.GetRuleId())
		}
		t.Fatalf("uid %d's history: %d entries to port %d decided by %q, want %d; history:%s", u.UID, len(got), port, decidedBy, n, b.String())
	}
	return got
}

// curl is curl run as uid in ns, fetching url and printing only the HTTP
// status; it gives up connecting after connectTimeout.
func curl(ctx context.Context, ns *testenv.NS, uid uint32, url string, connectTimeout time.Duration) *exec.Cmd {
	secs := strconv.FormatFloat(connectTimeout.Seconds(), 'f', -1, 64)
	return ns.Command(ctx, uid, uid, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
		"--connect-timeout", secs, "--max-time", strconv.Itoa(int(connectTimeout.Seconds())+10), url)
}

// curlOK runs curl as uid and fails t unless it fetched url.
func curlOK(t *testing.T, ctx context.Context, ns *testenv.NS, uid uint32, url string, connectTimeout time.Duration) {
	t.Helper()
	out, code := run(t, curl(ctx, ns, uid, url, connectTimeout))
	if code != 0 || out != "200" {
		t.Fatalf("curl %s as uid %d: exit %d, output %q; want 200", url, uid, code, out)
	}
}

// ctlPrompt is `bastionctl prompt` run as a user, its answers written to
// its standard input.
type ctlPrompt struct {
	*Proc
	stdin io.WriteCloser
}

func startCtlPrompt(t *testing.T, ctx context.Context, ns *testenv.NS, a *Agent, u *account) *ctlPrompt {
	t.Helper()
	cmd := ctlCommand(ctx, ns, a, u, "prompt")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &ctlPrompt{Proc: start(t, cmd), stdin: stdin}
	t.Cleanup(func() { stdin.Close() })
	return p
}

// WaitOutput waits until the prompt's output contains s.
func (p *ctlPrompt) WaitOutput(t *testing.T, timeout time.Duration, s string) {
	t.Helper()
	if !testenv.Poll(timeout, func() bool { return strings.Contains(p.Stdout(), s) || p.Exited() }) || !strings.Contains(p.Stdout(), s) {
		t.Fatalf("bastionctl prompt: no %q within %v (exited: %v); stdout:\n%s\nstderr:\n%s", s, timeout, p.Exited(), p.Stdout(), p.Stderr())
	}
}

// Type writes lines to the prompt's input.
func (p *ctlPrompt) Type(t *testing.T, lines ...string) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, strings.Join(lines, "\n")+"\n"); err != nil {
		t.Fatalf("write to bastionctl prompt: %v", err)
	}
}

// clearAgentRules removes every rule the agent holds for uid (as root), so
// that what decides uid's connections afterwards must come from a new push.
func clearAgentRules(t *testing.T, a *Agent, uid uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Client.SetRules(ctx, &agentv1.SetRulesRequest{Uid: proto.Uint32(uid)}); err != nil {
		t.Fatalf("clear the agent's rules of uid %d: %v", uid, err)
	}
}
