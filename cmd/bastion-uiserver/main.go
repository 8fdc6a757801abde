// Command bastion-uiserver is Bastion's per-user rules service: it keeps the
// user's rules in the agent and brokers prompts. See uiserver.Run.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/bastion-fw/bastion/uiserver"
)

func main() {
	cfg, err := uiserver.ParseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bastion-uiserver:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := uiserver.Run(ctx, cfg, log); err != nil {
		log.Error("bastion-uiserver failed", "err", err)
		os.Exit(1)
	}
}
