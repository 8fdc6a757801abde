package gtkclient

import (
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/gtkclient/internal/demo"
	"github.com/bastion-fw/bastion/internal/testenv"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// trayItem returns the status icon's menu entry id as the app has it now.
func trayEntry(t *testing.T, a *app, id string) trayItem {
	t.Helper()
	for _, it := range a.trayItems() {
		if it.id == id {
			return it
		}
	}
	t.Fatalf("no menu entry %q", id)
	return trayItem{}
}

// TestTrayPauseProtection: "Pause protection for 5 minutes" in the status
// icon's menu pauses through the rules service; the icon, its tooltip,
// its menu and the main window say "paused until 15:14" with a way to
// resume; at the end protection shows as on again by itself.
func TestTrayPauseProtection(t *testing.T) {
	e := newEnv(t, envOpt{})
	waitGTK(t, "connected", func() bool { return e.a.up })
	icon, ok := e.a.tray.(*statusIcon)
	if !ok {
		t.Fatalf("presence %T, want the GtkStatusIcon fallback (no StatusNotifierWatcher here)", e.a.tray)
	}
	tooltip := func() string {
		v, _ := icon.icon.GetProperty("tooltip-text")
		s, _ := v.(string)
		return s
	}
	onGTK(t, func() {
		if got := tooltip(); got != "Bastion: protecting" {
			t.Errorf("tooltip %q", got)
		}
		if trayEntry(t, e.a, trayResume).visible {
			t.Error("Resume offered while protecting")
		}
		icon.items[trayPause5].Activate()
	})
	testenv.WaitFor(t, waitTimeout, "the pause request", func() bool { return len(e.svc.CallsTo("PauseProtection")) == 1 })
	if d := e.svc.CallsTo("PauseProtection")[0].(*uiv1.PauseProtectionRequest).GetDuration().AsDuration(); d != 5*time.Minute {
		t.Errorf("paused for %s, want 5m", d)
	}
	until := testNow.Add(5 * time.Minute).Format("15:04") // 15:14
	waitGTK(t, "the tooltip to say paused", func() bool { return tooltip() == "Bastion: protection paused until "+until })
	onGTK(t, func() {
		if v, _ := icon.icon.GetProperty("icon-name"); v != "security-low" {
			t.Errorf("icon %v while paused", v)
		}
		r := trayEntry(t, e.a, trayResume)
		if !r.visible || !strings.Contains(r.label, "paused until "+until) {
			t.Errorf("resume entry %+v", r)
		}
		if trayEntry(t, e.a, trayPause1).visible {
			t.Error("Pause offered while paused")
		}
		e.a.showMain("rules")
	})
	waitGTK(t, "the main window's pause bar", func() bool {
		b := e.a.main.pause
		return b.bar.GetVisible() && b.text.GetMapped() && b.resume.GetMapped() &&
			strings.Contains(labelText(b.text), "paused until "+until)
	})
	// The pause ends by itself: the next status says so.
	e.clock.Add(5 * time.Minute)
	waitGTK(t, "protection on again", func() bool {
		return tooltip() == "Bastion: protecting" && !e.a.main.pause.bar.GetVisible()
	})

	// Resume ends a pause early, from the main window's bar.
	onGTK(t, func() { icon.items[trayPause1].Activate() })
	waitGTK(t, "paused for an hour", func() bool { return e.a.main.pause.bar.GetVisible() })
	onGTK(t, func() { e.a.main.pause.resume.Clicked() })
	testenv.WaitFor(t, waitTimeout, "the resume request", func() bool { return len(e.svc.CallsTo("ResumeProtection")) == 1 })
	waitGTK(t, "protection on after resume", func() bool {
		return tooltip() == "Bastion: protecting" && !e.a.main.pause.bar.GetVisible()
	})
}

// TestTrayFocusPrompt: the status icon's click (and --focus-prompt) gives
// a waiting prompt the keyboard focus, so that Alt+A works at once; with
// no prompt it opens the main window.
func TestTrayFocusPrompt(t *testing.T) {
	e := newEnv(t, envOpt{})
	onGTK(t, func() { e.a.focusPrompt() })
	waitGTK(t, "the main window", func() bool { return e.a.main != nil && e.a.main.win.GetVisible() })
	id := e.svc.AddPrompt(demo.CurlPrompt(testNow, time.Minute))
	e.promptShown(id)
	onGTK(t, func() {
		if e.a.prompt.win.GetAcceptFocus() {
			t.Error("the prompt takes the focus before it is asked to")
		}
		if !trayEntry(t, e.a, trayPrompt).visible {
			t.Error("no \"Answer the waiting prompt\" entry while a prompt waits")
		}
		e.a.focusPrompt()
		if !e.a.prompt.win.GetAcceptFocus() {
			t.Error("focus-prompt did not let the prompt take the focus")
		}
	})
}
