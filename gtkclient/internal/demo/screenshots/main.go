// Command screenshots takes docs/screenshots/prompt.png and
// docs/screenshots/main-window.png: it starts Xvfb and the demo rules
// service with sample prompts and rules, runs bastion-gtk against it and
// captures each window with ImageMagick's import. `make screenshots` runs
// it.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/bastion-fw/bastion/gtkclient/internal/demo"
	"github.com/bastion-fw/bastion/internal/rules"
	"github.com/bastion-fw/bastion/internal/testenv"
	"github.com/bastion-fw/bastion/internal/testenv/fakeui"
)

func main() {
	out := flag.String("out", "docs/screenshots", "folder for the PNG files")
	bin := flag.String("gtk", "bin/bastion-gtk", "the bastion-gtk binary")
	flag.Parse()
	if err := run(*out, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "screenshots:", err)
		os.Exit(1)
	}
}

func run(out, bin string) error {
	x, err := demo.StartXvfb("1280x860x24")
	if err != nil {
		return err
	}
	defer x.Stop()
	dir, err := os.MkdirTemp("", "bastion-screenshots-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	// Fixed times keep the pictures stable from run to run where they can be.
	now := rules.Now().Truncate(time.Minute)
	svc := fakeui.New()
	svc.SetClock(func() time.Time { return now })
	svc.AddRules(demo.SampleRules(now)...)
	svc.AddHistory(demo.SampleHistory(now)...)
	svc.AddDecideLater(demo.SampleDecideLater(now)...)
	sock := filepath.Join(dir, "ui.sock")
	ctx := context.Background()
	stop, err := svc.Serve(ctx, sock)
	if err != nil {
		return err
	}
	defer stop()

	// The main window alone first, so that the prompt does not cover it.
	gtk := start(bin, x.Display, "--ui-socket", sock, "--main-window", "--no-prompts", "--notify=false")
	if err := gtk.Start(); err != nil {
		return fmt.Errorf("start bastion-gtk: %w", err)
	}
	err = waitFor(func() bool { return len(svc.CallsTo("ListRules")) > 0 && len(svc.CallsTo("ListDecideLater")) > 0 })
	if err == nil {
		err = capture(x.Display, "Bastion", filepath.Join(out, "main-window.png"))
	}
	gtk.Process.Kill()
	gtk.Wait()
	if err != nil {
		return err
	}

	svc.AddPrompt(demo.CurlPrompt(rules.Now(), 30*time.Second))
	svc.AddPrompt(demo.FirefoxPrompt(rules.Now(), 30*time.Second))
	svc.AddPrompt(demo.SSHv6Prompt(rules.Now(), 30*time.Second))
	gtk = start(bin, x.Display, "--ui-socket", sock, "--arm-delay=0", "--notify=false")
	if err := gtk.Start(); err != nil {
		return fmt.Errorf("start bastion-gtk: %w", err)
	}
	defer func() { gtk.Process.Kill(); gtk.Wait() }()
	if err := waitFor(func() bool { return svc.PromptClients() > 0 }); err != nil {
		return err
	}
	return capture(x.Display, "Bastion: connection prompt", filepath.Join(out, "prompt.png"))
}

func start(bin, display string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "DISPLAY="+display, "GDK_BACKEND=x11", "NO_AT_BRIDGE=1", "GTK_THEME=Adwaita")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd
}

func waitFor(cond func() bool) error {
	if !testenv.Poll(20*time.Second, cond) {
		return errors.New("bastion-gtk did not connect to the demo service within 20s")
	}
	return nil
}

// capture grabs the screen, cropped to the one window on it (Xvfb runs no
// window manager, so the rest of the screen is black), once two captures
// in a row are equal: the window has settled (the prompt's countdown
// changes once a second).
func capture(display, title, path string) error {
	var (
		last     []byte
		appeared time.Time
	)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		cmd := exec.Command("import", "-window", "root", "-trim", "+repage", "png:-")
		cmd.Env = append(os.Environ(), "DISPLAY="+display)
		img, err := cmd.Output()
		if err == nil && len(img) > 1000 {
			if appeared.IsZero() {
				appeared = time.Now()
			}
			// A countdown never settles: take it a second after it appeared.
			if bytes.Equal(img, last) || time.Since(appeared) > time.Second {
				return os.WriteFile(path, img, 0o644)
			}
		}
		last = img
		time.Sleep(150 * time.Millisecond)
	}
	return fmt.Errorf("capture %q: the window did not appear or settle within 20s", title)
}
