package gtkclient

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Config configures bastion-gtk.
type Config struct {
	// UISocket is the rules service's socket.
	UISocket string
	// MainWindow opens the main window at start.
	MainWindow bool
	// NoPrompts runs without becoming a prompt client (only the main
	// window); quitting the main window then quits the program.
	NoPrompts bool
	// ArmDelay is how long the prompt's buttons stay inactive after a
	// prompt appears, against the click meant for another window.
	ArmDelay time.Duration
	// Notify sends a desktop notification when connections were denied
	// by the default while no prompt client was connected.
	Notify bool
	// FocusPrompt, for a second launch, asks the running bastion-gtk to
	// give its prompt the keyboard focus (for a desktop shortcut).
	FocusPrompt bool
	// NoTray shows no status icon.
	NoTray bool
}

// DefaultConfig returns the defaults: the socket under $XDG_RUNTIME_DIR,
// prompts on, a one-second arming delay, notifications on.
func DefaultConfig() Config {
	return Config{UISocket: DefaultSocket(), ArmDelay: time.Second, Notify: true}
}

// DefaultSocket is $XDG_RUNTIME_DIR/bastion/ui.sock, or
// /run/user/UID/bastion/ui.sock when XDG_RUNTIME_DIR is unset.
func DefaultSocket() string {
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = filepath.Join("/run/user", fmt.Sprint(os.Getuid()))
	}
	return filepath.Join(dir, "bastion", "ui.sock")
}

// Validate checks c.
func (c Config) Validate() error {
	switch {
	case c.UISocket == "":
		return errors.New("config: no rules service socket (--ui-socket)")
	case c.ArmDelay < 0 || c.ArmDelay > 10*time.Second:
		return fmt.Errorf("config: arm delay %s is outside 0..10s", c.ArmDelay)
	case c.NoPrompts && !c.MainWindow:
		return errors.New("config: --no-prompts needs --main-window, or there is nothing to show")
	}
	return nil
}
