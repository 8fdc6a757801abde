// Command bastionctl is Bastion's command line. See package ctl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/bastion-fw/bastion/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
