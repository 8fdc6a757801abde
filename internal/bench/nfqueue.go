package bench

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"

	"github.com/bastion-fw/bastion/internal/testenv"
)

// BareQueue is a minimal NFQUEUE consumer that accepts every packet: the
// ceiling any userspace verdict path can reach on this machine.
type BareQueue struct {
	nf     *nfqueue.Nfqueue
	cancel context.CancelFunc
	seen   atomic.Uint64
}

// StartBareQueue sends new outbound TCP connections (SYNs) in ns to queue
// num and accepts them from a go-nfqueue program running in this process.
// The rule has no --queue-bypass: if the program falls behind, SYNs are
// dropped and retransmitted, which shows in p99.
func StartBareQueue(ctx context.Context, ns *testenv.NS, num uint16) (*BareQueue, error) {
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      num,
		NetNS:        int(ns.File.Fd()),
		Flags:        nfqueue.NfQaCfgFlagUIDGid,
		Copymode:     nfqueue.NfQnlCopyPacket,
		MaxPacketLen: 128,
		MaxQueueLen:  4096,
		WriteTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		return nil, fmt.Errorf("open nfqueue %d: %w", num, err)
	}
	if err := nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		nf.Close()
		return nil, fmt.Errorf("nfqueue option NoENOBUFS: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	q := &BareQueue{nf: nf, cancel: cancel}
	hook := func(a nfqueue.Attribute) int {
		if a.PacketID != nil {
			q.seen.Add(1)
			nf.SetVerdict(*a.PacketID, nfqueue.NfAccept)
		}
		return 0
	}
	// Keep reading after transient errors; ctx ends the loop.
	if err := nf.RegisterWithErrorFunc(ctx, hook, func(error) int { return 0 }); err != nil {
		cancel()
		nf.Close()
		return nil, fmt.Errorf("register nfqueue %d: %w", num, err)
	}
	if err := Iptables(ns, "-A", "OUTPUT", "-p", "tcp", "--syn", "-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(num))); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// Seen is the number of packets the queue has delivered.
func (q *BareQueue) Seen() uint64 { return q.seen.Load() }

// Close stops reading and closes the queue. Remove the rule (or the
// namespace) first, or new SYNs are dropped.
func (q *BareQueue) Close() error {
	q.cancel()
	return q.nf.Close()
}

// Iptables runs iptables inside ns, staying in the root mount namespace.
func Iptables(ns *testenv.NS, args ...string) error {
	argv := append([]string{"--net=" + ns.Path, "--", "iptables", "-w"}, args...)
	if out, err := exec.Command("nsenter", argv...).CombinedOutput(); err != nil {
		return fmt.Errorf("iptables %s in %s: %w: %s", strings.Join(args, " "), ns.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
