package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
)

// LoopDialerPackage is the loop dialer's package: the one program that
// dials in every case of the kernel-decision rounds.
const LoopDialerPackage = "github.com/bastion-fw/bastion/internal/bench/loopdialer"

// LoopRun is the loop dialer's answer to one command (loopdialer.Run).
type LoopRun struct {
	Addr    string         `json:"addr"`
	Seconds float64        `json:"seconds"`
	OK      int            `json:"ok"`
	Errors  map[string]int `json:"errors,omitempty"`
	P50US   float64        `json:"p50_us"`
	P99US   float64        `json:"p99_us"`
	MaxUS   float64        `json:"max_us"`
	Fatal   string         `json:"fatal,omitempty"`
}

// Calls is every connect() call of the run.
func (r LoopRun) Calls() int {
	n := r.OK
	for _, e := range r.Errors {
		n += e
	}
	return n
}

// LoopDialer is a running loop dialer.
type LoopDialer struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// StartLoopDialer starts the loop dialer bin as root inside ns, directly
// in cgroup cg, with threads dialing threads.
func StartLoopDialer(ctx context.Context, ns *testenv.NS, cg *testenv.Cgroup, bin string, threads int) (*LoopDialer, error) {
	cmd := ns.CommandInCgroup(ctx, cg, 0, 0, bin, "-threads", strconv.Itoa(threads))
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start loop dialer: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start loop dialer: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start loop dialer: %w", err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return &LoopDialer{cmd: cmd, in: in, out: sc}, nil
}

// Run dials addr for d and returns what the dialer measured. timeout, when
// not 0, bounds each connect() (SO_SNDTIMEO), for a connection whose SYN
// is dropped.
func (l *LoopDialer) Run(addr string, d, timeout time.Duration) (LoopRun, error) {
	line := fmt.Sprintf("run %s %s", addr, d)
	if timeout > 0 {
		line += " " + timeout.String()
	}
	if _, err := io.WriteString(l.in, line+"\n"); err != nil {
		return LoopRun{}, fmt.Errorf("loop dialer: %w", err)
	}
	if !l.out.Scan() {
		return LoopRun{}, fmt.Errorf("loop dialer: no answer to %q: %v", line, l.out.Err())
	}
	var r LoopRun
	if err := json.Unmarshal(l.out.Bytes(), &r); err != nil {
		return r, fmt.Errorf("loop dialer: answer %q: %w", l.out.Bytes(), err)
	}
	if r.Fatal != "" {
		return r, fmt.Errorf("loop dialer: %s", r.Fatal)
	}
	return r, nil
}

// Listen makes the dialer listen on a new port of 127.0.0.1 and returns
// the address: the dialer accepts the connections it makes to it itself.
func (l *LoopDialer) Listen() (string, error) {
	if _, err := io.WriteString(l.in, "listen\n"); err != nil {
		return "", fmt.Errorf("loop dialer: %w", err)
	}
	if !l.out.Scan() {
		return "", fmt.Errorf("loop dialer: no answer to listen: %v", l.out.Err())
	}
	var r struct {
		Listen string `json:"listen"`
	}
	if err := json.Unmarshal(l.out.Bytes(), &r); err != nil || r.Listen == "" {
		return "", fmt.Errorf("loop dialer: answer to listen %q: %v", l.out.Bytes(), err)
	}
	return r.Listen, nil
}

// Pid is the dialer's process ID.
func (l *LoopDialer) Pid() int { return l.cmd.Process.Pid }

// Close ends the dialer (end of input) and waits for it.
func (l *LoopDialer) Close() error {
	l.in.Close()
	done := make(chan error, 1)
	go func() { done <- l.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		l.cmd.Process.Kill()
		return errors.Join(errors.New("loop dialer: no exit 10s after its input ended; killed"), <-done)
	}
}
