package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
)

// AgentPackage is the import path of the agent program.
const AgentPackage = "github.com/bastion-fw/bastion/cmd/bastion-agent"

// AgentRunner starts a bastion-agent that intercepts new connections in a
// namespace. BinaryAgent is the real one; the hook exists so that the
// measurement code does not care how the agent is started.
type AgentRunner interface {
	Start(ctx context.Context, ns *testenv.NS) (*testenv.Agent, error)
}

// BinaryAgent runs an agent binary as a child process.
type BinaryAgent struct {
	Bin      string   // path of bastion-agent
	Dir      string   // scratch directory for the socket and the log
	QueueNum int      // NFQUEUE number inside the namespace
	Args     []string // extra flags
}

// Start starts the agent on ns with loopback interception, fail-closed, and
// waits until its API answers. The benchmark is a program, not a test, so
// it uses testenv's context-based LaunchAgent; the caller stops the agent.
func (b BinaryAgent) Start(ctx context.Context, ns *testenv.NS) (*testenv.Agent, error) {
	return testenv.LaunchAgent(ctx, testenv.Options{
		Bin:               b.Bin,
		Dir:               b.Dir,
		NetNS:             ns.Name,
		InterceptLoopback: true,
		QueueNum:          b.QueueNum,
		LogLevel:          "info",
		Args:              append([]string{"--fail-open=false", "--mechanism", "auto", "--prompt-timeout", "30s"}, b.Args...),
		StopTimeout:       10 * time.Second,
	})
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
