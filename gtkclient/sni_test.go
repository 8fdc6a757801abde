package gtkclient

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/bastion-fw/bastion/gtkclient/internal/demo"
	"github.com/bastion-fw/bastion/internal/testenv"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// fakeWatcher is a panel's org.kde.StatusNotifierWatcher.
type fakeWatcher struct {
	mu    sync.Mutex
	items []string // "sender path"
}

func (w *fakeWatcher) RegisterStatusNotifierItem(sender dbus.Sender, path string) *dbus.Error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.items = append(w.items, string(sender)+" "+path)
	return nil
}

func (w *fakeWatcher) registered() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.items...)
}

// TestStatusNotifierItem: with a StatusNotifierWatcher on the session bus
// the status icon is a StatusNotifierItem; a panel reads its tooltip and
// menu, and a click on "Pause protection for 5 minutes" pauses, which the
// tooltip, icon and menu then show.
func TestStatusNotifierItem(t *testing.T) {
	needGTK(t)
	testenv.RequireTools(t, "dbus-daemon")
	dir := testenv.TempDir(t)
	bus := "unix:path=" + filepath.Join(dir, "bus")
	startProc(t, "dbus-daemon", exec.Command("dbus-daemon", "--session", "--nofork", "--address="+bus), syscall.SIGTERM)
	testenv.WaitFor(t, waitTimeout, "the session bus", func() bool { _, err := os.Stat(filepath.Join(dir, "bus")); return err == nil })
	panel, err := dbus.Connect(bus)
	if err != nil {
		t.Fatal(err)
	}
	defer panel.Close()
	w := &fakeWatcher{}
	if err := panel.Export(w, sniWatcherPath, sniWatcherIface); err != nil {
		t.Fatal(err)
	}
	if reply, err := panel.RequestName(sniWatcherName, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own %s: %v %v", sniWatcherName, reply, err)
	}
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", bus)

	e := newEnv(t, envOpt{})
	waitGTK(t, "connected", func() bool { return e.a.up })
	if _, ok := e.a.tray.(*sni); !ok {
		t.Fatalf("presence %T, want a StatusNotifierItem", e.a.tray)
	}
	regs := w.registered()
	if len(regs) != 1 || !strings.HasSuffix(regs[0], " /StatusNotifierItem") {
		t.Fatalf("registered %v", regs)
	}
	item := panel.Object(strings.Fields(regs[0])[0], sniPath)
	menu := panel.Object(strings.Fields(regs[0])[0], menuPath)
	tooltip := func() string {
		v, err := item.GetProperty(sniIface + ".ToolTip")
		if err != nil {
			t.Fatal(err)
		}
		var tip sniToolTip
		if err := dbus.Store([]any{v.Value()}, &tip); err != nil {
			t.Fatal(err)
		}
		return tip.Title
	}
	labels := func() map[string]int32 {
		var rev uint32
		var root menuNode
		if err := menu.Call(menuIface+".GetLayout", 0, int32(0), int32(-1), []string{}).Store(&rev, &root); err != nil {
			t.Fatal(err)
		}
		out := map[string]int32{}
		for _, c := range root.Children {
			var n menuNode
			if err := dbus.Store([]any{c.Value()}, &n); err != nil {
				t.Fatal(err)
			}
			if n.Props["visible"].Value() == true {
				out[n.Props["label"].Value().(string)] = n.ID
			}
		}
		return out
	}
	if got := tooltip(); got != "Bastion: protecting" {
		t.Errorf("tooltip %q", got)
	}
	m := labels()
	for _, want := range []string{"Open Bastion", "Pause protection for 5 minutes", "Pause protection for 1 hour", "Quit"} {
		if _, ok := m[want]; !ok {
			t.Errorf("menu %v lacks %q", m, want)
		}
	}
	if err := menu.Call(menuIface+".Event", 0, m["Pause protection for 5 minutes"], "clicked", dbus.MakeVariant(""), uint32(0)).Err; err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, waitTimeout, "the pause request", func() bool { return len(e.svc.CallsTo("PauseProtection")) == 1 })
	if d := e.svc.CallsTo("PauseProtection")[0].(*uiv1.PauseProtectionRequest).GetDuration().AsDuration(); d != 5*time.Minute {
		t.Errorf("paused for %s", d)
	}
	testenv.WaitFor(t, waitTimeout, "the tooltip to say paused", func() bool { return tooltip() == "Bastion: protection paused until 15:14" })
	if v, err := item.GetProperty(sniIface + ".IconName"); err != nil || v.Value() != "security-low" {
		t.Errorf("icon %v %v while paused", v, err)
	}
	if _, ok := labels()["Resume protection (paused until 15:14)"]; !ok {
		t.Errorf("menu %v has no Resume entry while paused", labels())
	}
	// A prompt: the item asks for attention, and Activate (a left click)
	// gives the prompt the keyboard.
	id := e.svc.AddPrompt(demo.CurlPrompt(testNow, time.Minute))
	e.promptShown(id)
	testenv.WaitFor(t, waitTimeout, "NeedsAttention", func() bool {
		v, err := item.GetProperty(sniIface + ".Status")
		return err == nil && v.Value() == "NeedsAttention"
	})
	if err := item.Call(sniIface+".Activate", 0, int32(0), int32(0)).Err; err != nil {
		t.Fatal(err)
	}
	waitGTK(t, "the prompt to take the focus", func() bool { return e.a.prompt.win.GetAcceptFocus() })
}
