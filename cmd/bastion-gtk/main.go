// Command bastion-gtk is Bastion's desktop client: the connection prompt
// and the rules window. It talks to the user's own rules service.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/bastion-fw/bastion/gtkclient"
)

func main() {
	cfg := gtkclient.DefaultConfig()
	flag.StringVar(&cfg.UISocket, "ui-socket", cfg.UISocket, "the rules service's socket")
	flag.BoolVar(&cfg.MainWindow, "main-window", false, "open the rules window (in the running bastion-gtk, if one runs)")
	flag.BoolVar(&cfg.FocusPrompt, "focus-prompt", false, "give the running bastion-gtk's prompt the keyboard focus (for a desktop shortcut)")
	flag.BoolVar(&cfg.NoTray, "no-tray", false, "show no status icon")
	flag.BoolVar(&cfg.NoPrompts, "no-prompts", false, "do not show prompts (only the rules window)")
	flag.DurationVar(&cfg.ArmDelay, "arm-delay", cfg.ArmDelay, "how long the prompt's buttons stay inactive")
	flag.BoolVar(&cfg.Notify, "notify", cfg.Notify, "notify about connections denied while no prompt was open")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := gtkclient.Run(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "bastion-gtk:", err)
		os.Exit(1)
	}
}
