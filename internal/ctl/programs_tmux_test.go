package ctl

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/bastion-fw/bastion/internal/testenv"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// terminal is a shell in a tmux pane of a given size, typed into with
// send-keys and read with capture-pane, as a person uses bastionctl.
type terminal struct {
	t       *testing.T
	sock    string
	session string
}

func (p *terminal) tmux(args ...string) string {
	p.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", p.sock}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

// screen is the pane's scrollback and screen, lines joined where they
// wrapped (so a line too long for the terminal shows as such).
func (p *terminal) screen() string {
	return p.tmux("capture-pane", "-p", "-J", "-t", p.session, "-S", "-200")
}

// prompts counts the shell's prompts on the screen, with or without a
// command typed after them (capture-pane drops a trailing space).
func prompts(screen string) int {
	n := 0
	for _, l := range strings.Split(screen, "\n") {
		if l == "$" || strings.HasPrefix(l, "$ ") {
			n++
		}
	}
	return n
}

// run types line and Enter, waits until the shell prompts again, and
// returns what the command printed.
func (p *terminal) run(line string) string {
	p.t.Helper()
	before := prompts(p.screen())
	p.tmux("send-keys", "-t", p.session, "-l", line)
	p.tmux("send-keys", "-t", p.session, "Enter")
	var out string
	if !testenv.Poll(15*time.Second, func() bool { out = p.screen(); return prompts(out) > before }) {
		p.t.Fatalf("%q did not finish in 15s:\n%s", line, p.screen())
	}
	_, printed, _ := strings.Cut(out[strings.LastIndex(out, "$ "+line):], "\n")
	return printed[:strings.LastIndex(printed, "\n$")+1]
}

func newTerminal(t *testing.T, sock, session string, width int, env []string) *terminal {
	p := &terminal{t: t, sock: sock, session: session}
	shell := "env -i"
	for _, e := range env {
		shell += " '" + e + "'"
	}
	p.tmux("new-session", "-d", "-s", session, "-x", strconv.Itoa(width), "-y", "50", shell+" bash --norc --noprofile")
	p.tmux("send-keys", "-t", session, "-l", "PS1='$ '; clear")
	p.tmux("send-keys", "-t", session, "Enter")
	if !testenv.Poll(15*time.Second, func() bool { return prompts(p.screen()) == 1 }) {
		t.Fatalf("the shell did not start:\n%s", p.screen())
	}
	return p
}

// TestProgramsInTmux runs the real bastionctl in terminals of two widths,
// against the fake rules service at the user's default socket, with
// Firefox's desktop entry in the XDG data directories: `programs` lists
// the programs by their menu names in aligned columns; a name that is
// nobody's gets a suggestion, and the suggested name shows the program
// with a chart that fits the terminal.
func TestProgramsInTmux(t *testing.T) {
	testenv.RequireTools(t, "tmux", "go", "bash")
	dir := t.TempDir()
	bin, err := testenv.GoBuild(dir, "bastionctl", "github.com/bastion-fw/bastion/cmd/bastionctl")
	if err != nil {
		t.Fatal(err)
	}
	runtimeDir, data := filepath.Join(dir, "run"), filepath.Join(dir, "share")
	for _, d := range []string{filepath.Join(runtimeDir, "bastion"), filepath.Join(data, "applications")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	entry := "[Desktop Entry]\nType=Application\nName=Firefox ESR\nExec=/usr/lib/firefox-esr/firefox-esr %u\n"
	if err := os.WriteFile(filepath.Join(data, "applications", "firefox-esr.desktop"), []byte(entry), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newProgramsUI()
	p.moveTo(time.Now(), time.Local)
	serve(t, filepath.Join(runtimeDir, "bastion"), "ui.sock", func(s *grpc.Server) { uiv1.RegisterUIServiceServer(s, p) })

	sock := filepath.Join(dir, "tmux.sock")
	t.Cleanup(func() { exec.Command("tmux", "-S", sock, "kill-server").Run() }) //nolint:errcheck // best effort
	env := []string{"PATH=" + filepath.Dir(bin) + ":/usr/bin:/bin", "XDG_RUNTIME_DIR=" + runtimeDir, "XDG_DATA_HOME=" + filepath.Join(dir, "none"),
		"XDG_DATA_DIRS=" + data, "TERM=xterm-256color", "LANG=C.UTF-8"}
	wide := newTerminal(t, sock, "wide", 120, env)

	// A day back, so that the same programs count at any time of day.
	out := wide.run("bastionctl programs --since 1d")
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(out, "Programs since ") || !strings.HasSuffix(lines[0], ", latest activity first:") || len(lines) < 6 {
		t.Fatalf("bastionctl programs printed:\n%s", out)
	}
	header := lines[1]
	for _, col := range []string{"PROGRAM", "ALLOWED", "DENIED", "DESTINATIONS", "SENT", "RECEIVED", "LAST ACTIVITY", "RULES", "PATH"} {
		if !strings.Contains(header, col) {
			t.Errorf("the header %q has no %s column", header, col)
		}
	}
	// The columns line up under their headings.
	rows := map[string]string{}
	for _, l := range lines[2:5] {
		rows[strings.SplitN(l, "  ", 2)[0]] = l
	}
	ff := rows["Firefox ESR"]
	if ff == "" || rows["curl"] == "" || rows["[nc]"] == "" {
		t.Fatalf("the rows are not Firefox ESR (its menu name), curl and [nc]:\n%s", out)
	}
	for col, cell := range map[string]string{"ALLOWED": "120", "RECEIVED": "45 MB", "PATH": "/usr/lib/firefox-esr/firefox-esr"} {
		if strings.Index(header, col) != strings.Index(ff, cell) {
			t.Errorf("%q is not under %s:\n%s\n%s", cell, col, header, ff)
		}
	}
	if strings.Index(header, "RECEIVED") != strings.Index(rows["curl"], "2.1 GB") {
		t.Errorf("curl's 2.1 GB is not under RECEIVED:\n%s\n%s", header, rows["curl"])
	}

	// A name nobody has: the person is told what it could mean.
	out = wide.run("bastionctl program firefox")
	if !strings.Contains(out, `bastionctl: no program "firefox" has made connections`) ||
		!strings.Contains(out, "  Firefox ESR  /usr/lib/firefox-esr/firefox-esr") {
		t.Errorf("bastionctl program firefox printed:\n%s", out)
	}
	if code := wide.run("echo $?"); strings.TrimSpace(code) != "3" {
		t.Errorf("exit status %q, want 3", code)
	}

	// The suggestion works; in a narrow terminal the chart fits.
	narrow := newTerminal(t, sock, "narrow", 64, env)
	out = narrow.run(`bastionctl program "Firefox ESR" --range week`)
	if !strings.HasPrefix(out, "Firefox ESR  /usr/lib/firefox-esr/firefox-esr\n") || !strings.Contains(out, "Destinations (4, grouped by host") ||
		!strings.Contains(out, "Traffic over the last 7 days, one column = 4 hours:") ||
		!strings.Contains(out, "10 MB ┤") || !strings.Contains(out, "0 └") {
		t.Errorf("bastionctl program \"Firefox ESR\" in 64 columns printed:\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.ContainsAny(l, "┤│└▁▂▃▄▅▆▇█") && len([]rune(l)) > 64 {
			t.Errorf("a chart line does not fit 64 columns: %q", l)
		}
	}
	t.Logf("the wide terminal:\n%s\nthe narrow one:\n%s", wide.screen(), narrow.screen())
}
