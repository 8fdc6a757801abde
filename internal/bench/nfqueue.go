package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/bastion-fw/bastion/internal/testenv"
)

// BareQueuePackage is the bare NFQUEUE program's package.
const BareQueuePackage = "github.com/bastion-fw/bastion/internal/bench/barequeue"

// BareQueue is a minimal NFQUEUE program, in its own process like the agent,
// that accepts every packet: the ceiling any userspace verdict path can reach
// on this machine.
type BareQueue struct {
	cmd  *exec.Cmd
	out  *bufio.Reader
	seen uint64
}

// StartBareQueue sends new outbound TCP connections (SYNs) in ns to queue
// num and starts the program bin (built from BareQueuePackage) inside ns to
// accept them. The rule has no --queue-bypass: if the program falls behind,
// SYNs are dropped and retransmitted, which shows in p99.
func StartBareQueue(ctx context.Context, ns *testenv.NS, bin string, num uint16) (*BareQueue, error) {
	cmd := ns.Command(ctx, 0, 0, bin, "-queue-num", strconv.Itoa(int(num)))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := ns.Start(cmd); err != nil {
		return nil, fmt.Errorf("start bare queue: %w", err)
	}
	q := &BareQueue{cmd: cmd, out: bufio.NewReader(stdout)}
	if line, err := q.out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		q.Close()
		return nil, fmt.Errorf("bare queue did not start: %q %v", line, err)
	}
	if err := Iptables(ns, "-A", "OUTPUT", "-p", "tcp", "--syn", "-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(num))); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// Close stops the program and returns how many packets it accepted. Remove
// the rule (or the namespace) first, or new SYNs are dropped.
func (q *BareQueue) Close() (uint64, error) {
	q.cmd.Process.Signal(syscall.SIGTERM)
	rest, _ := io.ReadAll(q.out)
	err := q.cmd.Wait()
	n, perr := strconv.ParseUint(strings.TrimSpace(string(rest)), 10, 64)
	if perr != nil && err == nil {
		err = fmt.Errorf("bare queue count %q: %w", rest, perr)
	}
	return n, err
}

// Iptables runs iptables inside ns, staying in the root mount namespace.
func Iptables(ns *testenv.NS, args ...string) error {
	argv := append([]string{"--net=" + ns.Path, "--", "iptables", "-w"}, args...)
	if out, err := exec.Command("nsenter", argv...).CombinedOutput(); err != nil {
		return fmt.Errorf("iptables %s in %s: %w: %s", strings.Join(args, " "), ns.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
