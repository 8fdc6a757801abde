// Command screenshots takes the pictures in docs/screenshots: every page of
// the main window, a program's detail, the rule dialog (filled in, with problems, and for any
// program anywhere), the preferences and the prompt. It starts Xvfb with
// the openbox window manager and the demo rules service with sample
// prompts, rules and history, runs bastion-gtk against it, and works it
// with the keyboard through xdotool as a person would, capturing each
// window with ImageMagick's import. `make screenshots` runs it.
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
	"strconv"
	"strings"
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

// mainPages are the main window's pages in the order Alt+1… shows them,
// and the file each is saved to.
var mainPages = []string{"main-programs.png", "main-window.png", "main-connections.png", "main-decide-later.png", "main-status.png", "main-preferences.png"}

func run(out, bin string) error {
	x, err := demo.StartXvfb("1280x860x24")
	if err != nil {
		return err
	}
	defer x.Stop()
	stopWM, err := demo.StartOpenbox(x.Display)
	if err != nil {
		return err
	}
	defer stopWM()
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
	svc.SetPrograms(demo.SamplePrograms(now, time.Local)...)
	// The sample programs' desktop entries, as the user's own: their
	// names and icons on the Programs page.
	apps := filepath.Join(dir, "share", "applications")
	if err := os.MkdirAll(apps, 0o755); err != nil {
		return err
	}
	for name, text := range demo.DesktopEntries {
		if err := os.WriteFile(filepath.Join(apps, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	sock := filepath.Join(dir, "ui.sock")
	stop, err := svc.Serve(context.Background(), sock)
	if err != nil {
		return err
	}
	defer stop()
	s := screen{display: x.Display, out: out}

	// The main window alone first, so that the prompt does not cover it.
	gtk := start(bin, x.Display, "--ui-socket", sock, "--main-window", "--no-prompts", "--notify=false")
	gtk.Env = append(gtk.Env, "XDG_DATA_HOME="+filepath.Join(dir, "share"))
	if err := gtk.Start(); err != nil {
		return fmt.Errorf("start bastion-gtk: %w", err)
	}
	err = waitFor(func() bool {
		return len(svc.CallsTo("ListRules")) > 0 && len(svc.CallsTo("ListDecideLater")) > 0 && len(svc.CallsTo("GetConfig")) > 0 &&
			len(svc.CallsTo("ListPrograms")) > 0
	})
	if err == nil {
		err = s.mainWindow(gtk.Process.Pid)
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
	id, err := s.window(gtk.Process.Pid, "")
	if err != nil {
		return err
	}
	// A countdown never settles: it is taken a second after it appeared.
	return s.shoot(id, "prompt.png", nil, true)
}

// mainWindow captures the main window's pages and the rule dialog.
func (s screen) mainWindow(pid int) error {
	win, err := s.window(pid, "^Bastion$")
	if err != nil {
		return err
	}
	if _, err := s.xdo("windowactivate", "--sync", win); err != nil {
		return err
	}
	// The pointer away from the window: over a row, it shows the row's
	// tooltip in the pictures.
	if _, err := s.xdo("mousemove", "--sync", "1279", "859"); err != nil {
		return err
	}
	var last []byte
	for i, file := range mainPages {
		if _, err := s.xdo("key", "alt+"+strconv.Itoa(i+1)); err != nil {
			return err
		}
		if err := s.shoot(win, file, last, false); err != nil {
			return err
		}
		last, _ = os.ReadFile(filepath.Join(s.out, file))
		if file == "main-connections.png" {
			// The Connections page filtered: one program's, denied.
			if err := s.filterConnections(win, last); err != nil {
				return err
			}
		}
	}

	// A program's detail: Ctrl+F on the Programs page, its name, Enter.
	if _, err := s.xdo("key", "alt+1", "ctrl+f"); err != nil {
		return err
	}
	if _, err := s.xdo("type", "--delay", "5", "firefox"); err != nil {
		return err
	}
	if _, err := s.xdo("key", "Return"); err != nil {
		return err
	}
	if err := s.shoot(win, "program-detail.png", last, false); err != nil {
		return err
	}
	if _, err := s.xdo("key", "alt+w"); err != nil {
		return err
	}
	last, _ = os.ReadFile(filepath.Join(s.out, "program-detail.png"))
	if err := s.shoot(win, "program-detail-week.png", last, false); err != nil {
		return err
	}
	if _, err := s.xdo("key", "Escape"); err != nil {
		return err
	}

	// A new rule, filled in with the keyboard: each field has an Alt key.
	if _, err := s.xdo("key", "alt+2", "alt+n"); err != nil {
		return err
	}
	dlg, err := s.window(pid, "^New rule$")
	if err != nil {
		return err
	}
	fill := func(fields [][2]string) error {
		for _, f := range fields {
			if _, err := s.xdo("key", f[0]); err != nil {
				return err
			}
			if _, err := s.xdo("type", "--delay", "5", f[1]); err != nil {
				return err
			}
		}
		return nil
	}
	err = fill([][2]string{{"alt+p", "/usr/bin/curl"}, {"alt+h", "deb.debian.org"}, {"alt+o", "443"}, {"alt+e", "Debian updates"}})
	if err == nil {
		_, err = s.xdo("key", "alt+t", "Down") // protocol: TCP
	}
	if err == nil {
		err = s.shoot(dlg, "rule-dialog.png", nil, false)
	}
	if err != nil {
		return err
	}
	before, _ := os.ReadFile(filepath.Join(s.out, "rule-dialog.png"))
	err = fill([][2]string{{"alt+p", "curl"}, {"alt+n", "curl ("}, {"alt+h", "https://Deb.debian.org/"}, {"alt+d", "10.0.0.1/8"},
		{"alt+o", "70000"}})
	if err == nil {
		_, err = s.xdo("key", "alt+s")
	}
	if err == nil {
		err = s.shoot(dlg, "rule-dialog-problems.png", before, false)
	}
	if err != nil {
		return err
	}
	if _, err := s.xdo("key", "Escape"); err != nil {
		return err
	}
	if err := s.gone(dlg); err != nil {
		return err
	}

	// An empty rule: saving it asks for a confirmation.
	if _, err := s.xdo("windowactivate", "--sync", win); err != nil {
		return err
	}
	if _, err := s.xdo("key", "alt+n"); err != nil {
		return err
	}
	if dlg, err = s.window(pid, "^New rule$"); err != nil {
		return err
	}
	if _, err := s.xdo("key", "alt+s"); err != nil {
		return err
	}
	before, _ = os.ReadFile(filepath.Join(s.out, "rule-dialog-problems.png"))
	return s.shoot(dlg, "rule-dialog-anywhere.png", before, false)
}

// filterConnections shows the Connections page filtered by program and
// action, as typed in its fields, and takes it; then clears the filters.
func (s screen) filterConnections(win string, notLike []byte) error {
	for _, k := range [][]string{
		{"key", "alt+p"}, {"type", "--delay", "5", "firefox-esr"},
		{"key", "alt+a"}, {"key", "Down"}, {"key", "Down"}, // Denied
	} {
		if _, err := s.xdo(k...); err != nil {
			return err
		}
	}
	if err := s.shoot(win, "main-connections-filtered.png", notLike, false); err != nil {
		return err
	}
	for _, k := range [][]string{{"key", "alt+a"}, {"key", "Up"}, {"key", "Up"}, {"key", "alt+p"}, {"key", "ctrl+a", "BackSpace"}} {
		if _, err := s.xdo(k...); err != nil {
			return err
		}
	}
	return nil
}

// screen is the virtual display the pictures are taken of.
type screen struct {
	display string
	out     string
}

func (s screen) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "DISPLAY="+s.display)
	return cmd
}

func (s screen) xdo(args ...string) (string, error) {
	out, err := s.command("xdotool", args...).Output()
	if err != nil {
		return "", fmt.Errorf("xdotool %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// window waits for a visible window of process pid whose title matches
// name ("" for any) and returns its ID.
func (s screen) window(pid int, name string) (string, error) {
	args := []string{"search", "--all", "--onlyvisible", "--pid", strconv.Itoa(pid)}
	if name != "" {
		args = append(args, "--name", name)
	}
	var id string
	if !testenv.Poll(20*time.Second, func() bool {
		out, err := s.xdo(args...)
		if err != nil || out == "" {
			return false
		}
		id = strings.Fields(out)[0]
		return true
	}) {
		return "", fmt.Errorf("no window %q of bastion-gtk within 20s", name)
	}
	return id, nil
}

// gone waits until window id is closed.
func (s screen) gone(id string) error {
	if !testenv.Poll(10*time.Second, func() bool {
		_, err := s.command("xwininfo", "-id", id).Output()
		return err != nil
	}) {
		return fmt.Errorf("window %s did not close within 10s", id)
	}
	return nil
}

// shoot saves window id, with its frame, to out/file once two captures in
// a row are equal (the window has settled) and differ from notLike (the
// previous picture, when the keys just sent change what is shown).
// moving windows (a countdown) are taken a second after they appeared.
func (s screen) shoot(id, file string, notLike []byte, moving bool) error {
	var (
		last     []byte
		appeared time.Time
	)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(150 * time.Millisecond) {
		img, err := s.command("import", "-frame", "-window", id, "png:-").Output()
		if err != nil || len(img) < 1000 || bytes.Equal(img, notLike) {
			last = nil
			continue
		}
		if appeared.IsZero() {
			appeared = time.Now()
		}
		if bytes.Equal(img, last) || (moving && time.Since(appeared) > time.Second) {
			fmt.Fprintln(os.Stderr, "screenshots: wrote", filepath.Join(s.out, file))
			return os.WriteFile(filepath.Join(s.out, file), img, 0o644)
		}
		last = img
	}
	return fmt.Errorf("capture %s: the window did not appear or settle within 20s", file)
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
