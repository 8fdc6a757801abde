// Command barequeue is the benchmark's ceiling: the smallest NFQUEUE program
// that accepts every packet. It runs as its own process, as the agent does,
// so that the two pay the same context switches. It binds the queue in its
// own network namespace, prints "ready", and on SIGTERM prints the number of
// packets it accepted and exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
)

func main() {
	num := flag.Uint("queue-num", 9, "NFQUEUE number")
	flag.Parse()
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      uint16(*num),
		Flags:        nfqueue.NfQaCfgFlagUIDGid,
		Copymode:     nfqueue.NfQnlCopyPacket,
		MaxPacketLen: 128,
		MaxQueueLen:  4096,
		WriteTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "barequeue: open:", err)
		os.Exit(1)
	}
	if err := nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		fmt.Fprintln(os.Stderr, "barequeue: NoENOBUFS:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var seen atomic.Uint64
	hook := func(a nfqueue.Attribute) int {
		if a.PacketID != nil {
			seen.Add(1)
			nf.SetVerdict(*a.PacketID, nfqueue.NfAccept)
		}
		return 0
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, func(error) int { return 0 }); err != nil {
		fmt.Fprintln(os.Stderr, "barequeue: register:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	<-ctx.Done()
	nf.Close()
	fmt.Println(seen.Load())
}
