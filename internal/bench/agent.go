package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// AgentPackage is the import path of the agent program.
const AgentPackage = "github.com/bastion-fw/bastion/cmd/bastion-agent"

// AgentRunner starts a bastion-agent that intercepts new connections in a
// namespace. BinaryAgent is the real one; the hook exists so that the
// measurement code does not care how the agent is started.
type AgentRunner interface {
	Start(ctx context.Context, ns *testenv.NS) (*Agent, error)
}

// BinaryAgent runs an agent binary as a child process.
type BinaryAgent struct {
	Bin      string   // path of bastion-agent
	Dir      string   // scratch directory for the socket and the log
	QueueNum int      // NFQUEUE number inside the namespace
	Args     []string // extra flags
}

// Agent is a running agent and a root client of its API.
type Agent struct {
	Cmd     *exec.Cmd
	Client  agentv1.AgentServiceClient
	Socket  string
	LogPath string
	conn    *grpc.ClientConn
	exited  chan struct{}
}

// Start starts the agent on ns with loopback interception, fail-closed, and
// waits until its API answers.
func (b BinaryAgent) Start(ctx context.Context, ns *testenv.NS) (*Agent, error) {
	dir, err := os.MkdirTemp(b.Dir, "agent-")
	if err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	// Users' programs (a rules service) reach the socket, as in /run/bastion.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	a := &Agent{Socket: filepath.Join(dir, "agent.sock"), LogPath: filepath.Join(dir, "agent.log"), exited: make(chan struct{})}
	logf, err := os.Create(a.LogPath)
	if err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	defer logf.Close()
	args := append([]string{
		"--netns", ns.Name,
		"--socket", a.Socket,
		"--intercept-loopback",
		"--queue-num", strconv.Itoa(b.QueueNum),
		"--fail-open=false",
		"--mechanism", "auto",
		"--prompt-timeout", "30s",
		"--log-level", "info",
	}, b.Args...)
	a.Cmd = exec.Command(b.Bin, args...)
	a.Cmd.Stdout, a.Cmd.Stderr = logf, logf
	if err := a.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	go func() {
		a.Cmd.Wait()
		close(a.exited)
	}()
	a.conn, err = grpc.NewClient("unix://"+a.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("agent client: %w", err), a.Stop())
	}
	a.Client = agentv1.NewAgentServiceClient(a.conn)
	ready := testenv.Poll(60*time.Second, func() bool {
		select {
		case <-a.exited:
			return true
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := a.Client.GetStatus(cctx, &agentv1.GetStatusRequest{})
		return err == nil
	})
	select {
	case <-a.exited:
		return nil, fmt.Errorf("agent exited at start-up: %s", a.LogTail(10))
	default:
	}
	if !ready {
		return nil, errors.Join(fmt.Errorf("agent API not answering within 60s: %s", a.LogTail(10)), a.Stop())
	}
	return a, nil
}

// LogTail returns the last n lines of the agent's log, for error messages.
func (a *Agent) LogTail(n int) string { return fileTail(a.LogPath, n) }

// fileTail returns the last n lines of the file at path, joined by " | ".
func fileTail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// Stop ends the agent by PID (SIGTERM, then SIGKILL after 10s).
func (a *Agent) Stop() error {
	if a.conn != nil {
		a.conn.Close()
	}
	a.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
		return nil
	case <-time.After(10 * time.Second):
		a.Cmd.Process.Kill()
		<-a.exited
		return errors.New("stop agent: no exit within 10s of SIGTERM, killed")
	}
}

// Usage is a process's memory and CPU use.
type Usage struct {
	RSSKB    int64 // VmRSS
	HWMKB    int64 // VmHWM, peak RSS
	CPUTicks int64 // utime + stime, in clock ticks
}

// clockTicks is USER_HZ, 100 on every Linux architecture Bastion targets.
const clockTicks = 100

// CPUMillis converts CPUTicks to milliseconds.
func (u Usage) CPUMillis() float64 { return float64(u.CPUTicks) * 1000 / clockTicks }

// ReadUsage reads pid's VmRSS and VmHWM from /proc/PID/status and
// utime+stime from /proc/PID/stat.
func ReadUsage(pid int) (Usage, error) {
	var u Usage
	base := "/proc/" + strconv.Itoa(pid)
	f, err := os.Open(base + "/status")
	if err != nil {
		return u, fmt.Errorf("read usage of pid %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			u.RSSKB, _ = strconv.ParseInt(fields[0], 10, 64)
		case "VmHWM":
			u.HWMKB, _ = strconv.ParseInt(fields[0], 10, 64)
		}
	}
	stat, err := os.ReadFile(base + "/stat")
	if err != nil {
		return u, fmt.Errorf("read usage of pid %d: %w", pid, err)
	}
	u.CPUTicks, err = parseStatCPU(string(stat))
	if err != nil {
		return u, fmt.Errorf("read usage of pid %d: %w", pid, err)
	}
	return u, nil
}

// parseStatCPU returns utime+stime (fields 14 and 15) from a /proc/PID/stat
// line. comm (field 2) may hold spaces and parentheses, so fields are
// counted after its last ')'.
func parseStatCPU(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed stat: no comm")
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, errors.New("malformed stat: too few fields")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("malformed stat: %w", err)
	}
	return ut + st, nil
}
