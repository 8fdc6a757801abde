// Command bastion-bench measures Bastion's cost on new connections against a
// no-firewall baseline and a bare NFQUEUE, all in network namespaces it
// creates. Run it as root: go run ./cmd/bastion-bench
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/bastion-fw/bastion/internal/bench"
)

func main() {
	cfg := bench.DefaultConfig()
	flag.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of each connection-rate case")
	flag.IntVar(&cfg.Workers, "workers", cfg.Workers, "dialing threads")
	flag.StringVar(&cfg.AgentBin, "agent", "", "prebuilt bastion-agent (default: build ./cmd/bastion-agent)")
	flag.BoolVar(&cfg.NoAgent, "no-agent", false, "skip the agent cases")
	flag.IntVar(&cfg.Processes, "processes", cfg.Processes, "short-lived processes in the attribution case (0 skips it)")
	flag.IntVar(&cfg.KernelRounds, "kernel-rounds", cfg.KernelRounds, "rounds of the kernel-decision cases (0 skips them)")
	flag.DurationVar(&cfg.KernelSlice, "kernel-slice", cfg.KernelSlice, "length of each kernel-decision case in a round")
	flag.IntVar(&cfg.FloodThreads, "flood-threads", cfg.FloodThreads, "dialing threads of the ring buffer's flood")
	flag.BoolVar(&cfg.KernelOnly, "kernel-only", false, "run the no-firewall baseline and the kernel-decision cases only")
	flag.IntVar(&cfg.TrafficRounds, "traffic-rounds", cfg.TrafficRounds, "paired rounds of the traffic accounting cost (0 skips them)")
	flag.DurationVar(&cfg.TrafficSlice, "traffic-slice", cfg.TrafficSlice, "length of each agent's slice in a traffic round")
	flag.BoolVar(&cfg.TrafficOnly, "traffic-only", false, "run the no-firewall baseline and the traffic accounting rounds only")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "bench")
	if _, err := bench.Run(ctx, cfg, os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "bastion-bench:", err)
		os.Exit(1)
	}
}
