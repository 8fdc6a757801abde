package gtkclient

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/bastion-fw/bastion/gtkclient/internal/demo"
	"github.com/bastion-fw/bastion/internal/testenv"
	"github.com/bastion-fw/bastion/internal/testenv/fakeui"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// startSessionBus starts a private dbus-daemon for the test and returns
// its address.
func startSessionBus(t *testing.T) string {
	t.Helper()
	testenv.RequireTools(t, "dbus-daemon")
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "bgtk-bus")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd := exec.Command(bin, "--session", "--nofork", "--nopidfile", "--print-address=1",
		"--address=unix:path="+filepath.Join(dir, "bus"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dbus-daemon: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		addr <- strings.TrimSpace(line)
	}()
	select {
	case a := <-addr:
		if a == "" {
			t.Fatal("dbus-daemon printed no address")
		}
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("dbus-daemon did not start within 10s")
	}
	return ""
}

type notifyCall struct {
	app, icon, summary, body string
	actions                  []string
	hints                    map[string]dbus.Variant
}

// fakeNotifications is an org.freedesktop.Notifications service.
type fakeNotifications struct {
	calls chan notifyCall
}

func (f *fakeNotifications) Notify(app string, _ uint32, icon, summary, body string, actions []string,
	hints map[string]dbus.Variant, _ int32) (uint32, *dbus.Error) {
	f.calls <- notifyCall{app, icon, summary, body, actions, hints}
	return 7, nil
}

func serveNotifications(t *testing.T, addr string) (*fakeNotifications, *dbus.Conn) {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f := &fakeNotifications{calls: make(chan notifyCall, 8)}
	if err := conn.Export(f, notifyPath, notifyIface); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName(notifyName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own %s: %v %v", notifyName, reply, err)
	}
	return f, conn
}

func nextNotification(t *testing.T, f *fakeNotifications) notifyCall {
	t.Helper()
	select {
	case c := <-f.calls:
		return c
	case <-time.After(15 * time.Second):
		t.Fatal("no notification within 15s")
	}
	return notifyCall{}
}

// TestNotifyDeniedWhileNoPromptClient: connections the default denied
// while no prompt client ran are announced on the session bus once each,
// and the notification's action opens the decide-later list. It runs
// against a private dbus-daemon and a fake notification service.
func TestNotifyDeniedWhileNoPromptClient(t *testing.T) {
	needGTK(t)
	addr := startSessionBus(t)
	fake, conn := serveNotifications(t, addr)
	var e *env
	n, err := newDBusNotifier(context.Background(), addr, func(action string) { e.a.notificationAction(action) })
	if err != nil {
		t.Fatal(err)
	}
	// The entries exist before the client starts, as after a login.
	e = newEnv(t, envOpt{notifier: n, setup: func(s *fakeui.Service) { s.AddDecideLater(demo.SampleDecideLater(testNow)...) }})
	got := nextNotification(t, fake)
	if got.summary != "Bastion blocked 2 connections" || got.app != "Bastion" {
		t.Errorf("notification %q from %q", got.summary, got.app)
	}
	for _, want := range []string{"syncthing → 192.168.1.255:21027", "ssh → [2001:db8:4006:812::200e]:2222"} {
		if !strings.Contains(got.body, want) {
			t.Errorf("body %q does not name %q", got.body, want)
		}
	}
	if len(got.actions) != 4 || got.actions[0] != "default" {
		t.Errorf("actions %q", got.actions)
	}
	if u, ok := got.hints["urgency"].Value().(byte); !ok || u != 1 {
		t.Errorf("urgency hint %v", got.hints["urgency"])
	}

	// Clicking it opens the decide-later list (once the client knows the
	// notification's ID, which the fake sent back).
	waitGTK(t, "the notification's ID", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.ours[7]
	})
	if err := conn.Emit(notifyPath, notifyIface+".ActionInvoked", uint32(7), "default"); err != nil {
		t.Fatal(err)
	}
	waitGTK(t, "the decide-later page", func() bool {
		return e.a.main != nil && e.a.main.stack.GetVisibleChildName() == "later"
	})

	// A new entry: one notification about it alone, with a host name
	// that must not be read as markup.
	p := demo.CurlPrompt(testNow, 0)
	e.svc.AddDecideLater(&uiv1.DecideLaterEntry{Time: p.FirstSeen, Process: p.Process, Flow: p.Flow,
		Host: "<b>evil</b>.example", Applied: rulesv1.Action_ACTION_DENY})
	got = nextNotification(t, fake)
	if got.summary != "Bastion blocked curl" {
		t.Errorf("second notification %q", got.summary)
	}
	if want := "curl tried to connect to &lt;b&gt;evil&lt;/b&gt;.example:443"; !strings.Contains(got.body, want) {
		t.Errorf("body %q, want it to contain %q", got.body, want)
	}
	select {
	case extra := <-fake.calls:
		t.Errorf("notified again: %q", extra.summary)
	default:
	}
}
