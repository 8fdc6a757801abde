// Command bastion-agent is Bastion's privileged agent: it holds new outbound
// connections until they are decided. See agent.Run.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/bastion-fw/bastion/agent"
)

// memoryLimit is the Go runtime's soft memory limit (GOMEMLIMIT): the
// heap, stacks and runtime structures, not the program's text nor the BPF
// maps.
const memoryLimit = 40 << 20

func main() {
	cfg, err := agent.ParseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bastion-agent:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	tuneRuntime(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := agent.Run(ctx, cfg, log); err != nil {
		log.Error("bastion-agent failed", "err", err)
		os.Exit(1)
	}
}

// tuneRuntime sets the Go runtime for the agent's load, unless the
// GOMAXPROCS, GOGC or GOMEMLIMIT environment variables choose otherwise.
//
// Every queued packet is handled on one goroutine, and the API is light, so
// one P does all the work. With a P per core, the runtime wakes and spins
// further threads for each packet hand-off, which took ~10% of the
// connection rate of a 2-core machine in `make bench` (the applications
// whose connections are held need those cores). The live heap is a few MiB,
// so at the default GOGC the collector runs several times a second at the
// rates the benchmark reaches; GOGC=400 makes that a fraction, for a few
// MiB more RSS.
//
// GOGC=400 lets the heap grow to five times what is live before a
// collection; when a burst makes much live at once (an API client's
// queues and requests, within their bounds), that would be five times the
// burst. The soft memory limit makes the collector work harder instead,
// so that the agent stays within its budget whatever an API client does
// (docs/security.md, Resource limits).
func tuneRuntime(log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	gogc := os.Getenv("GOGC")
	if gogc == "" {
		debug.SetGCPercent(400)
		gogc = "400"
	}
	memLimit := os.Getenv("GOMEMLIMIT")
	if memLimit == "" {
		debug.SetMemoryLimit(memoryLimit)
		memLimit = "40MiB"
	}
	log.Debug("go runtime", "gomaxprocs", runtime.GOMAXPROCS(0), "gogc", gogc, "gomemlimit", memLimit)
}
