package gtkclient

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"

	"github.com/bastion-fw/bastion/gtkclient/internal/demo"
	"github.com/bastion-fw/bastion/internal/desktopentry"
	"github.com/bastion-fw/bastion/internal/procinfo"
	"github.com/bastion-fw/bastion/internal/testenv"
	"github.com/bastion-fw/bastion/internal/testenv/fakeui"
)

// gtkUnavailable says why the GTK tests skip; set once by TestMain.
var gtkUnavailable string

// TestMain runs the tests in a goroutine while the main goroutine, locked
// to the main thread, runs the GTK main loop on a private Xvfb: tests hand
// work to GTK with glib.IdleAdd, like the client's own goroutines.
func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	runtime.LockOSThread()
	if os.Getenv(e2eChildEnv) != "" {
		// Run as the user's prompt client by TestE2EPromptClickAllowsCurl.
		return e2eChildMain()
	}
	if testing.Short() {
		gtkUnavailable = "-short: the GTK tests need Xvfb"
		return m.Run()
	}
	x, err := demo.StartXvfb("1280x1024x24")
	if err != nil {
		if testenv.MustRun() {
			fmt.Fprintf(os.Stderr, "gtkclient tests: %v\n(as root or with BASTION_E2E=1 the GTK tests must run: deploy/install-deps.sh test installs Xvfb)\n", err)
			return 1
		}
		gtkUnavailable = fmt.Sprintf("%v; install xvfb (deploy/install-deps.sh test) to run the GTK tests", err)
		return m.Run()
	}
	defer x.Stop()
	os.Setenv("DISPLAY", x.Display)
	os.Setenv("GDK_BACKEND", "x11")
	os.Setenv("NO_AT_BRIDGE", "1")
	// GTK's own settings (the file chooser's, saved as a dialog closes)
	// stay in the test process: they must not land in the dconf
	// database of whoever runs the tests, and where dconf has no session
	// bus, each save tried to start dbus-launch and printed a warning.
	os.Setenv("GSETTINGS_BACKEND", "memory")
	os.Unsetenv("WAYLAND_DISPLAY")
	finalizeOnGTKThread()
	if err := gtk.InitCheck(nil); err != nil {
		fmt.Fprintf(os.Stderr, "gtkclient tests: init gtk on %s: %v\n", x.Display, err)
		return 1
	}
	installCSS()
	code := make(chan int, 1)
	go func() {
		code <- m.Run()
		glib.IdleAdd(gtk.MainQuit)
	}()
	gtk.Main()
	return <-code
}

func needGTK(t testing.TB) {
	t.Helper()
	if gtkUnavailable != "" {
		t.Skip(gtkUnavailable)
	}
}

// onGTK runs f on the GTK thread and waits for it.
func onGTK(t testing.TB, f func()) {
	t.Helper()
	done := make(chan struct{})
	glib.IdleAdd(func() {
		defer close(done)
		f()
	})
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the GTK main loop did not run the test's function within 20s")
	}
}

// waitTimeout bounds every wait of the GTK tests.
const waitTimeout = 15 * time.Second

// waitGTK waits until cond, evaluated on the GTK thread, holds.
func waitGTK(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, waitTimeout, what, func() bool {
		var ok bool
		onGTK(t, func() { ok = cond() })
		return ok
	})
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is one bastion-gtk against one fake rules service on a Unix socket.
type env struct {
	t     testing.TB
	svc   *fakeui.Service
	sock  string
	stop  func()
	a     *app
	clock *fakeClock
}

type envOpt struct {
	cfg      func(*Config)
	notifier notifier
	realTime bool                  // use the wall clock instead of a fake one
	setup    func(*fakeui.Service) // before the client starts
}

var testNow = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func newEnv(t testing.TB, o envOpt) *env {
	t.Helper()
	needGTK(t)
	// A short folder: Unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "bgtk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{t: t, svc: fakeui.New(), sock: filepath.Join(dir, "ui.sock"), clock: &fakeClock{t: testNow}}
	if o.setup != nil {
		o.setup(e.svc)
	}
	e.serve()
	cfg := Config{UISocket: e.sock, ArmDelay: 0}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	svc, err := procinfo.ParseServices(strings.NewReader("https 443/tcp\nssh 22/tcp\ndomain 53/udp\n"))
	if err != nil {
		t.Fatal(err)
	}
	apps := desktopentry.New()
	apps.AddDir(fstest.MapFS{"firefox-esr.desktop": {Data: []byte(
		"[Desktop Entry]\nType=Application\nName=Firefox ESR\nIcon=firefox-esr\nExec=/usr/lib/firefox-esr/firefox-esr %u\n")}})
	opts := appOptions{
		timing: &timing{backoffMin: 20 * time.Millisecond, backoffMax: 100 * time.Millisecond,
			statusEvery: 30 * time.Millisecond, callTimeout: 5 * time.Second},
		procFS: fstest.MapFS{
			"48170/exe":  {Data: []byte("/usr/bin/bash"), Mode: fs.ModeSymlink},
			"48170/comm": {Data: []byte("bash\n")},
		},
		services: svc,
		apps:     apps,
		userName: func(uid uint32) (string, error) {
			if uid == 1000 {
				return "alice", nil
			}
			return "", fmt.Errorf("no user %d", uid)
		},
		notifier: o.notifier,
		noQuit:   true,
	}
	if !o.realTime {
		opts.now = e.clock.Now
		e.svc.SetClock(e.clock.Now)
	}
	onGTK(t, func() {
		a, err := newApp(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), opts)
		if err != nil {
			t.Fatal(err)
		}
		a.loc = time.UTC
		e.a = a
		a.start()
	})
	t.Cleanup(func() {
		onGTK(t, e.a.close)
		if e.stop != nil {
			e.stop()
		}
	})
	return e
}

// serve (re)starts serving the service on the socket.
func (e *env) serve() {
	e.t.Helper()
	os.Remove(e.sock)
	stop, err := e.svc.Serve(context.Background(), e.sock)
	if err != nil {
		e.t.Fatal(err)
	}
	e.stop = stop
}

// shutdown stops serving, as when the rules service exits.
func (e *env) shutdown() {
	e.stop()
	e.stop = nil
}

// promptShown waits until the prompt window shows prompt id.
func (e *env) promptShown(id string) {
	e.t.Helper()
	waitGTK(e.t, "prompt "+id+" on screen", func() bool {
		return e.a.prompt.win.GetVisible() && e.a.prompt.shownID == id
	})
}

func (e *env) promptHidden() {
	e.t.Helper()
	waitGTK(e.t, "the prompt window to hide", func() bool { return !e.a.prompt.win.GetVisible() })
}

func labelText(l *gtk.Label) string {
	s, _ := l.GetText()
	return s
}
