package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
	svc, err := startUIServer(ctx, uiserverBin, dir, s.Agent.Socket, promptUID)
	if err != nil {
		return res, err
	}
	defer svc.stop()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := svc.ui.WatchPrompts(ctx, &uiv1.WatchPromptsRequest{})
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
		st, err := svc.ui.GetStatus(ctx, &uiv1.GetStatusRequest{})
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
				return res, fmt.Errorf("no prompt for connection %d (source port %d) within 10s: uiserver: %s\nagent: %s", i, port, svc.logTail(12), s.Agent.LogTail(12))
			}
		}
		if i >= promptWarmup {
			total = append(total, got.at.Sub(t0))
			toService = append(toService, got.p.GetFirstSeen().AsTime().Sub(t0))
		}
		p := got.p
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = svc.ui.AnswerPrompt(actx, &uiv1.AnswerPromptRequest{PromptId: p.GetId(), Rule: &rulesv1.Rule{
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

// uiService is a bastion-uiserver run as a user for the benchmark.
type uiService struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	ui      uiv1.UIServiceClient
	close   func() error
}

// startUIServer runs bastion-uiserver (bin) as uid with home, runtime,
// data and config directories under dir (0700, owned by uid; no config
// file, so the defaults apply) and waits until it is connected to the agent
// at agentSocket.
func startUIServer(ctx context.Context, bin, dir, agentSocket string, uid uint32) (*uiService, error) {
	home := filepath.Join(dir, "home")
	for _, d := range []string{home, home + "/run", home + "/data", home + "/config"} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, fmt.Errorf("start uiserver: %w", err)
		}
		if err := os.Chown(d, int(uid), int(uid)); err != nil {
			return nil, fmt.Errorf("start uiserver: %w", err)
		}
	}
	s := &uiService{logPath: filepath.Join(dir, "uiserver.log"), exited: make(chan struct{})}
	logf, err := os.Create(s.logPath)
	if err != nil {
		return nil, fmt.Errorf("start uiserver: %w", err)
	}
	defer logf.Close()
	s.cmd = exec.Command(bin, "--agent-socket", agentSocket, "--log-level", "info")
	s.cmd.Env = []string{
		"PATH=/usr/bin:/bin", "HOME=" + home, "XDG_RUNTIME_DIR=" + home + "/run",
		"XDG_DATA_HOME=" + home + "/data", "XDG_CONFIG_HOME=" + home + "/config",
	}
	s.cmd.Dir = home
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start uiserver: %w", err)
	}
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	conn, err := testenv.ClientAs(filepath.Join(home, "run", "bastion", "ui.sock"), uid, uid)
	if err != nil {
		return nil, errors.Join(err, s.stop())
	}
	s.close = conn.Close
	s.ui = uiv1.NewUIServiceClient(conn)
	ready := testenv.Poll(30*time.Second, func() bool {
		select {
		case <-s.exited:
			return true
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		st, err := s.ui.GetStatus(cctx, &uiv1.GetStatusRequest{})
		return err == nil && st.GetAgentConnected()
	})
	select {
	case <-s.exited:
		return nil, fmt.Errorf("uiserver exited at start-up: %s", s.logTail(10))
	default:
	}
	if !ready {
		return nil, errors.Join(fmt.Errorf("uiserver not connected to the agent within 30s: %s", s.logTail(10)), s.stop())
	}
	return s, nil
}

func (s *uiService) logTail(n int) string { return fileTail(s.logPath, n) }

// stop ends the service by PID (SIGTERM, SIGKILL after 10s).
func (s *uiService) stop() error {
	if s.close != nil {
		s.close()
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return nil
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		return errors.New("stop uiserver: no exit within 10s of SIGTERM, killed")
	}
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
