package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Packages the prompt-latency case builds.
const (
	UIServerPackage     = "github.com/bastion-fw/bastion/cmd/bastion-uiserver"
	PromptDialerPackage = "github.com/bastion-fw/bastion/internal/bench/promptdialer"
)

// promptUID is the user whose prompts are measured.
const promptUID = 1000

// promptWarmup connections are made before measuring: the first of a new
// process costs /proc reads and cache fills that later ones do not.
const promptWarmup = 5

// PromptLatency is the time from a client's connect() (its SYN leaving) to
// the prompt reaching a prompt client of the user's rules service
// (bastion-uiserver), both clients running as the user, measured one
// connection at a time. ToService is the part up to the service creating
// the prompt (agent hold, identification, the agent's event, the service's
// rule check), the rest is the service's broadcast to the client.
type PromptLatency struct {
	Conns          int     `json:"conns"`
	P50US          float64 `json:"p50_us"`
	P99US          float64 `json:"p99_us"`
	MaxUS          float64 `json:"max_us"`
	ToServiceP50US float64 `json:"to_service_p50_us"`
	ToServiceP99US float64 `json:"to_service_p99_us"`
	Skipped        string  `json:"skipped,omitempty"`
}

// MeasurePromptLatency starts bastion-uiserver (uiserverBin) as UID 1000
// against the session's agent, connects a WatchPrompts client as that user,
// and has a dialer (dialerBin, promptdialer) of that user open n
// connections one after another to a local server. Each prompt is answered
// "allow once" as soon as it arrives, which releases the connection.
func MeasurePromptLatency(ctx context.Context, s *Session, uiserverBin, dialerBin string, n int) (PromptLatency, error) {
	var res PromptLatency
	dir, err := testenv.MakeTempDir("bastion-bench-ui-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	u, err := testenv.MakeAccount(dir, promptUID, "")
	if err != nil {
		return res, err
	}
	svc, err := testenv.LaunchUIServer(ctx, testenv.Options{Bin: uiserverBin, Socket: s.Agent.Socket, User: u, LogLevel: "info",
		StopTimeout: 10 * time.Second})
	if err != nil {
		return res, err
	}
	defer svc.Stop()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := svc.Client.WatchPrompts(ctx, &uiv1.WatchPromptsRequest{})
	if err != nil {
		return res, fmt.Errorf("watch prompts: %w", err)
	}
	type arrival struct {
		p  *uiv1.Prompt
		at time.Time
	}
	prompts := make(chan arrival, 64)
	go func() {
		defer close(prompts)
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			if ev.GetKind() == uiv1.PromptEvent_KIND_ADDED {
				prompts <- arrival{ev.GetPrompt(), time.Now()}
			}
		}
	}()
	if !testenv.Poll(10*time.Second, func() bool {
		st, err := svc.Client.GetStatus(ctx, &uiv1.GetStatusRequest{})
		return err == nil && st.GetPromptClients() == 1
	}) {
		return res, errors.New("prompt client not registered within 10s")
	}

	addr, closeSrv, err := AcceptAndClose(ctx, s.NS, "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	defer closeSrv()
	d, err := startPromptDialer(ctx, s.NS, dialerBin, addr)
	if err != nil {
		return res, err
	}
	defer d.close()

	var total, toService []time.Duration
	for i := range n + promptWarmup {
		port, t0, err := d.dial()
		if err != nil {
			return res, err
		}
		var got arrival
		timeout := time.After(10 * time.Second)
	wait:
		for {
			select {
			case a, ok := <-prompts:
				if !ok {
					return res, errors.New("prompt stream ended")
				}
				if a.p.GetFlow().GetSrcPort() == uint32(port) {
					got = a
					break wait
				}
			case <-timeout:
				return res, fmt.Errorf("no prompt for connection %d (source port %d) within 10s: uiserver: %s\nagent: %s", i, port, svc.LogTail(12), s.Agent.LogTail(12))
			}
		}
		if i >= promptWarmup {
			total = append(total, got.at.Sub(t0))
			toService = append(toService, got.p.GetFirstSeen().AsTime().Sub(t0))
		}
		p := got.p
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = svc.Client.AnswerPrompt(actx, &uiv1.AnswerPromptRequest{PromptId: p.GetId(), Rule: &rulesv1.Rule{
			Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: p.GetProcess().GetExe(),
			Dst: p.GetFlow().GetDstIp(), DstPortMin: p.GetFlow().GetDstPort(), DstPortMax: p.GetFlow().GetDstPort(),
			Protocol: rulesv1.Protocol_PROTOCOL_TCP, Lifetime: rulesv1.Lifetime_LIFETIME_ONCE,
		}})
		acancel()
		if err != nil {
			return res, fmt.Errorf("answer prompt: %w", err)
		}
		if err := d.done(port); err != nil {
			return res, err
		}
	}
	res.Conns = len(total)
	res.P50US, res.P99US, res.MaxUS = percentileUS(total, 0.50), percentileUS(total, 0.99), percentileUS(total, 1)
	res.ToServiceP50US, res.ToServiceP99US = percentileUS(toService, 0.50), percentileUS(toService, 0.99)
	return res, nil
}

// promptDialer drives a promptdialer process.
type promptDialer struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	errb strings.Builder
}

func startPromptDialer(ctx context.Context, ns *testenv.NS, bin, addr string) (*promptDialer, error) {
	d := &promptDialer{}
	d.cmd = ns.Command(ctx, promptUID, promptUID, bin, "-addr", addr, "-timeout", "20s")
	var err error
	if d.in, err = d.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("start prompt dialer: %w", err)
	}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start prompt dialer: %w", err)
	}
	d.cmd.Stderr = &d.errb
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start prompt dialer: %w", err)
	}
	d.out = bufio.NewScanner(stdout)
	return d, nil
}

// line reads the dialer's next line, split into at most 3 fields.
func (d *promptDialer) line() ([]string, error) {
	if !d.out.Scan() {
		return nil, fmt.Errorf("prompt dialer ended: %v: %s", d.out.Err(), strings.TrimSpace(d.errb.String()))
	}
	return strings.SplitN(d.out.Text(), " ", 3), nil
}

// dial asks for one connection and returns its source port and the time
// just before its connect().
func (d *promptDialer) dial() (int, time.Time, error) {
	if _, err := io.WriteString(d.in, "\n"); err != nil {
		return 0, time.Time{}, fmt.Errorf("prompt dialer: %w", err)
	}
	f, err := d.line()
	if err != nil {
		return 0, time.Time{}, err
	}
	if len(f) != 3 || f[0] != "start" {
		return 0, time.Time{}, fmt.Errorf("prompt dialer said %q, want start PORT TIME", strings.Join(f, " "))
	}
	port, err1 := strconv.Atoi(f[1])
	ns, err2 := strconv.ParseInt(f[2], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, time.Time{}, fmt.Errorf("prompt dialer said %q: %w", strings.Join(f, " "), err)
	}
	return port, time.Unix(0, ns), nil
}

// done waits for the outcome of the connection from port.
func (d *promptDialer) done(port int) error {
	f, err := d.line()
	if err != nil {
		return err
	}
	if len(f) != 3 || f[0] != "done" || f[1] != strconv.Itoa(port) {
		return fmt.Errorf("prompt dialer said %q, want done %d", strings.Join(f, " "), port)
	}
	if f[2] != "ok" {
		return fmt.Errorf("connection from port %d allowed, but: %s", port, f[2])
	}
	return nil
}

func (d *promptDialer) close() {
	d.in.Close()
	done := make(chan struct{})
	go func() {
		d.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-done
	}
}
