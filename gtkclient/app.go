package gtkclient

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/gotk3/gotk3/gdk"
	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"

	"github.com/bastion-fw/bastion/internal/inert"
	"github.com/bastion-fw/bastion/internal/procinfo"
	"github.com/bastion-fw/bastion/internal/rules"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Run runs bastion-gtk until ctx ends or the user quits. It must be called
// from the program's main goroutine: it locks it to its OS thread, which
// becomes the GTK main thread.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	return run(ctx, cfg, log, appOptions{})
}

// appID is bastion-gtk's application ID on the session bus: a second
// launch finds the running one under it (deploy/bastion-gtk.desktop).
const appID = "org.bastion.Gtk"

// appIDFor is the application ID of the bastion-gtk of a rules service's
// socket: appID for the user's own (the default), another one for any
// other socket (deploy/run.sh, tests), so that a bastion-gtk for another
// rules service never hands its prompts over to the session's.
func appIDFor(socket string) string {
	if socket == DefaultSocket() {
		return appID
	}
	sum := sha256.Sum256([]byte(socket))
	return appID + ".Socket" + hex.EncodeToString(sum[:6])
}

// run is Run with options; the end-to-end test runs the real program
// through it, with a hook to drive the widgets.
//
// bastion-gtk is a GtkApplication: the first launch becomes the user's
// prompt client; a second launch (the menu entry, bastion-gtk
// --main-window or --focus-prompt) hands its request to the running one
// over the session bus and exits, so there is never a second prompt
// client.
func run(ctx context.Context, cfg Config, log *slog.Logger, o appOptions) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	flags := glib.APPLICATION_FLAGS_NONE
	bus := os.Getenv("DBUS_SESSION_BUS_ADDRESS") != ""
	id := appIDFor(cfg.UISocket)
	if bus && !o.nonUnique {
		handed, err := handOff(ctx, id, remoteAction(cfg))
		if handed {
			if err != nil {
				return err
			}
			log.Info("handed over to the running bastion-gtk", "action", remoteAction(cfg))
			return nil
		}
	}
	if !bus || o.nonUnique || cfg.NoPrompts {
		// No session bus to be unique on (or a test): run alone. A
		// window without prompts must not be the one a later launch,
		// e.g. the autostart prompt client, hands over to.
		flags = glib.APPLICATION_NON_UNIQUE
	}
	// WM_CLASS and the Wayland app ID derive from the program name; it
	// matches deploy/bastion-gtk.desktop.
	glib.SetPrgname("bastion-gtk")
	glib.SetApplicationName("Bastion")
	// X11 first, so that on a Wayland session the prompt runs under
	// XWayland, where keep-above, urgency and no-focus-on-map are honoured
	// (Wayland has no protocol for them); native Wayland only as a fallback.
	if os.Getenv("GDK_BACKEND") == "" {
		gdk.SetAllowedBackends("x11,*")
	}
	finalizeOnGTKThread()
	if err := gtk.InitCheck(nil); err != nil {
		return fmt.Errorf("start gtk (is DISPLAY or WAYLAND_DISPLAY set?): %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gapp, err := gtk.ApplicationNew(id, flags)
	if err != nil {
		return fmt.Errorf("create the gtk application: %w", err)
	}
	var (
		a        *app
		startErr error
	)
	gapp.Connect("activate", func() {
		if a != nil {
			// Another launch raced us to the bus and lost: it asks to be
			// shown, like --main-window.
			a.showMain("programs")
			return
		}
		a, startErr = newApp(ctx, cfg, log, o)
		if startErr != nil {
			gapp.Quit()
			return
		}
		a.gapp = gapp
		a.addActions(gapp)
		// The prompt window is hidden while nothing waits: hold the
		// application so it runs without a window.
		gapp.Hold()
		a.start()
		if o.started != nil {
			o.started(a)
		}
	})
	go func() {
		<-ctx.Done()
		glib.IdleAdd(gapp.Quit)
	}()
	gapp.Run([]string{os.Args[0]}) // bastion-gtk's own flags are parsed already
	if a != nil {
		a.close()
	}
	if startErr != nil {
		return startErr
	}
	if a == nil && gapp.GetIsRemote() {
		log.Info("handed over to the running bastion-gtk")
	}
	return nil
}

// remoteAction is what a second launch asks the running bastion-gtk for.
func remoteAction(cfg Config) string {
	if cfg.FocusPrompt {
		return actionFocusPrompt
	}
	return actionMainWindow
}

// The application's actions, callable from other processes over the
// session bus (org.gtk.Actions on /org/bastion/Gtk), e.g. by a second
// launch or a desktop shortcut.
const (
	actionMainWindow  = "main-window"
	actionFocusPrompt = "focus-prompt"
	actionPause5m     = "pause-5m"
	actionPause1h     = "pause-1h"
	actionResume      = "resume"
	actionQuit        = "quit"
)

// addActions adds the actions to the application; GTK thread.
func (a *app) addActions(gapp *gtk.Application) {
	for name, f := range map[string]func(){
		actionMainWindow:  func() { a.showMain("programs") },
		actionFocusPrompt: a.focusPrompt,
		actionPause5m:     func() { a.pause(5 * time.Minute) },
		actionPause1h:     func() { a.pause(time.Hour) },
		actionResume:      a.resume,
		actionQuit:        a.quit,
	} {
		act := glib.SimpleActionNew(name, nil)
		act.Connect("activate", func() { f() })
		gapp.AddAction(act)
	}
}

// handOff asks the bastion-gtk running on the session bus, if any, to
// run action. handed reports whether one runs.
func handOff(ctx context.Context, id, action string) (handed bool, err error) {
	conn, err := dbus.ConnectSessionBus(dbus.WithContext(ctx))
	if err != nil {
		return false, nil // no bus: nobody to hand over to
	}
	defer conn.Close()
	var owned bool
	if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, id).Store(&owned); err != nil || !owned {
		return false, nil
	}
	obj := conn.Object(id, dbus.ObjectPath("/"+strings.ReplaceAll(id, ".", "/")))
	call := obj.CallWithContext(ctx, "org.gtk.Actions.Activate", 0, action, []dbus.Variant{}, map[string]dbus.Variant{})
	if call.Err != nil {
		return true, fmt.Errorf("the running bastion-gtk did not take the request %q: %w", action, call.Err)
	}
	return true, nil
}

// quit ends bastion-gtk; GTK thread.
func (a *app) quit() {
	if a.gapp != nil {
		a.gapp.Quit()
		return
	}
	gtk.MainQuit()
}

// focusPrompt gives the prompt window the keyboard focus, so that its
// shortcuts work without a click; without a prompt it opens the main
// window. GTK thread.
func (a *app) focusPrompt() {
	if a.prompt == nil || a.prompt.shown == nil {
		a.showMain("programs")
		return
	}
	a.prompt.focus()
}

// appOptions are what tests and the screenshot tool change.
type appOptions struct {
	now      func() time.Time // the clock prompts and rules are read with
	timing   *timing
	procFS   fs.FS
	services *procinfo.Services
	apps     *appIndex
	userName func(uid uint32) (string, error)
	notifier notifier // nil: the session bus's, when cfg.Notify
	// quitOnClose quits the GTK main loop when the main window closes in
	// --no-prompts mode (tests leave the loop running).
	noQuit bool
	// started is called on the GTK thread once the app runs (tests).
	started func(*app)
	// nonUnique runs without looking for, or becoming, the session's one
	// bastion-gtk (tests).
	nonUnique bool
}

// notifier sends desktop notifications.
type notifier interface {
	notify(ctx context.Context, n notification) (uint32, error)
	Close() error
}

// app is one running bastion-gtk. Fields below the mutex comment are only
// used on the GTK thread.
type app struct {
	ctx    context.Context
	cancel context.CancelFunc
	gapp   *gtk.Application // nil in tests that run the GTK loop themselves
	cfg    Config
	log    *slog.Logger
	timing timing
	now    func() time.Time
	loc    *time.Location
	ui     uiv1.UIServiceClient
	closer func() error
	notif  notifier

	procFS   fs.FS
	services *procinfo.Services
	apps     *appIndex
	userName func(uid uint32) (string, error)
	noQuit   bool

	later laterWatch // used by the connection goroutine

	// GTK thread only.
	up       bool
	upErr    error
	retryAt  time.Time
	status   *uiv1.GetStatusResponse
	queue    *promptQueue
	history  []*uiv1.HistoryEntry
	prompt   *promptWindow
	main     *mainWindow
	tray     presence
	onChange func() // test hook: called on the GTK thread after every UI update
}

func newApp(ctx context.Context, cfg Config, log *slog.Logger, o appOptions) (*app, error) {
	cc, err := dial(cfg.UISocket)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	a := &app{
		ctx: ctx, cancel: cancel, cfg: cfg, log: log.With("component", "gtk"),
		timing: defaultTiming(), now: rules.Now, loc: time.Local,
		ui: uiv1.NewUIServiceClient(cc), closer: cc.Close,
		procFS: os.DirFS("/proc"), userName: procinfo.UserName, noQuit: o.noQuit,
		queue: newPromptQueue(),
	}
	if o.now != nil {
		a.now = o.now
	}
	if o.timing != nil {
		a.timing = *o.timing
	}
	if o.procFS != nil {
		a.procFS = o.procFS
	}
	if o.userName != nil {
		a.userName = o.userName
	}
	a.services = o.services
	if a.services == nil {
		a.services = procinfo.LoadServices("/etc/services")
	}
	a.apps = o.apps
	if a.apps == nil {
		a.apps = loadAppIndex()
	}
	a.notif = o.notifier
	if a.notif == nil && cfg.Notify {
		n, err := newDBusNotifier(ctx, "", a.notificationAction)
		if err != nil {
			// A desktop without a notification service still gets prompts.
			a.log.Warn("desktop notifications are off", "err", err)
		} else {
			a.notif = n
		}
	}
	installCSS()
	return a, nil
}

// start shows the first windows and starts the connection; GTK thread.
func (a *app) start() {
	if !a.cfg.NoPrompts {
		a.prompt = newPromptWindow(a)
	}
	if a.cfg.MainWindow {
		a.showMain("programs")
	}
	if !a.cfg.NoTray {
		a.tray = newPresence(a)
	}
	go a.connect(a.ctx)
}

// close stops the connection and destroys the windows; GTK thread.
func (a *app) close() {
	a.cancel()
	if a.prompt != nil {
		a.prompt.win.Destroy()
	}
	if a.main != nil {
		a.main.win.Destroy()
	}
	if a.tray != nil {
		a.tray.close()
	}
	if a.notif != nil {
		a.notif.Close()
	}
	a.closer()
}

// post runs f on the GTK thread.
func (a *app) post(f func()) {
	glib.IdleAdd(func() {
		if a.ctx.Err() != nil {
			return // the windows may be gone
		}
		f()
		if a.onChange != nil {
			a.onChange()
		}
	})
}

func (a *app) showMain(page string) {
	if a.main == nil {
		a.main = newMainWindow(a)
	}
	a.main.present(page)
}

// mainClosed is called when the user closes the main window.
func (a *app) mainClosed() {
	a.main = nil
	if a.cfg.NoPrompts && !a.noQuit {
		a.quit()
	}
}

func (a *app) connected(st *uiv1.GetStatusResponse) {
	a.up, a.upErr, a.status = true, nil, st
	a.protectionChanged()
	a.log.Info("connected to the rules service", "socket", a.cfg.UISocket, "agent", st.GetAgentConnected())
	if a.main != nil {
		a.main.statusChanged()
		a.main.refreshRules()
		a.main.refreshLater()
		a.main.refreshConnections()
		a.main.progs.refresh()
	}
}

func (a *app) statusUpdate(st *uiv1.GetStatusResponse) {
	old := a.status
	a.status = st
	a.protectionChanged()
	if a.main == nil {
		return
	}
	a.main.statusChanged()
	if old == nil || old.GetRules() != st.GetRules() {
		a.main.refreshRules()
	}
	if old == nil || old.GetDecideLater() != st.GetDecideLater() {
		a.main.refreshLater()
	}
}

func (a *app) disconnected(err error, retry time.Time) {
	a.up, a.upErr, a.retryAt = false, err, retry
	// The stream that brought the prompts is gone, so they cannot be
	// answered from here; the service sends the ones still waiting again
	// when the client reconnects.
	a.queue.clear()
	if a.prompt != nil {
		a.prompt.update()
	}
	a.protectionChanged()
	if a.main != nil {
		a.main.statusChanged()
	}
}

func (a *app) promptEvent(ev *uiv1.PromptEvent) {
	a.queue.apply(ev)
	if a.prompt != nil {
		a.prompt.update()
	}
	if a.tray != nil {
		a.tray.update()
	}
}

// historyCap bounds the decisions kept in memory.
const historyCap = 2000

func (a *app) historyReset() {
	a.history = a.history[:0]
	if a.main != nil {
		a.main.historyReset()
	}
}

func (a *app) historyEntry(e *uiv1.HistoryEntry) {
	if len(a.history) >= historyCap {
		a.history = append(a.history[:0], a.history[len(a.history)-historyCap/2:]...)
		if a.main != nil {
			a.main.historyReset()
		}
	}
	a.history = append(a.history, e)
	if a.main != nil {
		a.main.historyAdded(e)
	}
}

// laterWatch remembers which decide-later entries were notified about.
type laterWatch struct {
	mu    sync.Mutex
	count int // the status's decide_later count last seen, -1 before
	seen  map[string]bool
	// puttingOff counts the user's "Decide later" calls on their way:
	// their entries are not news, but their IDs are known only when the
	// calls return, so the check waits for them.
	puttingOff int
}

// putOffStarted and putOffDone bracket a "Decide later" call; done marks
// the entries it made as seen.
func (w *laterWatch) putOffStarted() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.puttingOff++
}

func (w *laterWatch) putOffDone(ids ...string) {
	w.mu.Lock()
	w.puttingOff--
	w.mu.Unlock()
	w.markSeen(ids...)
}

// markSeen records decide-later entries the user made (by putting a
// prompt off), which need no notification.
func (w *laterWatch) markSeen(ids ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen == nil {
		w.seen, w.count = map[string]bool{}, -1
	}
	for _, id := range ids {
		w.seen[id] = true
	}
}

// checkDecideLater notifies about connections the default denied while
// no prompt client was connected: the entries of the decide-later list
// not seen before. It runs on the connection goroutine.
func (a *app) checkDecideLater(ctx context.Context, st *uiv1.GetStatusResponse) {
	w := &a.later
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen == nil {
		w.seen, w.count = map[string]bool{}, -1
	}
	if int(st.GetDecideLater()) == w.count || w.puttingOff > 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, a.timing.callTimeout)
	resp, err := a.ui.ListDecideLater(cctx, &uiv1.ListDecideLaterRequest{})
	cancel()
	if err != nil {
		a.log.Warn("list decide-later entries", "err", err)
		return
	}
	w.count = int(st.GetDecideLater())
	var fresh []*uiv1.DecideLaterEntry
	for _, e := range resp.GetEntries() {
		if w.seen[e.GetId()] {
			continue
		}
		w.seen[e.GetId()] = true
		if e.GetApplied() != rulesv1.Action_ACTION_ALLOW {
			fresh = append(fresh, e)
		}
	}
	if len(fresh) == 0 || a.notif == nil {
		return
	}
	n := deniedNotification(fresh)
	if _, err := a.notif.notify(ctx, n); err != nil {
		a.log.Warn("notify about denied connections", "err", err)
	}
}

// deniedNotification summarises connections denied by the default.
func deniedNotification(es []*uiv1.DecideLaterEntry) notification {
	n := notification{Urgency: 1, Actions: []string{"default", "Review", "review", "Review"}}
	if len(es) == 1 {
		e := es[0]
		n.Summary = "Bastion blocked " + inert.String(exeName(e.GetProcess()))
		n.Body = inert.Markup(fmt.Sprintf("%s tried to connect to %s while no prompt was open; the default (%s) applied.",
			exeName(e.GetProcess()), target(e.GetFlow(), e.GetHost()), actionName(e.GetApplied())))
		return n
	}
	n.Summary = fmt.Sprintf("Bastion blocked %d connections", len(es))
	var lines []string
	for i, e := range es {
		if i == 4 {
			lines = append(lines, fmt.Sprintf("and %d more", len(es)-4))
			break
		}
		lines = append(lines, inert.Markup(exeName(e.GetProcess())+" → "+target(e.GetFlow(), e.GetHost())))
	}
	// The body may be read as markup (a host name like "<b>" must show as
	// such) and the summary as plain text: inert.Markup and inert.String.
	n.Body = "While no prompt was open, the default denied:\n" + strings.Join(lines, "\n")
	return n
}

// notificationAction is called from the D-Bus goroutine when the user
// clicks a notification of ours.
func (a *app) notificationAction(string) {
	a.post(func() { a.showMain("later") })
}

// finalizeOnGTKThread makes gotk3 drop its references to GTK objects on
// the GTK main loop. By default it drops them in the Go finalizer's
// goroutine: the last reference to a widget dropped there destroys the
// widget, its style and its CSS nodes on another thread while the main
// loop uses them, and GTK crashes now and then (seen as a SIGSEGV in
// gtk_tree_view_column_set_sort_column_id after a Gtk-CRITICAL in
// _gtk_css_rgba_value_get_rgba). gotk3 offers only this package variable.
func finalizeOnGTKThread() {
	glib.FinalizerStrategy = func(f glib.Finalizer) {
		glib.IdleAdd(func() { f() })
	}
}
