package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// Binaries built once per test binary, on first use.
type binaries struct {
	agent, ctl, dialer string
}

var (
	buildOnce sync.Once
	builtBins binaries
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// bins returns the agent, bastionctl and dialer, built into a directory
// every UID may read, and makes sure the tools the tests run are there.
func bins(t *testing.T) binaries {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "go", "ip", "nsenter", "iptables", "curl", "wget", "nc", "grpcurl")
	buildOnce.Do(func() {
		if buildDir, buildErr = testenv.MakeTempDir("bastion-e2e-bin-"); buildErr != nil {
			return
		}
		for _, b := range []struct {
			dst       *string
			name, pkg string
		}{
			{&builtBins.agent, "bastion-agent", "github.com/bastion-fw/bastion/cmd/bastion-agent"},
			{&builtBins.ctl, "bastionctl", "github.com/bastion-fw/bastion/cmd/bastionctl"},
			{&builtBins.dialer, "bastion-dialer", testenv.DialerPackage},
		} {
			if *b.dst, buildErr = testenv.GoBuild(buildDir, b.name, b.pkg); buildErr != nil {
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("build binaries: %v", buildErr)
	}
	return builtBins
}

// nextQueue gives every agent its own NFQUEUE number, so that an agent of
// one test can never answer another's packets.
var nextQueue atomic.Uint32

// helperBin returns a function that builds the test program pkg as name
// into bins(t)'s directory the first time it is called, and returns its
// path.
func helperBin(name, pkg string) func(t *testing.T) string {
	build := sync.OnceValues(func() (string, error) { return testenv.GoBuild(buildDir, name, pkg) })
	return func(t *testing.T) string {
		t.Helper()
		bins(t)
		bin, err := build()
		if err != nil {
			t.Fatalf("build %s: %v", name, err)
		}
		return bin
	}
}

func queueNum() int { return int(4300 + nextQueue.Add(1)) }

// Agent is a running bastion-agent and a root client of its API.
type Agent struct {
	*testenv.Agent
}

// startAgent starts bastion-agent on ns with loopback interception, debug
// logging, an empty config file (so the host's /etc/bastion is never read)
// and a fresh socket; extraArgs come last and so override these. It waits
// until GetStatus answers and stops the agent (SIGTERM) when t ends,
// logging its output if t failed.
func startAgent(t *testing.T, ns *testenv.NS, extraArgs ...string) *Agent {
	t.Helper()
	return startAgentOn(t, ns, "", extraArgs...)
}

// startAgentOn is startAgent with a given socket path ("": a fresh one).
func startAgentOn(t *testing.T, ns *testenv.NS, socket string, extraArgs ...string) *Agent {
	t.Helper()
	return &Agent{testenv.StartAgent(t, testenv.Options{
		Bin:               bins(t).agent,
		NetNS:             ns.Name,
		Socket:            socket,
		InterceptLoopback: true,
		QueueNum:          queueNum(),
		LogLevel:          "debug",
		Args:              append(mechanismArgs(t), extraArgs...),
	})}
}

// Stop stops the agent cleanly and fails t unless it exited with status 0.
func (a *Agent) Stop(t *testing.T) {
	t.Helper()
	if err := a.Agent.Stop(); err != nil {
		t.Fatalf("agent did not stop cleanly: %v", err)
	}
}

// Kill ends the agent with SIGKILL, as a crash would, and waits for it.
func (a *Agent) Kill(t *testing.T) {
	t.Helper()
	if err := a.Agent.Kill(); err != nil {
		t.Fatal(err)
	}
}

// Status returns GetStatus.
func (a *Agent) Status(t *testing.T) *agentv1.GetStatusResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := a.Client.GetStatus(ctx, &agentv1.GetStatusRequest{})
	if err != nil {
		t.Fatalf("GetStatus: %v", err)
	}
	return st
}

// Decide answers a pending connection as root.
func (a *Agent) Decide(t *testing.T, id string, action agentv1.Action, scope agentv1.Scope) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Client.Decide(ctx, &agentv1.DecideRequest{Id: id, Action: action, Scope: scope}); err != nil {
		t.Fatalf("Decide %s %v: %v", id, action, err)
	}
}

// ListPending returns the pending connections as root.
func (a *Agent) ListPending(t *testing.T) []*agentv1.PendingConnection {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := a.Client.ListPending(ctx, &agentv1.ListPendingRequest{})
	if err != nil {
		t.Fatalf("ListPending: %v", err)
	}
	return resp.GetConnections()
}

// WaitPending waits until a pending connection matches and returns it.
func (a *Agent) WaitPending(t *testing.T, timeout time.Duration, match func(*agentv1.PendingConnection) bool) *agentv1.PendingConnection {
	t.Helper()
	var found *agentv1.PendingConnection
	if !testenv.Poll(timeout, func() bool {
		for _, p := range a.ListPending(t) {
			if match(p) {
				found = p
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no matching pending connection within %v; pending: %v", timeout, a.ListPending(t))
	}
	return found
}

// Watcher is a root WatchPending stream that records every event. While it
// is connected, root's own connections are asked about too.
type Watcher struct {
	mu     sync.Mutex
	events []*agentv1.PendingEvent
	err    error
}

// Watch connects a root WatchPending stream, closed when t ends, and waits
// until the agent counts it (UID 0 in the status's watched UIDs).
func (a *Agent) Watch(t *testing.T) *Watcher {
	t.Helper()
	return a.watchWith(t, a.Client, 0)
}

// WatchAs is Watch as uid: the stream shows only uid's connections, and
// while it is connected uid's connections are asked about. It returns the
// client it connected with, for uid's own Decide.
func (a *Agent) WatchAs(t *testing.T, uid uint32) (*Watcher, agentv1.AgentServiceClient) {
	t.Helper()
	conn, err := testenv.ClientAs(a.Socket, uid, uid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := agentv1.NewAgentServiceClient(conn)
	return a.watchWith(t, client, uid), client
}

func (a *Agent) watchWith(t *testing.T, client agentv1.AgentServiceClient, uid uint32) *Watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.WatchPending(ctx, &agentv1.WatchPendingRequest{})
	if err != nil {
		cancel()
		t.Fatalf("WatchPending: %v", err)
	}
	w := &Watcher{}
	done := make(chan struct{})
	go func() {
		defer close(done)
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
	t.Cleanup(func() {
		cancel()
		<-done
	})
	testenv.WaitFor(t, 10*time.Second, "the watcher counted by the agent", func() bool {
		return slices.Contains(a.Status(t).GetWatchedUids(), uid)
	})
	return w
}

// Mark returns the number of events so far; pass it to WaitAdded to look
// only at later events.
func (w *Watcher) Mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.events)
}

// Events returns the events from index from on.
func (w *Watcher) Events(from int) []*agentv1.PendingEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.events[min(from, len(w.events)):])
}

// WaitAdded waits for a KIND_ADDED event at index from or later whose
// connection matches, and returns that connection.
func (w *Watcher) WaitAdded(t *testing.T, from int, timeout time.Duration, match func(*agentv1.PendingConnection) bool) *agentv1.PendingConnection {
	t.Helper()
	var found *agentv1.PendingConnection
	ok := testenv.Poll(timeout, func() bool {
		for _, ev := range w.Events(from) {
			if ev.GetKind() == agentv1.PendingEvent_KIND_ADDED && match(ev.GetConnection()) {
				found = ev.GetConnection()
				return true
			}
		}
		return false
	})
	if !ok {
		w.mu.Lock()
		err := w.err
		w.mu.Unlock()
		var got []string
		for _, ev := range w.Events(from) {
			got = append(got, describe(ev.GetConnection()))
		}
		t.Fatalf("no matching pending event within %v (stream error: %v); events: %v", timeout, err, got)
	}
	return found
}

// Added returns the KIND_ADDED connections from index from on that match.
func (w *Watcher) Added(from int, match func(*agentv1.PendingConnection) bool) []*agentv1.PendingConnection {
	var out []*agentv1.PendingConnection
	for _, ev := range w.Events(from) {
		if ev.GetKind() == agentv1.PendingEvent_KIND_ADDED && match(ev.GetConnection()) {
			out = append(out, ev.GetConnection())
		}
	}
	return out
}

func describe(p *agentv1.PendingConnection) string {
	pr, f := p.GetProcess(), p.GetFlow()
	return fmt.Sprintf("%s{uid=%d tgid=%d exe=%q args=%q by=%s %v v%d dst=%s:%d packets=%d}", p.GetId(), pr.GetUid(),
		pr.GetTgid(), pr.GetExe(), pr.GetArgs(), pr.GetIdentifiedBy(), f.GetProtocol(), f.GetIpVersion(),
		f.GetDstIp(), f.GetDstPort(), p.GetPackets())
}

// flowTo matches connections by protocol, IP version and destination port.
func flowTo(proto agentv1.Protocol, ipVersion uint32, port int) func(*agentv1.PendingConnection) bool {
	return func(p *agentv1.PendingConnection) bool {
		f := p.GetFlow()
		return f.GetProtocol() == proto && f.GetIpVersion() == ipVersion && f.GetDstPort() == uint32(port)
	}
}

// wantProc is who should be named in a pending event.
type wantProc struct {
	pid  int
	uid  uint32
	exe  string   // absolute, symlinks resolved
	args []string // full argv, argv[0] as given to exec
	// by, when set, is the identification mechanism expected.
	by string
}

func checkProc(t *testing.T, p *agentv1.PendingConnection, want wantProc) {
	t.Helper()
	pr := p.GetProcess()
	if int(pr.GetTgid()) != want.pid || pr.GetUid() != want.uid || pr.GetExe() != want.exe || !slices.Equal(pr.GetArgs(), want.args) ||
		(want.by != "" && pr.GetIdentifiedBy() != want.by) {
		t.Errorf("pending connection names %s;\nwant tgid=%d uid=%d exe=%q args=%q by=%q", describe(p), want.pid, want.uid, want.exe, want.args, want.by)
	}
}

// realExe resolves a program name through PATH and symlinks, as the
// kernel's view of the executable (/usr/bin/nc -> /usr/bin/nc.openbsd).
func realExe(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(real)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// Proc is a client process started by a test, ended by PID when t ends.
type Proc struct {
	Cmd    *exec.Cmd
	stdout testenv.SyncBuffer
	stderr testenv.SyncBuffer
	done   chan struct{}
	err    error
}

// start starts cmd (made with ns.Command) and kills it by PID at cleanup.
func start(t *testing.T, cmd *exec.Cmd) *Proc {
	t.Helper()
	return startWith(t, cmd, cmd.Start)
}

// startWith is start with another way to start cmd, such as ns.Start (for
// a command that must keep capabilities nsenter's setuid would drop).
func startWith(t *testing.T, cmd *exec.Cmd, startCmd func() error) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.stdout, &p.stderr
	if err := startCmd(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			cmd.Process.Kill()
		}
		<-p.done
	})
	return p
}

// Pid is the client's PID (nsenter execs in place: the program's own).
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns its error.
func (p *Proc) Wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%v still running after %v; stdout %q stderr %q", p.Cmd.Args, timeout, p.stdout.String(), p.stderr.String())
		return nil
	}
}

// Kill ends the process by PID and waits for it.
func (p *Proc) Kill() {
	p.Cmd.Process.Kill()
	<-p.done
}

func (p *Proc) Stdout() string { return p.stdout.String() }
func (p *Proc) Stderr() string { return p.stderr.String() }

// DialResult waits for a dialer started with start and parses its result.
func (p *Proc) DialResult(t *testing.T, timeout time.Duration) testenv.DialResult {
	t.Helper()
	p.Wait(t, timeout)
	var r testenv.DialResult
	if err := json.Unmarshal([]byte(strings.TrimSpace(p.Stdout())), &r); err != nil {
		t.Fatalf("dialer %v: no result: %v; stdout %q stderr %q", p.Cmd.Args, err, p.Stdout(), p.Stderr())
	}
	return r
}

// dialer returns the command that runs the dialer as uid in ns.
func dialer(ctx context.Context, ns *testenv.NS, uid uint32, args ...string) *exec.Cmd {
	return ns.Command(ctx, uid, uid, builtBins.dialer, args...)
}

func portOf(a net.Addr) int {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.Port
	case *net.UDPAddr:
		return a.Port
	}
	panic(fmt.Sprintf("no port in %v", a))
}

// testCtx is a context for the clients of one test, cancelled when t ends.
func testCtx(t *testing.T, timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}
