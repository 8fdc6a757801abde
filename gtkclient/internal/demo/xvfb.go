package demo

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Xvfb is a virtual X server started for tests and screenshots.
type Xvfb struct {
	Display string // ":99"
	cmd     *exec.Cmd
}

// StartXvfb starts Xvfb on the first free display from :99 to :120 (one
// without a /tmp/.X<N>-lock file) and waits until it accepts clients.
func StartXvfb(size string) (*Xvfb, error) {
	bin, err := exec.LookPath("Xvfb")
	if err != nil {
		return nil, fmt.Errorf("start Xvfb: %w (install the xvfb package)", err)
	}
	for n := 99; n <= 120; n++ {
		if _, err := os.Stat(fmt.Sprintf("/tmp/.X%d-lock", n)); err == nil {
			continue
		}
		d := fmt.Sprintf(":%d", n)
		cmd := exec.Command(bin, d, "-screen", "0", size, "-nolisten", "tcp", "-noreset")
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start Xvfb: %w", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		sock := filepath.Join("/tmp/.X11-unix", fmt.Sprintf("X%d", n))
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Stat(sock); err == nil {
				return &Xvfb{Display: d, cmd: cmd}, nil
			}
			select {
			case <-exited:
				// Lost a race for the display with another Xvfb: try the next.
			case <-time.After(20 * time.Millisecond):
				if time.Now().Before(deadline) {
					continue
				}
				cmd.Process.Kill()
				return nil, errors.New("start Xvfb: it did not open its socket within 10s")
			}
			break
		}
	}
	return nil, errors.New("start Xvfb: no free display from :99 to :120")
}

// Stop ends the server.
func (x *Xvfb) Stop() {
	x.cmd.Process.Kill()
}
