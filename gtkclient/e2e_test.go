package gtkclient

// The end-to-end test of the prompt: the real agent in a network
// namespace, the real rules service of UID 1000, and bastion-gtk run as
// UID 1000 on the test's Xvfb. A curl is held by the agent, the prompt
// window shows it, a click on Allow (forever, this destination and port)
// lets it through, and the next curl passes by the stored rule with no
// prompt.
//
// bastion-gtk must connect as the user (the rules service admits only its
// owner, by SO_PEERCRED), so the test binary runs itself as UID 1000 in
// "child" mode (TestMain sees e2eChildEnv): it runs the program through
// run, the code path of Run, and drives the real widgets on the GTK thread
// with glib.IdleAdd, reporting what it saw and did as JSON lines on its
// standard output.
//
// The agent and the rules service start through internal/testenv, as in
// internal/e2e.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"
	"google.golang.org/grpc"

	"github.com/bastion-fw/bastion/internal/rules"
	"github.com/bastion-fw/bastion/internal/testenv"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

const (
	// e2eChildEnv, set to the rules service's socket, makes the test
	// binary the prompt client of TestE2EPromptClickAllowsCurl.
	e2eChildEnv = "BASTION_GTK_E2E_CHILD"
	// e2eDstEnv is the "IP:port" whose prompt the child answers.
	e2eDstEnv = "BASTION_GTK_E2E_DST"
	// e2eButtonEnv is the button the child clicks: "allow" (the default),
	// "deny" or "later".
	e2eButtonEnv = "BASTION_GTK_E2E_BUTTON"
	e2eUID       = 1000

	// e2eAgentPolicy asks about UID 1000's connections and allows all
	// others; a prompt waits 30s at most.
	e2eAgentPolicy = `[policy]
prompt_timeout = "30s"
timeout_action = "deny"
default_action = "allow"

[[policy.users]]
uids = "0-999"
action = "allow"

[[policy.users]]
uids = "1000"
action = "ask"
`
	// e2eUserConfig is UID 1000's rules-service config: without a prompt
	// client, or without an answer, the connection is denied, so a curl
	// can only pass by the answer or by the rule it made.
	e2eUserConfig = "prompt_timeout = \"25s\"\ntimeout_action = \"deny\"\nsilent_action = \"deny\"\n"
)

// e2eReport is one line of the child's standard output.
type e2eReport struct {
	// Event is "shown" (the prompt is on screen and the choice made),
	// "answered" (the window moved on after the click), "finished" or
	// "error".
	Event    string `json:"event"`
	PromptID string `json:"prompt_id,omitempty"`
	// The prompt's labels.
	Title   string `json:"title,omitempty"`
	Exe     string `json:"exe,omitempty"`
	Process string `json:"process,omitempty"`
	Dest    string `json:"dest,omitempty"`
	Port    string `json:"port,omitempty"`
	Preview string `json:"preview,omitempty"`
	// EarlyClick is what a click on Allow did before the buttons armed:
	// "ignored", "answered" (wrong), or "not tried" when the prompt had
	// been up for longer than the arm delay already.
	EarlyClick string `json:"early_click,omitempty"`
	// Shown lists every prompt the window showed, in order.
	Shown   []string `json:"shown,omitempty"`
	Visible bool     `json:"visible,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// TestE2EPromptClickAllowsCurl: a curl in a network namespace → a GTK
// prompt → a click → curl succeeds, and the next curl succeeds with no
// prompt, through the real agent and the real rules service.
func TestE2EPromptClickAllowsCurl(t *testing.T) {
	needGTK(t)
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "go", "ip", "nsenter", "iptables", "curl")
	bins := buildE2EBins(t)
	ns := testenv.NewNetNS(t)
	srvURL := ns.HTTPServer(t, "127.0.0.1:0")
	u, err := url.Parse(srvURL)
	if err != nil {
		t.Fatal(err)
	}
	dst := u.Host
	port, _ := strconv.Atoi(u.Port())
	curlPath, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal(err)
	}
	curlExe, err := filepath.EvalSymlinks(curlPath) // the executable the agent names
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)

	agentSock := startE2EAgent(t, ns, bins.agent)
	user := newE2EUser(t, e2eUID)
	startE2EUIServer(t, bins.uiserver, agentSock, user)
	// An independent prompt client and history reader, as the user.
	prompts := recordStream(t, func(ctx context.Context) (grpc.ServerStreamingClient[uiv1.PromptEvent], error) {
		return user.ui.WatchPrompts(ctx, &uiv1.WatchPromptsRequest{}, grpc.WaitForReady(true))
	})
	history := recordStream(t, func(ctx context.Context) (grpc.ServerStreamingClient[uiv1.HistoryEntry], error) {
		return user.ui.WatchHistory(ctx, &uiv1.WatchHistoryRequest{}, grpc.WaitForReady(true))
	})
	waitStatus(t, user, "the witness prompt client", func(st *uiv1.GetStatusResponse) bool { return st.GetPromptClients() == 1 })

	gtkc := startGTKChild(t, bins.self, user, dst)
	waitStatus(t, user, "bastion-gtk as a prompt client", func(st *uiv1.GetStatusResponse) bool { return st.GetPromptClients() == 2 })

	// The first curl: held by the agent until the prompt is answered.
	curl1 := startCurl(t, ctx, ns, srvURL, 20*time.Second)
	shown := gtkc.next(t, 60*time.Second)
	if shown.Event != "shown" {
		t.Fatalf("bastion-gtk: %+v, want the prompt shown", shown)
	}
	t.Logf("prompt %s on screen: %q, %s, %s, %s; rule: %q; early click %s", shown.PromptID, shown.Title, shown.Process,
		shown.Dest, shown.Port, shown.Preview, shown.EarlyClick)
	if curl1.exited() {
		t.Errorf("curl finished before the prompt was answered: %q %q", curl1.stdout.String(), curl1.stderr.String())
	}
	for _, c := range []struct {
		what, got string
		ok        bool
	}{
		{"title", shown.Title, shown.Title == "curl wants to connect to "+dst},
		{"program", shown.Exe, shown.Exe == curlExe},
		{"process", shown.Process, strings.HasPrefix(shown.Process, fmt.Sprintf("PID %d, user ", curl1.cmd.Process.Pid)) &&
			strings.HasSuffix(shown.Process, fmt.Sprintf("(uid %d)", e2eUID))},
		{"destination", shown.Dest, shown.Dest == "127.0.0.1"},
		{"port", shown.Port, strings.HasPrefix(shown.Port, "port "+u.Port()) && strings.HasSuffix(shown.Port, "· TCP · IPv4")},
		{"rule preview", shown.Preview, strings.Contains(shown.Preview, dst) && strings.HasSuffix(shown.Preview, ", forever")},
	} {
		if !c.ok {
			t.Errorf("the prompt's %s is %q", c.what, c.got)
		}
	}
	switch shown.EarlyClick {
	case "ignored":
	case "not tried":
		t.Log("the prompt was up for longer than the arm delay before the child saw it: early click not tried")
	default:
		t.Errorf("a click on Allow before the buttons armed: %q, want it ignored", shown.EarlyClick)
	}

	answered := gtkc.next(t, 30*time.Second)
	if answered.Event != "answered" || answered.Error != "" {
		t.Fatalf("bastion-gtk after the click: %+v", answered)
	}
	if err := curl1.wait(t, 30*time.Second); err != nil || curl1.stdout.String() != "200" {
		t.Fatalf("curl after the click on Allow: %v, output %q, stderr %q", err, curl1.stdout.String(), curl1.stderr.String())
	}

	// The answer is the rule the rules service stored.
	rs := listRules(t, user)
	if len(rs) != 1 {
		t.Fatalf("rules after the answer: %v, want one", rs)
	}
	r := rs[0]
	if r.GetId() == "" || !r.GetEnabled() || r.GetAction() != rulesv1.Action_ACTION_ALLOW || r.GetLifetime() != rulesv1.Lifetime_LIFETIME_FOREVER ||
		r.GetExe() != curlExe || r.GetDst() != "127.0.0.1" || r.GetDstPortMin() != uint32(port) || r.GetDstPortMax() != uint32(port) ||
		r.GetProtocol() != rulesv1.Protocol_PROTOCOL_TCP || r.GetHost() != "" || r.GetCmdline() != "" {
		t.Fatalf("stored rule %v; want allow %s → TCP 127.0.0.1:%d forever", r, curlExe, port)
	}
	// The service had exactly this one prompt, answered by bastion-gtk.
	evs := prompts.wait(t, "the prompt withdrawn", func(evs []*uiv1.PromptEvent) bool {
		return slices.ContainsFunc(evs, func(ev *uiv1.PromptEvent) bool { return ev.GetKind() == uiv1.PromptEvent_KIND_WITHDRAWN })
	})
	var added []string
	for _, ev := range evs {
		switch ev.GetKind() {
		case uiv1.PromptEvent_KIND_ADDED:
			added = append(added, ev.GetPrompt().GetId())
		case uiv1.PromptEvent_KIND_WITHDRAWN:
			if ev.GetPrompt().GetId() != shown.PromptID || ev.GetReason() != "answered" {
				t.Errorf("prompt %s withdrawn (%q); want %s answered", ev.GetPrompt().GetId(), ev.GetReason(), shown.PromptID)
			}
		}
	}
	if !slices.Equal(added, []string{shown.PromptID}) {
		t.Errorf("prompts added at the rules service: %v, want only %s", added, shown.PromptID)
	}

	// The second curl passes by the rule, with no prompt: a prompt would
	// hold it for 25s, so the 5s connect time-out would fail it.
	mark := len(prompts.all())
	curl2 := startCurl(t, ctx, ns, srvURL, 5*time.Second)
	if err := curl2.wait(t, 30*time.Second); err != nil || curl2.stdout.String() != "200" {
		t.Fatalf("second curl: %v, output %q, stderr %q", err, curl2.stdout.String(), curl2.stderr.String())
	}
	t.Logf("the second curl passed in %v", curl2.elapsed().Round(time.Millisecond))
	by := "rule:" + r.GetId()
	history.wait(t, "the second curl in the history, decided by "+by, func(es []*uiv1.HistoryEntry) bool {
		return slices.ContainsFunc(es, func(e *uiv1.HistoryEntry) bool {
			return int(e.GetProcess().GetTgid()) == curl2.cmd.Process.Pid && e.GetFlow().GetDstPort() == uint32(port) &&
				e.GetDecidedBy() == by && e.GetAction() == rulesv1.Action_ACTION_ALLOW
		})
	})
	if !testenv.Poll(20*time.Second, func() bool {
		rs := listRules(t, user)
		return len(rs) == 1 && rs[0].GetHits() >= 1
	}) {
		t.Errorf("the rule's hits after the second curl: %v, want at least 1", listRules(t, user))
	}
	if evs := prompts.all()[mark:]; len(evs) != 0 {
		t.Errorf("the second curl was prompted for although the rule covers it: %v", evs)
	}
	fin := gtkc.finish(t)
	if fin.Event != "finished" || !slices.Equal(fin.Shown, []string{shown.PromptID}) || fin.Visible {
		t.Errorf("bastion-gtk at the end: %+v; want only prompt %s shown, the window hidden", fin, shown.PromptID)
	}
}

// e2eBins are the programs the test runs, in a directory UID 1000 can read.
type e2eBins struct {
	agent, uiserver, self string
}

func buildE2EBins(t *testing.T) e2eBins {
	t.Helper()
	dir := testenv.TempDir(t)
	var b e2eBins
	var err error
	if b.agent, err = testenv.GoBuild(dir, "bastion-agent", "github.com/bastion-fw/bastion/cmd/bastion-agent"); err != nil {
		t.Fatal(err)
	}
	if b.uiserver, err = testenv.GoBuild(dir, "bastion-uiserver", "github.com/bastion-fw/bastion/cmd/bastion-uiserver"); err != nil {
		t.Fatal(err)
	}
	// The test binary itself, for the child: go test's own copy sits in
	// a 0700 directory.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b.self = filepath.Join(dir, "gtkclient.test")
	testenv.CopyExecutable(t, self, b.self)
	return b
}

// proc is a process the test started and ends by PID at cleanup.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr testenv.SyncBuffer
	done           chan struct{}
	err            error
	began, ended   time.Time
}

// startProc starts cmd, sending its output to p's buffers unless cmd has
// its own, and ends it at cleanup: stop is the signal to send first (the
// process gets 20s to exit), logging its stderr if t failed.
func startProc(t *testing.T, name string, cmd *exec.Cmd, stop syscall.Signal) *proc {
	t.Helper()
	p := &proc{cmd: cmd, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = &p.stdout
	}
	cmd.Stderr = &p.stderr
	p.began = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		p.ended = time.Now()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			cmd.Process.Signal(stop)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				t.Errorf("%s did not exit within 20s of %v; killed", name, stop)
				cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() {
			t.Logf("%s (%s) stderr:\n%s", name, strings.Join(cmd.Args, " "), p.stderr.String())
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// elapsed is how long the process ran; call it after it exited.
func (p *proc) elapsed() time.Duration {
	<-p.done
	return p.ended.Sub(p.began)
}

func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%v still running after %v", p.cmd.Args, timeout)
		return nil
	}
}

// startE2EAgent starts bastion-agent on ns with loopback interception and
// e2eAgentPolicy, and waits until its API answers; it returns the socket.
func startE2EAgent(t *testing.T, ns *testenv.NS, bin string) string {
	t.Helper()
	config := filepath.Join(testenv.TempDir(t), "agent.toml")
	if err := os.WriteFile(config, []byte(e2eAgentPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	// The queue number is only this agent's (internal/e2e uses 4301 on).
	a := testenv.StartAgent(t, testenv.Options{Bin: bin, NetNS: ns.Name, InterceptLoopback: true, QueueNum: 4290,
		Config: config, LogLevel: "debug"})
	return a.Socket
}

// e2eUser is a desktop user: a UID with its own home and XDG directories
// (0700, owned by it) and a client of its rules service that connects as
// the user.
type e2eUser struct {
	*testenv.Account
	ui uiv1.UIServiceClient
}

func newE2EUser(t *testing.T, uid uint32) *e2eUser {
	t.Helper()
	u := &e2eUser{Account: testenv.NewAccount(t, uid, e2eUserConfig)}
	conn, err := testenv.ClientAs(u.UISocket(), uid, uid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	u.ui = uiv1.NewUIServiceClient(conn)
	return u
}

// startE2EUIServer starts u's bastion-uiserver as u and waits until it is
// connected to the agent.
func startE2EUIServer(t *testing.T, bin, agentSock string, u *e2eUser) {
	t.Helper()
	testenv.StartUIServer(t, testenv.Options{Bin: bin, Socket: agentSock, User: u.Account, LogLevel: "debug"})
}

func userStatus(u *e2eUser) (*uiv1.GetStatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return u.ui.GetStatus(ctx, &uiv1.GetStatusRequest{})
}

func waitStatus(t *testing.T, u *e2eUser, what string, cond func(*uiv1.GetStatusResponse) bool) {
	t.Helper()
	var st *uiv1.GetStatusResponse
	var err error
	if !testenv.Poll(30*time.Second, func() bool {
		st, err = userStatus(u)
		return err == nil && cond(st)
	}) {
		t.Fatalf("waiting 30s for %s: status %v, err %v", what, st, err)
	}
}

func listRules(t *testing.T, u *e2eUser) []*rulesv1.Rule {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := u.ui.ListRules(ctx, &uiv1.ListRulesRequest{})
	if err != nil {
		t.Fatalf("ListRules as uid %d: %v", u.UID, err)
	}
	return resp.GetRules()
}

// startCurl starts curl as UID 1000 in ns; it prints only the HTTP status
// and gives up connecting after connectTimeout.
func startCurl(t *testing.T, ctx context.Context, ns *testenv.NS, url string, connectTimeout time.Duration) *proc {
	t.Helper()
	cmd := ns.Command(ctx, e2eUID, e2eUID, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
		"--connect-timeout", strconv.Itoa(int(connectTimeout.Seconds())), "-m", "20", url)
	return startProc(t, "curl", cmd, syscall.SIGKILL)
}

// streamRecord records every message of a server stream (it does not
// reconnect: the services stay up for the whole test).
type streamRecord[T any] struct {
	mu     sync.Mutex
	msgs   []*T
	err    error
	change chan struct{} // closed and replaced on every message
}

func recordStream[T any](t *testing.T, open func(context.Context) (grpc.ServerStreamingClient[T], error)) *streamRecord[T] {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := open(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r := &streamRecord[T]{change: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := stream.Recv()
			r.mu.Lock()
			if err != nil {
				r.err = err
			} else {
				r.msgs = append(r.msgs, m)
			}
			close(r.change)
			r.change = make(chan struct{})
			r.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return r
}

func (r *streamRecord[T]) all() []*T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// wait waits up to 20s until cond holds for the messages so far.
func (r *streamRecord[T]) wait(t *testing.T, what string, cond func([]*T) bool) []*T {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		msgs, err, ch := slices.Clone(r.msgs), r.err, r.change
		r.mu.Unlock()
		if cond(msgs) {
			return msgs
		}
		if err != nil {
			t.Fatalf("waiting for %s: stream ended: %v; got %v", what, err, msgs)
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no %s within 20s; got %v", what, msgs)
		}
	}
}

// gtkChild is bastion-gtk run as the user by the test binary in child mode.
type gtkChild struct {
	p       *proc
	stdin   io.WriteCloser
	reports chan e2eReport
}

func startGTKChild(t *testing.T, self string, u *e2eUser, dst string, env ...string) *gtkChild {
	t.Helper()
	cmd := u.AsUser(exec.Command(self, "-test.run=^$"), append([]string{e2eChildEnv + "=" + u.UISocket(), e2eDstEnv + "=" + dst,
		"DISPLAY=" + os.Getenv("DISPLAY"), "GDK_BACKEND=x11", "NO_AT_BRIDGE=1", "GSETTINGS_BACKEND=memory"}, env...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &gtkChild{stdin: stdin, reports: make(chan e2eReport, 16)}
	// Interrupt: the child finishes as when its input ends.
	c.p = startProc(t, "bastion-gtk (test child)", cmd, syscall.SIGTERM)
	t.Cleanup(func() { stdin.Close() })
	go func() {
		defer close(c.reports)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var r e2eReport
			if json.Unmarshal(sc.Bytes(), &r) == nil && r.Event != "" {
				c.reports <- r
			}
		}
	}()
	return c
}

// next returns the child's next report.
func (c *gtkChild) next(t *testing.T, timeout time.Duration) e2eReport {
	t.Helper()
	select {
	case r, ok := <-c.reports:
		if !ok {
			err := c.p.wait(t, 10*time.Second)
			t.Fatalf("bastion-gtk (test child) exited: %v; stderr:\n%s", err, c.p.stderr.String())
		}
		if r.Event == "error" {
			t.Fatalf("bastion-gtk (test child): %s", r.Error)
		}
		return r
	case <-time.After(timeout):
		t.Fatalf("no report from bastion-gtk (test child) within %v", timeout)
	}
	return e2eReport{}
}

// finish ends the child's input; it reports what it showed and exits.
func (c *gtkChild) finish(t *testing.T) e2eReport {
	t.Helper()
	c.stdin.Close()
	r := c.next(t, 20*time.Second)
	if err := c.p.wait(t, 20*time.Second); err != nil {
		t.Errorf("bastion-gtk (test child) exit: %v", err)
	}
	return r
}

// e2eChildMain runs bastion-gtk as the prompt client of the end-to-end
// test: through run, as Run does, with a hook that drives its prompt.
func e2eChildMain() int {
	out := json.NewEncoder(os.Stdout)
	cfg := DefaultConfig()
	cfg.UISocket, cfg.Notify = os.Getenv(e2eChildEnv), false
	dst := os.Getenv(e2eDstEnv)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	o := appOptions{started: func(a *app) {
		var shown []string // GTK thread only
		a.prompt.onShown = func(id string) { shown = append(shown, id) }
		go func() {
			defer cancel()
			fin, err := e2eDrive(a, cfg, dst, out)
			if err != nil {
				out.Encode(e2eReport{Event: "error", Error: err.Error()})
				code <- 1
				return
			}
			if err := gtkDo(func() { fin.Shown, fin.Visible = slices.Clone(shown), a.prompt.win.GetVisible() }); err != nil {
				out.Encode(e2eReport{Event: "error", Error: err.Error()})
				code <- 1
				return
			}
			out.Encode(fin)
			code <- 0
		}()
	}}
	if err := run(ctx, cfg, log, o); err != nil {
		out.Encode(e2eReport{Event: "error", Error: err.Error()})
		return 1
	}
	select {
	case c := <-code:
		return c
	default:
		out.Encode(e2eReport{Event: "error", Error: "the GTK main loop ended early"})
		return 1
	}
}

// e2eDrive answers the prompt for dst like a user: it waits for the
// prompt, clicks Allow once too early, chooses "forever" and "this
// destination and port", clicks Allow once the buttons arm, and waits
// until the window moves on. Then it waits for its input to end.
func e2eDrive(a *app, cfg Config, dst string, out *json.Encoder) (e2eReport, error) {
	p := a.prompt
	var shown e2eReport
	err := gtkWait(60*time.Second, "a prompt for "+dst, func() bool {
		if !p.win.GetVisible() || p.shown == nil {
			return false
		}
		fl := p.shown.primary().GetFlow()
		if net.JoinHostPort(fl.GetDstIp(), strconv.Itoa(int(fl.GetDstPort()))) != dst {
			return false
		}
		shown = e2eReport{Event: "shown", PromptID: p.shownID, Title: labelText(p.title), Exe: labelText(p.exe),
			Process: labelText(p.process), Dest: labelText(p.dest), Port: labelText(p.port)}
		// Before the buttons arm, a click must do nothing.
		shown.EarlyClick = "not tried"
		if a.now().Sub(p.shownAt) < cfg.ArmDelay {
			p.allow.Clicked()
			shown.EarlyClick = "ignored"
			if p.busy || p.shown == nil {
				shown.EarlyClick = "answered"
			}
		}
		for i, l := range promptLifetimes {
			if l.life == rules.Forever {
				p.lifetime.SetActive(i)
			}
		}
		p.scope.SetActive(slices.Index(p.scopes, rules.ScopeDestinationPort))
		shown.Preview = labelText(p.preview)
		return true
	})
	if err != nil {
		return e2eReport{}, err
	}
	if err := out.Encode(shown); err != nil {
		return e2eReport{}, err
	}
	button := map[string]*gtk.Button{"": p.allow, "allow": p.allow, "deny": p.deny, "later": p.later}[os.Getenv(e2eButtonEnv)]
	if button == nil {
		return e2eReport{}, fmt.Errorf("no button %q", os.Getenv(e2eButtonEnv))
	}
	if err := gtkWait(10*time.Second, "the buttons to arm", func() bool {
		if !p.armed || !button.GetSensitive() {
			return false
		}
		button.Clicked()
		return true
	}); err != nil {
		return e2eReport{}, err
	}
	answered := e2eReport{Event: "answered"}
	if err := gtkWait(20*time.Second, "the answer", func() bool {
		if e := labelText(p.errLabel); e != "" {
			answered.Error = e
			return true
		}
		return p.shownID != shown.PromptID
	}); err != nil {
		return e2eReport{}, err
	}
	if err := out.Encode(answered); err != nil {
		return e2eReport{}, err
	}
	io.Copy(io.Discard, os.Stdin) // until the test is done
	return e2eReport{Event: "finished"}, nil
}

// gtkDo runs f on the GTK thread and waits for it.
func gtkDo(f func()) error {
	done := make(chan struct{})
	glib.IdleAdd(func() {
		defer close(done)
		f()
	})
	select {
	case <-done:
		return nil
	case <-time.After(20 * time.Second):
		return errors.New("the GTK main loop did not run a function within 20s")
	}
}

// gtkWait waits until cond, run on the GTK thread, holds.
func gtkWait(timeout time.Duration, what string, cond func() bool) error {
	var err error
	if testenv.Poll(timeout, func() bool {
		var ok bool
		err = gtkDo(func() { ok = cond() })
		return ok || err != nil
	}) {
		return err
	}
	return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
}

// TestE2EPromptDenyAndDecideLater: through the real agent and rules
// service, a click on Deny makes curl fail at once (a refusal, not a
// silent drop that holds it until its connect timeout), and a click on
// Decide later applies the silent action at once (not at the prompt's
// deadline) and lists the connection under decide later.
func TestE2EPromptDenyAndDecideLater(t *testing.T) {
	needGTK(t)
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "go", "ip", "nsenter", "iptables", "curl")
	bins := buildE2EBins(t)
	ns := testenv.NewNetNS(t)
	srvURL := ns.HTTPServer(t, "127.0.0.1:0")
	u, err := url.Parse(srvURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	agentSock := startE2EAgent(t, ns, bins.agent)
	user := newE2EUser(t, e2eUID)
	startE2EUIServer(t, bins.uiserver, agentSock, user)
	history := recordStream(t, func(ctx context.Context) (grpc.ServerStreamingClient[uiv1.HistoryEntry], error) {
		return user.ui.WatchHistory(ctx, &uiv1.WatchHistoryRequest{}, grpc.WaitForReady(true))
	})

	// Deny: curl gets "connection refused" at once.
	gtkc := startGTKChild(t, bins.self, user, u.Host, e2eButtonEnv+"=deny")
	waitStatus(t, user, "bastion-gtk as a prompt client", func(st *uiv1.GetStatusResponse) bool { return st.GetPromptClients() == 1 })
	curl1 := startCurl(t, ctx, ns, srvURL, 20*time.Second)
	if r := gtkc.next(t, 60*time.Second); r.Event != "shown" {
		t.Fatalf("bastion-gtk: %+v, want the prompt shown", r)
	}
	clicked := time.Now() // the child clicks once the buttons arm
	if r := gtkc.next(t, 30*time.Second); r.Event != "answered" || r.Error != "" {
		t.Fatalf("bastion-gtk after Deny: %+v", r)
	}
	if err := curl1.wait(t, 30*time.Second); err == nil {
		t.Fatalf("curl passed after Deny: %q", curl1.stdout.String())
	}
	failedAfter := time.Since(clicked)
	if failedAfter > 10*time.Second {
		t.Errorf("curl failed %v after Deny with %q; want a refusal at once, not its 20s connect timeout",
			failedAfter.Round(time.Millisecond), curl1.stderr.String())
	}
	t.Logf("curl failed %v after the prompt was on screen (Deny clicked once the buttons armed, 1 s): %s", failedAfter.Round(time.Millisecond), strings.TrimSpace(curl1.stderr.String()))
	gtkc.finish(t)
	// The child answered "forever, this destination and port": a rule
	// that rejects. Delete it, so that the next curl is asked about.
	rs := listRules(t, user)
	if len(rs) != 1 || rs[0].GetAction() != rulesv1.Action_ACTION_REJECT {
		t.Fatalf("rules after Deny: %v, want one that rejects", rs)
	}
	if _, err := user.ui.DeleteRule(ctx, &uiv1.DeleteRuleRequest{Id: rs[0].GetId()}); err != nil {
		t.Fatal(err)
	}

	// Decide later: the silent action (deny, in this user's config) now,
	// and the connection on the decide-later list.
	gtkc = startGTKChild(t, bins.self, user, u.Host, e2eButtonEnv+"=later")
	waitStatus(t, user, "bastion-gtk as a prompt client", func(st *uiv1.GetStatusResponse) bool { return st.GetPromptClients() == 1 })
	curl2 := startCurl(t, ctx, ns, srvURL, 20*time.Second)
	if r := gtkc.next(t, 60*time.Second); r.Event != "shown" {
		t.Fatalf("bastion-gtk: %+v, want the prompt shown", r)
	}
	clicked = time.Now()
	if r := gtkc.next(t, 30*time.Second); r.Event != "answered" || r.Error != "" {
		t.Fatalf("bastion-gtk after Decide later: %+v", r)
	}
	history.wait(t, "curl decided by the user's Decide later", func(es []*uiv1.HistoryEntry) bool {
		return slices.ContainsFunc(es, func(e *uiv1.HistoryEntry) bool {
			return int(e.GetProcess().GetTgid()) == curl2.cmd.Process.Pid && e.GetDecidedBy() == "later" &&
				e.GetAction() == rulesv1.Action_ACTION_DENY
		})
	})
	decidedAfter := time.Since(clicked)
	if decidedAfter > 10*time.Second {
		t.Errorf("Decide later took %v to decide; want at once, not at the 25s deadline", decidedAfter)
	}
	resp, err := user.ui.ListDecideLater(ctx, &uiv1.ListDecideLaterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if es := resp.GetEntries(); len(es) != 1 || es[0].GetFlow().GetDstIp() != "127.0.0.1" || es[0].GetApplied() != rulesv1.Action_ACTION_DENY {
		t.Errorf("decide-later list %v, want the curl connection, denied", es)
	}
	t.Logf("Decide later: decided and listed %v after the prompt was on screen (clicked once the buttons armed, 1 s)", decidedAfter.Round(time.Millisecond))
	gtkc.finish(t)
}
