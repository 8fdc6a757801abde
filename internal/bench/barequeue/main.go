// Command barequeue is the benchmark's ceiling: the smallest NFQUEUE program
// that lets every packet through. It runs as its own process, as the agent
// does, so that the two pay the same context switches, and it reads the
// queue with the agent's own queue code (internal/nfq) and the agent's Go
// runtime settings (one P), so that the difference between the two is what
// the agent does per packet: identify the process and decide.
//
// With -repeat-mark it re-injects each packet with NF_REPEAT and that mark,
// as the agent's verdicts do behind Bastion's chain; otherwise it answers
// NF_ACCEPT. It binds the queue in its own network namespace, prints
// "ready", and on SIGTERM prints the number of packets it let through and
// exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"

	"github.com/bastion-fw/bastion/internal/nfq"
)

func main() {
	num := flag.Uint("queue-num", 9, "NFQUEUE number")
	repeatMark := flag.Uint("repeat-mark", 0, "re-inject with NF_REPEAT and this mark instead of NF_ACCEPT")
	flag.Parse()
	// As cmd/bastion-agent does: one goroutine handles the queue, and a
	// P per core only adds thread hand-offs.
	runtime.GOMAXPROCS(1)

	q, err := nfq.Open(nfq.Config{Num: uint16(*num)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "barequeue:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var seen atomic.Uint64
	verdict := func(p nfq.Packet) error { return q.Accept(p.ID) }
	if *repeatMark != 0 {
		verdict = func(p nfq.Packet) error { return q.Repeat(p.ID, uint32(*repeatMark)) }
	}
	done := make(chan error, 1)
	go func() {
		done <- q.Run(ctx, func(p nfq.Packet) {
			if verdict(p) == nil {
				seen.Add(1)
			}
		})
	}()
	select {
	case <-q.Bound():
		fmt.Println("ready")
		err = <-done
	case err = <-done:
	}
	q.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "barequeue:", err)
		os.Exit(1)
	}
	fmt.Println(seen.Load())
}
