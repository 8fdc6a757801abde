package demo

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Xvfb is a virtual X server started for tests and screenshots.
type Xvfb struct {
	Display string // ":99"
	cmd     *exec.Cmd
	exited  chan struct{}
}

// StartXvfb starts Xvfb on the first free display from :99 to :120 (one
// without a /tmp/.X<N>-lock file of a live server) and waits until it
// accepts clients. Any local user may connect: Xvfb runs without -auth, so
// a test may run a client as another UID.
func StartXvfb(size string) (*Xvfb, error) {
	bin, err := exec.LookPath("Xvfb")
	if err != nil {
		return nil, fmt.Errorf("start Xvfb: %w (install the xvfb package)", err)
	}
	for n := 99; n <= 120; n++ {
		if displayInUse(n) {
			continue
		}
		d := fmt.Sprintf(":%d", n)
		cmd := exec.Command(bin, d, "-screen", "0", size, "-nolisten", "tcp", "-noreset")
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start Xvfb: %w", err)
		}
		exited := make(chan struct{})
		go func() {
			cmd.Wait()
			close(exited)
		}()
		sock := filepath.Join("/tmp/.X11-unix", fmt.Sprintf("X%d", n))
		// A stale socket of a server that died is replaced by the new
		// server's; wait until it accepts a connection, not just exists.
		deadline := time.Now().Add(10 * time.Second)
		for {
			if c, err := dialX(sock); err == nil {
				c.Close()
				return &Xvfb{Display: d, cmd: cmd, exited: exited}, nil
			}
			select {
			case <-exited:
				// Lost a race for the display with another Xvfb: try the next.
			case <-time.After(20 * time.Millisecond):
				if time.Now().Before(deadline) {
					continue
				}
				cmd.Process.Kill()
				<-exited
				return nil, errors.New("start Xvfb: it did not accept clients within 10s")
			}
			break
		}
	}
	return nil, errors.New("start Xvfb: no free display from :99 to :120")
}

// displayInUse reports whether display n has a lock file naming a live
// process. A lock left by a server that was killed is stale: the next X
// server on that display removes it.
func displayInUse(n int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/tmp/.X%d-lock", n))
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return true // being written, or not ours to judge
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func dialX(sock string) (*os.File, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := syscall.Connect(fd, &syscall.SockaddrUnix{Name: sock}); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), sock), nil
}

// Stop ends the server with SIGTERM, so that it removes its lock file and
// socket (a killed server leaves them behind), and waits for it; SIGKILL
// after 5s.
func (x *Xvfb) Stop() {
	x.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-x.exited:
	case <-time.After(5 * time.Second):
		x.cmd.Process.Kill()
		<-x.exited
	}
}

// StartOpenbox runs the openbox window manager on display, as on a
// person's desktop (focus, stacking, dialogs placed over their parent),
// and waits until it manages new windows (WaitOpenbox). stop ends it.
func StartOpenbox(display string) (stop func(), err error) {
	for _, bin := range []string{"openbox", "xprop", "xmessage", "xdotool"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("start openbox: %w (install openbox, x11-utils and xdotool)", err)
		}
	}
	cmd := exec.Command("openbox", "--sm-disable")
	cmd.Env = append(os.Environ(), "DISPLAY="+display)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start openbox: %w", err)
	}
	stop = func() { cmd.Process.Kill(); cmd.Wait() }
	if err := WaitOpenbox(display, 10*time.Second); err != nil {
		stop()
		return nil, fmt.Errorf("start openbox: %w", err)
	}
	return stop, nil
}

// WaitOpenbox waits until the openbox just started on display manages
// the windows mapped from then on. Openbox names itself on the root
// before it has loaded its theme and entered its event loop, and a
// window mapped in between is never managed: it stays unmapped, and
// tests waiting for it failed (TestRulesClickWithTwoPromptsQueued's
// browser in a fresh-clone CI run, and 2 of 12 windows mapped while a
// starting openbox was held with SIGSTOP).
// So a probe window must be managed too; a probe mapped too early is
// lost, and the next one is not.
func WaitOpenbox(display string, timeout time.Duration) error {
	env := append(os.Environ(), "DISPLAY="+display)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if openboxManages(env) && openboxMapsProbe(env) {
			return nil
		}
	}
	return fmt.Errorf("openbox did not manage the screen within %s", timeout)
}

// openboxMapsProbe reports whether openbox manages a window mapped now
// within a second: a tiny xmessage window, closed again.
func openboxMapsProbe(env []string) bool {
	const name = "bastion-wm-probe"
	probe := exec.Command("xmessage", "-name", name, "-geometry", "1x1+0+0", name)
	probe.Env = env
	if err := probe.Start(); err != nil {
		return false
	}
	defer func() { probe.Process.Kill(); probe.Wait() }()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		search := exec.Command("xdotool", "search", "--onlyvisible", "--name", "^"+name+"$")
		search.Env = env
		if out, _ := search.Output(); len(strings.TrimSpace(string(out))) > 0 {
			return true
		}
	}
	return false
}

// openboxManages reports whether openbox manages the screen. The root's
// _NET_SUPPORTING_WM_CHECK outlives a window manager that exited (as the
// one a previous test stopped): the window it names must exist and be
// openbox's.
func openboxManages(env []string) bool {
	probe := exec.Command("xprop", "-root", "_NET_SUPPORTING_WM_CHECK")
	probe.Env = env
	out, err := probe.Output()
	if err != nil {
		return false
	}
	_, id, ok := strings.Cut(string(out), "window id # ")
	if !ok {
		return false
	}
	probe = exec.Command("xprop", "-id", strings.TrimSpace(id), "_NET_WM_NAME")
	probe.Env = env
	name, err := probe.Output()
	return err == nil && strings.Contains(string(name), "Openbox")
}
