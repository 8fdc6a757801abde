package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/bastion-fw/bastion/internal/fw"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// BareQueuePackage is the bare NFQUEUE program's package.
const BareQueuePackage = "github.com/bastion-fw/bastion/internal/bench/barequeue"

// BareQueue is a minimal NFQUEUE program, in its own process like the agent,
// that lets every packet through: the ceiling any userspace verdict path
// can reach on this machine.
type BareQueue struct {
	cmd   *exec.Cmd
	out   *bufio.Reader
	fwCfg *fw.Config // Bastion's chain, when the queue sits behind it
}

// BareRules says which rules feed a bare queue.
type BareRules int

const (
	// SYNOnly is one rule, -p tcp --syn -j NFQUEUE, answered NF_ACCEPT:
	// no connection tracking, nothing after the verdict. It queues TCP
	// only, so it is less than any firewall that also asks about UDP.
	SYNOnly BareRules = iota
	// FirstPackets queues the first packet of every new flow as the
	// agent's design defines it, TCP SYNs and conntrack NEW for UDP and
	// ICMP echo, answered NF_ACCEPT: the mechanism's ceiling. The UDP and
	// ICMP rules turn connection tracking on in the namespace, so every
	// packet, TCP too, is tracked.
	FirstPackets
	// BastionChain is the agent's own rules (internal/fw, as the agent
	// installs them with loopback interception), answered as the agent
	// answers an allow: NF_REPEAT with the allow mark, which the chain
	// saves on the connection. The kernel then does exactly the work it
	// does for the agent: connection tracking of every packet, the chain,
	// and the second pass of the re-injected packet.
	BastionChain
)

func (r BareRules) String() string {
	switch r {
	case BastionChain:
		return "bare NFQUEUE, Bastion's chain"
	case FirstPackets:
		return "bare NFQUEUE, first packets"
	}
	return "bare NFQUEUE, TCP SYN only"
}

// StartBareQueue sends new outbound TCP connections in ns to queue num
// through rules, and starts the program bin (built from BareQueuePackage)
// inside ns to let them through. The rules have no --queue-bypass: if the
// program falls behind, SYNs are dropped and retransmitted, which shows in
// p99.
func StartBareQueue(ctx context.Context, ns *testenv.NS, bin string, num uint16, rules BareRules) (*BareQueue, error) {
	args := []string{"-queue-num", strconv.Itoa(int(num))}
	var fwCfg *fw.Config
	if rules == BastionChain {
		// As the agent installs them by default, DNS answer chain
		// included (nobody reads its queue here; it bypasses).
		fwCfg = &fw.Config{NetNS: ns.Path, QueueNum: num, DNSQueueNum: num + 1, InterceptLoopback: true}
		args = append(args, "-repeat-mark", strconv.FormatUint(uint64(fw.DefaultMarks().Allow), 10))
	}
	cmd := ns.Command(ctx, 0, 0, bin, args...)
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
	if fwCfg != nil {
		b, err := fw.DetectBackend(ctx, ns.Path)
		if err == nil {
			fwCfg.Backend = b
			err = fw.Install(ctx, *fwCfg)
		}
		if err != nil {
			q.Close()
			return nil, fmt.Errorf("install Bastion's chain for the bare queue: %w", err)
		}
		q.fwCfg = fwCfg
		return q, nil
	}
	queue := []string{"-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(num))}
	matches := [][]string{{"-p", "tcp", "--syn"}}
	if rules == FirstPackets {
		matches = append(matches,
			[]string{"-p", "udp", "-m", "conntrack", "--ctstate", "NEW"},
			[]string{"-p", "icmp", "--icmp-type", "echo-request", "-m", "conntrack", "--ctstate", "NEW"})
	}
	for _, m := range matches {
		if err := Iptables(ns, append(append([]string{"-A", "OUTPUT"}, m...), queue...)...); err != nil {
			q.Close()
			return nil, err
		}
	}
	return q, nil
}

// Close removes Bastion's chain if the queue sat behind it, stops the
// program and returns how many packets it let through. A plain rule stays:
// delete the namespace after, or new SYNs are dropped.
func (q *BareQueue) Close() (uint64, error) {
	var fwErr error
	if q.fwCfg != nil {
		fwErr = fw.Remove(context.Background(), *q.fwCfg)
	}
	q.cmd.Process.Signal(syscall.SIGTERM)
	rest, _ := io.ReadAll(q.out)
	err := q.cmd.Wait()
	n, perr := strconv.ParseUint(strings.TrimSpace(string(rest)), 10, 64)
	if perr != nil && err == nil {
		err = fmt.Errorf("bare queue count %q: %w", rest, perr)
	}
	return n, errors.Join(fwErr, err)
}

// Iptables runs iptables inside ns, staying in the root mount namespace.
func Iptables(ns *testenv.NS, args ...string) error {
	argv := append([]string{"--net=" + ns.Path, "--", "iptables", "-w"}, args...)
	if out, err := exec.Command("nsenter", argv...).CombinedOutput(); err != nil {
		return fmt.Errorf("iptables %s in %s: %w: %s", strings.Join(args, " "), ns.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
