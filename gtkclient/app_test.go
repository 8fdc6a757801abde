package gtkclient

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"

	"github.com/bastion-fw/bastion/gtkclient/internal/demo"
	"github.com/bastion-fw/bastion/internal/testenv"
	"github.com/bastion-fw/bastion/internal/testenv/fakeui"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// desktop is a person's session on the test's Xvfb: a session bus and
// openbox, with the bastion-gtk binary.
type desktop struct {
	t        *testing.T
	bin, dir string
	bus      string // DBUS_SESSION_BUS_ADDRESS
	svc      *fakeui.Service
	sock     string
}

func newDesktop(t *testing.T) *desktop {
	t.Helper()
	needGTK(t)
	testenv.RequireTools(t, "go", "dbus-daemon", "openbox", "xdotool")
	dir := testenv.TempDir(t)
	d := &desktop{t: t, dir: dir, svc: fakeui.New(), sock: filepath.Join(dir, "ui.sock")}
	// (testenv.GoBuild builds without cgo; bastion-gtk links GTK.)
	d.bin = filepath.Join(dir, "bastion-gtk")
	if out, err := exec.Command("go", "build", "-o", d.bin, "github.com/bastion-fw/bastion/cmd/bastion-gtk").CombinedOutput(); err != nil {
		t.Fatalf("go build bastion-gtk: %v\n%s", err, out)
	}
	busPath := filepath.Join(dir, "bus")
	d.bus = "unix:path=" + busPath
	startProc(t, "dbus-daemon", exec.Command("dbus-daemon", "--session", "--nofork", "--address="+d.bus), syscall.SIGTERM)
	testenv.WaitFor(t, waitTimeout, "the session bus", func() bool { _, err := os.Stat(busPath); return err == nil })
	startOpenbox(t)
	stop, err := d.svc.Serve(context.Background(), d.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return d
}

// startOpenbox runs openbox on the test's Xvfb until the test ends.
func startOpenbox(t *testing.T) {
	t.Helper()
	testenv.RequireTools(t, "openbox", "xdotool", "xprop", "xmessage")
	startProc(t, "openbox", exec.Command("openbox", "--sm-disable"), syscall.SIGTERM)
	if err := demo.WaitOpenbox(os.Getenv("DISPLAY"), waitTimeout); err != nil {
		t.Fatal(err)
	}
}

// click clicks the middle of button b with the X pointer, as a person
// does (the window manager sees the click).
func click(t *testing.T, b *gtk.Button) {
	t.Helper()
	x, y := screenPoint(t, b.ToWidget(), -1, -1)
	if out, err := exec.Command("xdotool", "mousemove", "--sync", strconv.Itoa(x), strconv.Itoa(y), "click", "1").CombinedOutput(); err != nil {
		t.Fatalf("xdotool click at %d,%d: %v %s", x, y, err, out)
	}
}

// screenPoint is where (dx, dy) from w's top left corner is on the
// screen, now; its middle when dx < 0.
func screenPoint(t *testing.T, w *gtk.Widget, dx, dy int) (x, y int) {
	t.Helper()
	onGTK(t, func() {
		top, _ := w.GetToplevel()
		win, _ := top.ToWidget().GetWindow()
		ox, oy := win.GetOrigin()
		bx, by, err := w.TranslateCoordinates(top, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if dx < 0 {
			dx, dy = w.GetAllocatedWidth()/2, w.GetAllocatedHeight()/2
		}
		x, y = ox+bx+dx, oy+by+dy
	})
	return x, y
}

// launch starts bastion-gtk as the menu entry or a shortcut would.
func (d *desktop) launch(name string, args ...string) *proc {
	d.t.Helper()
	cmd := exec.Command(d.bin, append([]string{"--ui-socket", d.sock, "--notify=false"}, args...)...)
	cmd.Env = append(os.Environ(), "DBUS_SESSION_BUS_ADDRESS="+d.bus, "NO_AT_BRIDGE=1")
	return startProc(d.t, name, cmd, syscall.SIGTERM)
}

// visibleWindows lists the X windows named name that are mapped.
func visibleWindows(name string) []string {
	out, _ := exec.Command("xdotool", "search", "--onlyvisible", "--name", name).Output()
	return strings.Fields(string(out))
}

func (d *desktop) busOwned() bool {
	conn, err := dbus.Connect(d.bus)
	if err != nil {
		return false
	}
	defer conn.Close()
	var owned bool
	err = conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, appIDFor(d.sock)).Store(&owned)
	return err == nil && owned
}

// TestSingleInstance: a second launch (the menu entry's `bastion-gtk
// --main-window`) raises the running bastion-gtk's main window and exits;
// one process, one prompt client remain. `bastion-gtk --focus-prompt`
// gives the waiting prompt the keyboard, so that Alt+A answers at once.
// The test logs how long a person's keys take from prompt to verdict.
func TestSingleInstance(t *testing.T) {
	d := newDesktop(t)
	first := d.launch("bastion-gtk (first)")
	testenv.WaitFor(t, waitTimeout, "the first launch to become the prompt client and own its application ID", func() bool {
		return d.svc.PromptClients() == 1 && d.busOwned()
	})
	if w := visibleWindows("^Bastion$"); len(w) != 0 {
		t.Fatalf("a main window %v without --main-window", w)
	}

	second := d.launch("bastion-gtk --main-window (second)", "--main-window")
	if err := second.wait(t, waitTimeout); err != nil {
		t.Fatalf("the second launch: %v\n%s", err, second.stderr.String())
	}
	testenv.WaitFor(t, waitTimeout, "the running one's main window", func() bool { return len(visibleWindows("^Bastion$")) == 1 })
	if first.exited() {
		t.Fatal("the first bastion-gtk exited")
	}
	if n, calls := d.svc.PromptClients(), len(d.svc.CallsTo("WatchPrompts")); n != 1 || calls != 1 {
		t.Errorf("%d prompt clients (%d WatchPrompts calls) after a second launch, want 1", n, calls)
	}

	// A prompt; the person presses their shortcut for --focus-prompt,
	// then Alt+A.
	shownAt := time.Now()
	id := d.svc.AddPrompt(demo.CurlPrompt(time.Now(), time.Minute))
	testenv.WaitFor(t, waitTimeout, "the prompt on screen", func() bool {
		return len(visibleWindows("^Bastion: connection prompt$")) == 1
	})
	shown := time.Since(shownAt)
	focus := d.launch("bastion-gtk --focus-prompt", "--focus-prompt")
	if err := focus.wait(t, waitTimeout); err != nil {
		t.Fatalf("--focus-prompt: %v\n%s", err, focus.stderr.String())
	}
	prompt := visibleWindows("^Bastion: connection prompt$")[0]
	testenv.WaitFor(t, waitTimeout, "the prompt to have the keyboard focus", func() bool {
		out, _ := exec.Command("xdotool", "getactivewindow").Output()
		return strings.TrimSpace(string(out)) == prompt
	})
	focused := time.Since(shownAt)
	// The buttons arm after a second (--arm-delay): a person's Alt+A
	// before then does nothing, so press until it answers. (XTEST keys
	// go to the focused window, as a person's do; xdotool key --window
	// sends synthetic events, which GTK ignores.)
	testenv.WaitFor(t, waitTimeout, "Alt+A to answer", func() bool {
		if err := exec.Command("xdotool", "key", "alt+a").Run(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(200 * time.Millisecond)
		for time.Now().Before(deadline) {
			if len(d.svc.CallsTo("AnswerPrompt")) > 0 {
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	})
	answered := time.Since(shownAt)
	req := d.svc.CallsTo("AnswerPrompt")[0].(*uiv1.AnswerPromptRequest)
	if req.GetPromptId() != id || req.GetRule().GetAction().String() != "ACTION_ALLOW" {
		t.Errorf("answer %v", req)
	}
	t.Logf("a person's keys: prompt on screen after %v, focused by the shortcut after %v, answered with Alt+A after %v (arm delay 1s)",
		shown.Round(time.Millisecond), focused.Round(time.Millisecond), answered.Round(time.Millisecond))
	if n := d.svc.PromptClients(); n != 1 {
		t.Errorf("%d prompt clients at the end, want 1", n)
	}
}

// TestRulesClickWithTwoPromptsQueued: under a window manager, a person
// clicks "Rules…" on a prompt with another one queued. The rules window
// opens, the prompt stays on screen with its queue, and both prompts are
// then answered by clicks (once, both were lost: the prompt vanished, no
// window opened, and both got the default at the deadline).
func TestRulesClickWithTwoPromptsQueued(t *testing.T) {
	needGTK(t)
	startOpenbox(t)
	// The person's browser, full screen, with the focus.
	testenv.RequireTools(t, "xmessage")
	startProc(t, "xmessage", exec.Command("xmessage", "-name", "browser", "-geometry", "1280x1000+0+0", "the browser"), syscall.SIGTERM)
	if !testenv.Poll(waitTimeout, func() bool { return len(visibleWindows("^browser$")) == 1 }) {
		// Say what X and openbox show: a window mapped while openbox
		// was still starting stayed unmapped, a child of the root, until
		// startOpenbox waited for a probe window to be managed.
		out, _ := exec.Command("sh", "-c", "for w in $(xdotool search --name '^browser$'); do xwininfo -id $w -stats | grep -E 'Window id|Map State'; xprop -id $w WM_STATE; done; pgrep -a openbox").CombinedOutput()
		t.Fatalf("timed out after %s waiting for the browser:\n%s", waitTimeout, out)
	}
	browser := visibleWindows("^browser$")[0]
	if out, err := exec.Command("xdotool", "windowactivate", "--sync", browser).CombinedOutput(); err != nil {
		t.Fatalf("activate the browser: %v %s", err, out)
	}
	e := newEnv(t, envOpt{realTime: true})
	first := e.svc.AddPrompt(demo.CurlPrompt(time.Now(), time.Minute))
	second := e.svc.AddPrompt(demo.SSHv6Prompt(time.Now(), time.Minute))
	e.promptShown(first)
	testenv.WaitFor(t, waitTimeout, "the prompt mapped", func() bool {
		return len(visibleWindows("^Bastion: connection prompt$")) == 1
	})
	click(t, e.a.prompt.rules)
	testenv.WaitFor(t, waitTimeout, "the rules window mapped", func() bool { return len(visibleWindows("^Bastion$")) == 1 })
	// Both on top of the browser, not opened (or pushed) behind it.
	testenv.WaitFor(t, waitTimeout, "the rules window and the prompt above the browser", func() bool {
		s := stacking()
		return above(s, visibleWindows("^Bastion$"), browser) && above(s, visibleWindows("^Bastion: connection prompt$"), browser)
	})
	if w := visibleWindows("^Bastion: connection prompt$"); len(w) != 1 {
		t.Fatalf("the prompt is gone after Rules… (%v)", w)
	}
	onGTK(t, func() {
		if p := e.a.prompt; p.shownID != first || labelText(p.more) != "1 more waiting" {
			t.Errorf("prompt shows %s (%q), want %s with 1 more waiting", p.shownID, labelText(p.more), first)
		}
	})
	// The prompt is still above the rules window: a click reaches it.
	click(t, e.a.prompt.allow)
	e.promptShown(second)
	click(t, e.a.prompt.deny)
	e.promptHidden()
	if a := answers(e.svc); len(a) != 2 || a[0].GetPromptId() != first || a[1].GetPromptId() != second {
		t.Errorf("answers %v, want %s then %s", a, first, second)
	}
}

// stacking is the window manager's stacking order, bottom first.
func stacking() []string {
	out, _ := exec.Command("xprop", "-root", "_NET_CLIENT_LIST_STACKING").Output()
	_, list, _ := strings.Cut(string(out), "#")
	var ids []string
	for _, f := range strings.Split(list, ",") {
		if v, err := strconv.ParseUint(strings.TrimSpace(f), 0, 64); err == nil {
			ids = append(ids, strconv.FormatUint(v, 10))
		}
	}
	return ids
}

// above reports whether the one window in ws stacks above window w.
func above(stack, ws []string, w string) bool {
	if len(ws) != 1 {
		return false
	}
	i, j := slices.Index(stack, ws[0]), slices.Index(stack, w)
	return i >= 0 && j >= 0 && i > j
}

func TestAppIDFor(t *testing.T) {
	if got := appIDFor(DefaultSocket()); got != appID {
		t.Errorf("the user's own socket: %q, want %q", got, appID)
	}
	a, b := appIDFor("/tmp/x/ui.sock"), appIDFor("/tmp/y/ui.sock")
	if a == appID || a == b || !glib.ApplicationIDIsValid(a) {
		t.Errorf("other sockets: %q and %q, want two valid IDs apart from %q", a, b, appID)
	}
}
