package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Start-up deadlines. The agent's is generous: on a loaded 2-core machine
// the verifier alone has taken a minute over the exec-tracking program.
const (
	AgentStartTimeout    = 3 * time.Minute
	UIServerStartTimeout = 30 * time.Second
)

// Options says how StartAgent and StartUIServer run a Bastion program.
// Every test, the GTK client's end-to-end test and the benchmark start the
// agent and the rules service through these two, so that what a "default"
// agent is cannot drift between them.
type Options struct {
	// Bin is the program: a bastion-agent or bastion-uiserver built with
	// GoBuild, or a packaged one.
	Bin string
	// Wrap, when set, runs Bin through another program: the command line
	// is Wrap, then Bin and its arguments, e.g. {"nsenter", "--net=PATH",
	// "setpriv", "--inh-caps=-all", "--"}. The wrapper must exec Bin in
	// its own process, as nsenter and setpriv do.
	Wrap []string
	// NetNS is the agent's --netns (a name under /run/netns); empty: none.
	NetNS string
	// Socket is the agent's API socket: the agent listens on it (empty: a
	// new agent.sock in the agent's directory) and the rules service gets
	// it as --agent-socket.
	Socket string
	// Config is the agent's --config. Empty: an empty file, so that the
	// host's /etc/bastion is never read. The rules service reads its
	// config from its User's XDG directories instead.
	Config string
	// InterceptLoopback passes --intercept-loopback to the agent.
	InterceptLoopback bool
	// QueueNum, when not 0, is the agent's --queue-num. NFQUEUE numbers
	// are per network namespace; give agents that share one their own.
	QueueNum int
	// LogLevel, when set, is --log-level.
	LogLevel string
	// Cgroup is the agent's --cgroup, where its cgroup programs (the
	// sockops mechanism's and the kernel decisions') attach. Empty, and
	// no --cgroup in Args: a new cgroup made for the agent, so that no
	// test ever attaches programs to the host's root cgroup. Run the
	// processes whose connections the programs must see in it
	// (NS.CommandInCgroup with Agent.Cgroup).
	Cgroup *Cgroup
	// Args come after the defaults above, so they override them.
	Args []string
	// Dir is where the agent's own directory (socket, empty config, log)
	// is made, as a new 0755 directory that every UID may traverse, so that
	// users' rules services reach the socket. Empty: the system's
	// temporary directory.
	Dir string
	// LogPath is the file the program's output is appended to, each start
	// after a line that marks it. Empty: agent.log in the agent's
	// directory; uiserver.log in the User's Dir (so that one user's
	// restarted services share one log).
	LogPath string
	// User runs the rules service, with the account's environment only, so
	// that its socket, store and config come from the account's XDG
	// directories. StartUIServer requires it; the agent runs as root.
	User *Account
	// StopTimeout is how long Stop waits after SIGTERM before it kills the
	// program; 0 means 20s.
	StopTimeout time.Duration
}

// Process is a program started by StartAgent or StartUIServer; its output
// goes to LogPath.
type Process struct {
	Cmd     *exec.Cmd
	LogPath string

	name        string // "agent", "uiserver of uid 1000"
	stopTimeout time.Duration
	exited      chan struct{}
	waited      error // Wait's result, once exited is closed
	killed      bool  // ended by Kill: its exit is no failure
}

// startProcess starts argv with its output appended to logPath.
func startProcess(name string, cmd *exec.Cmd, logPath string, stopTimeout time.Duration) (*Process, error) {
	if stopTimeout == 0 {
		stopTimeout = 20 * time.Second
	}
	p := &Process{Cmd: cmd, LogPath: logPath, name: name, stopTimeout: stopTimeout, exited: make(chan struct{})}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "---- start %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.waited = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// command is Wrap, bin and args as a command.
func command(wrap []string, bin string, args []string) *exec.Cmd {
	argv := append(append(append([]string(nil), wrap...), bin), args...)
	return exec.Command(argv[0], argv[1:]...)
}

// Pid is the program's process ID (a wrapper execs in place: the program's
// own).
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Exited reports whether the program has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Stop ends the program with SIGTERM (SIGKILL after the stop timeout) and
// returns how it exited: nil for a clean exit, and nil too when Kill ended
// it. A program that already exited is not signalled; its exit is
// returned.
func (p *Process) Stop() error {
	if !p.Exited() {
		p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(p.stopTimeout):
			p.Cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("stop %s: no exit within %v of SIGTERM, killed", p.name, p.stopTimeout)
		}
	}
	if p.killed {
		return nil
	}
	if p.waited != nil {
		return fmt.Errorf("%s: %w", p.name, p.waited)
	}
	return nil
}

// Kill ends the program with SIGKILL, as a crash would, and waits for it.
func (p *Process) Kill() error {
	p.killed = true
	if p.Exited() {
		return nil
	}
	p.Cmd.Process.Kill()
	select {
	case <-p.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s still running 10s after SIGKILL", p.name)
	}
}

// Log returns the program's output so far (every start's, when LogPath is
// shared).
func (p *Process) Log() string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(%s log: %v)", p.name, err)
	}
	return string(data)
}

// LogTail returns the last n lines of the log, for error messages.
func (p *Process) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// LogTo writes the whole log to t's output.
func (p *Process) LogTo(t testing.TB) {
	t.Helper()
	t.Logf("%s log (%s):\n%s", p.name, p.LogPath, p.Log())
}

// waitReady polls ready until it returns nil, the program exits, ctx ends
// or timeout passes; unless ready, the program is killed and the error
// says why, with the end of its log.
func (p *Process) waitReady(ctx context.Context, timeout time.Duration, ready func(context.Context) error) error {
	last := errors.New("not tried")
	ok := Poll(timeout, func() bool {
		if p.Exited() || ctx.Err() != nil {
			return true
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		last = ready(cctx)
		return last == nil
	})
	var err error
	switch {
	case p.Exited():
		err = fmt.Errorf("%s exited at start-up: %v", p.name, p.waited)
	case ctx.Err() != nil:
		err = fmt.Errorf("%s start-up: %w", p.name, ctx.Err())
	case !ok:
		err = fmt.Errorf("%s not ready within %v: %w", p.name, timeout, last)
	default:
		return nil
	}
	p.Kill()
	return fmt.Errorf("%w\n%s (%s) log ends:\n%s", err, p.name, strings.Join(p.Cmd.Args, " "), p.LogTail(30))
}

// Agent is a running bastion-agent and a root client of its API.
type Agent struct {
	*Process
	// Dir is the agent's own directory (in Options.Dir), removed with the
	// test's temporary directories by StartAgent; LaunchAgent's caller
	// removes it.
	Dir    string
	Socket string
	Client agentv1.AgentServiceClient
	// Cgroup is where the agent's cgroup programs attach (Options.Cgroup,
	// or one made for it); nil when Args named a --cgroup.
	Cgroup *Cgroup

	conn *grpc.ClientConn
	// ownCgroup is Cgroup when LaunchAgent made it: Stop and Kill
	// delete it.
	ownCgroup bool
}

// StartAgent starts bastion-agent as LaunchAgent does and fails t if it
// does not come up. When t ends it stops the agent, failing t unless it
// exits cleanly, and writes its log to t's output if t failed.
func StartAgent(t testing.TB, o Options) *Agent {
	t.Helper()
	if o.Dir == "" {
		o.Dir = TempDir(t)
	}
	if o.Cgroup == nil && !slices.Contains(o.Args, "--cgroup") {
		// The test's, so that an agent restarted in it keeps its cgroup.
		o.Cgroup = NewCgroup(t)
	}
	a, err := LaunchAgent(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Stop(); err != nil {
			t.Errorf("stop agent: %v", err)
		}
		if t.Failed() {
			a.LogTo(t)
		}
	})
	return a
}

// LaunchAgent starts bastion-agent (o.Bin) as root with
//
//	[--netns NetNS] --socket Socket [--intercept-loopback] [--queue-num QueueNum] --config Config [--log-level LogLevel] --cgroup Cgroup Args...
//
// and waits until its API answers GetStatus, for at most
// AgentStartTimeout. It is StartAgent for programs, such as the benchmark,
// and for tests that expect a start to fail: the caller must Stop the
// agent. An agent that does not come up is killed, and the error ends
// with its log.
func LaunchAgent(ctx context.Context, o Options) (*Agent, error) {
	dir, err := os.MkdirTemp(o.Dir, "agent-")
	if err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	a := &Agent{Dir: dir, Socket: o.Socket}
	if a.Socket == "" {
		a.Socket = filepath.Join(dir, "agent.sock")
	}
	config := o.Config
	if config == "" {
		config = filepath.Join(dir, "empty.toml")
		if err := os.WriteFile(config, nil, 0o644); err != nil {
			return nil, fmt.Errorf("start agent: %w", err)
		}
	}
	var args []string
	if o.NetNS != "" {
		args = append(args, "--netns", o.NetNS)
	}
	args = append(args, "--socket", a.Socket)
	if o.InterceptLoopback {
		args = append(args, "--intercept-loopback")
	}
	if o.QueueNum != 0 {
		args = append(args, "--queue-num", strconv.Itoa(o.QueueNum))
	}
	args = append(args, "--config", config)
	if o.LogLevel != "" {
		args = append(args, "--log-level", o.LogLevel)
	}
	a.Cgroup = o.Cgroup
	if a.Cgroup == nil && !slices.Contains(o.Args, "--cgroup") {
		if a.Cgroup, err = CreateCgroup(); err != nil {
			return nil, fmt.Errorf("start agent: %w", err)
		}
		a.ownCgroup = true
	}
	if a.Cgroup != nil {
		args = append(args, "--cgroup", a.Cgroup.Path)
	}
	args = append(args, o.Args...)
	logPath := o.LogPath
	if logPath == "" {
		logPath = filepath.Join(dir, "agent.log")
	}
	if a.Process, err = startProcess("agent", command(o.Wrap, o.Bin, args), logPath, o.StopTimeout); err != nil {
		a.deleteCgroup()
		return nil, err
	}
	if a.conn, err = grpc.NewClient("unix://"+a.Socket, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		err = errors.Join(fmt.Errorf("agent client: %w", err), a.Process.Kill())
		a.deleteCgroup()
		return nil, err
	}
	a.Client = agentv1.NewAgentServiceClient(a.conn)
	err = a.waitReady(ctx, AgentStartTimeout, func(ctx context.Context) error {
		_, err := a.Client.GetStatus(ctx, &agentv1.GetStatusRequest{})
		return err
	})
	if err != nil {
		a.conn.Close()
		a.deleteCgroup()
		return nil, err
	}
	return a, nil
}

// Stop stops the agent (Process.Stop) and closes the client.
func (a *Agent) Stop() error {
	defer a.conn.Close()
	return errors.Join(a.Process.Stop(), a.deleteCgroup())
}

// Kill kills the agent (Process.Kill) and closes the client.
func (a *Agent) Kill() error {
	defer a.conn.Close()
	return errors.Join(a.Process.Kill(), a.deleteCgroup())
}

// deleteCgroup deletes the cgroup LaunchAgent made for the agent.
func (a *Agent) deleteCgroup() error {
	if !a.ownCgroup {
		return nil
	}
	a.ownCgroup = false
	return a.Cgroup.Delete()
}

// UIServer is a running bastion-uiserver of one user and a client of its
// API that connects as the user (the service admits only its owner, by
// SO_PEERCRED).
type UIServer struct {
	*Process
	User   *Account
	Client uiv1.UIServiceClient

	conn *grpc.ClientConn
}

// StartUIServer starts bastion-uiserver as LaunchUIServer does and fails t
// if it does not come up. When t ends it stops the service, failing t
// unless it exits cleanly, and writes its log to t's output if t failed.
func StartUIServer(t testing.TB, o Options) *UIServer {
	t.Helper()
	s, err := LaunchUIServer(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop uiserver: %v", err)
		}
		if t.Failed() {
			s.LogTo(t)
		}
	})
	return s
}

// LaunchUIServer starts bastion-uiserver (o.Bin) as o.User with
//
//	--agent-socket Socket [--log-level LogLevel] Args...
//
// and waits until it says it is connected to the agent, for at most
// UIServerStartTimeout. It is StartUIServer for programs: the caller must
// Stop the service.
func LaunchUIServer(ctx context.Context, o Options) (*UIServer, error) {
	u := o.User
	if u == nil {
		return nil, errors.New("start uiserver: no user")
	}
	s := &UIServer{User: u}
	args := []string{"--agent-socket", o.Socket}
	if o.LogLevel != "" {
		args = append(args, "--log-level", o.LogLevel)
	}
	args = append(args, o.Args...)
	logPath := o.LogPath
	if logPath == "" {
		logPath = filepath.Join(u.Dir, "uiserver.log")
	}
	var err error
	name := fmt.Sprintf("uiserver of uid %d", u.UID)
	if s.Process, err = startProcess(name, u.AsUser(command(o.Wrap, o.Bin, args)), logPath, o.StopTimeout); err != nil {
		return nil, err
	}
	if s.conn, err = ClientAs(u.UISocket(), u.UID, u.UID); err != nil {
		return nil, errors.Join(err, s.Kill())
	}
	s.Client = uiv1.NewUIServiceClient(s.conn)
	if err := s.WaitConnected(ctx, UIServerStartTimeout); err != nil {
		s.conn.Close()
		return nil, err
	}
	return s, nil
}

// WaitConnected waits until the service says it is connected to the agent
// (it has pushed its rules and watches the user's pending connections).
// Unless it connects in time, the service is killed.
func (s *UIServer) WaitConnected(ctx context.Context, timeout time.Duration) error {
	return s.waitReady(ctx, timeout, func(ctx context.Context) error {
		st, err := s.Client.GetStatus(ctx, &uiv1.GetStatusRequest{})
		if err != nil {
			return err
		}
		if !st.GetAgentConnected() {
			return errors.New("not connected to the agent")
		}
		return nil
	})
}

// Stop stops the service (Process.Stop) and closes the client.
func (s *UIServer) Stop() error {
	defer s.conn.Close()
	return s.Process.Stop()
}

// Kill kills the service (Process.Kill) and closes the client.
func (s *UIServer) Kill() error {
	defer s.conn.Close()
	return s.Process.Kill()
}
