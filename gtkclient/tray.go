package gtkclient

import (
	"fmt"

	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"
)

// presence is bastion-gtk's status icon: a StatusNotifierItem where the
// desktop has a watcher for them (sni.go), else a GtkStatusIcon (the
// system tray of X11 desktops). Both show the same menu (trayItems).
type presence interface {
	// update shows the app's current state; GTK thread.
	update()
	close()
}

func newPresence(a *app) presence {
	if s, err := newSNI(a); err == nil {
		return s
	} else {
		a.log.Debug("no StatusNotifierItem host; using a GtkStatusIcon", "err", err)
	}
	return newStatusIcon(a)
}

// trayItem is one entry of the status icon's menu.
type trayItem struct {
	id, label string
	visible   bool
	run       func()
}

// Menu entry IDs.
const (
	trayOpen   = "open"
	trayPrompt = "prompt"
	trayPause5 = "pause-5m"
	trayPause1 = "pause-1h"
	trayResume = "resume"
	trayQuit   = "quit"
)

// trayItems is the status icon's menu for the app's state; GTK thread.
func (a *app) trayItems() []trayItem {
	paused := !a.pausedUntil().IsZero()
	waiting := a.prompt != nil && a.prompt.shown != nil
	return []trayItem{
		{id: trayOpen, label: "Open Bastion", visible: true, run: func() { a.showMain("programs") }},
		{id: trayPrompt, label: "Answer the waiting prompt", visible: waiting, run: a.focusPrompt},
		{id: trayPause5, label: "Pause protection for 5 minutes", visible: !paused, run: func() { a.pause(5 * 60e9) }},
		{id: trayPause1, label: "Pause protection for 1 hour", visible: !paused, run: func() { a.pause(3600e9) }},
		{id: trayResume, label: a.resumeLabel(), visible: paused, run: a.resume},
		{id: trayQuit, label: "Quit", visible: true, run: a.quit},
	}
}

// trayTooltip and trayIcon say how protection stands.
func (a *app) trayTooltip() string {
	switch {
	case !a.pausedUntil().IsZero():
		return "Bastion: protection paused until " + a.pausedUntil().In(a.loc).Format("15:04")
	case !a.up:
		return "Bastion: the rules service is not reachable"
	}
	if n := len(a.queue.groups); n > 0 {
		return fmt.Sprintf("Bastion: %d %s waiting", n, plural(n, "prompt", "prompts"))
	}
	return "Bastion: protecting"
}

func (a *app) trayIcon() string {
	if !a.pausedUntil().IsZero() || !a.up {
		return "security-low"
	}
	return "security-high"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// statusIcon is the GtkStatusIcon fallback.
type statusIcon struct {
	a     *app
	icon  *glib.Object // a GtkStatusIcon
	menu  *gtk.Menu
	items map[string]*gtk.MenuItem
}

func newStatusIcon(a *app) *statusIcon {
	s := &statusIcon{a: a, items: map[string]*gtk.MenuItem{}}
	s.icon = newGtkStatusIcon()
	_ = s.icon.SetProperty("title", "Bastion")
	_ = s.icon.SetProperty("icon-name", "security-high")
	s.menu, _ = gtk.MenuNew()
	for i, it := range a.trayItems() {
		if it.id == trayQuit || (i > 0 && it.id == trayPause5) {
			sep, _ := gtk.SeparatorMenuItemNew()
			s.menu.Append(sep)
		}
		mi, _ := gtk.MenuItemNewWithLabel(it.label)
		id := it.id
		mi.Connect("activate", func() { s.activate(id) })
		s.menu.Append(mi)
		s.items[it.id] = mi
	}
	s.menu.ShowAll()
	// A left click answers the waiting prompt, or opens the main window.
	s.icon.Connect("activate", func() { a.focusPrompt() })
	s.icon.Connect("popup-menu", func() { s.menu.PopupAtPointer(nil) })
	s.update()
	return s
}

// activate runs the menu entry id as the app's state has it now.
func (s *statusIcon) activate(id string) {
	for _, it := range s.a.trayItems() {
		if it.id == id && it.visible {
			it.run()
		}
	}
}

func (s *statusIcon) update() {
	_ = s.icon.SetProperty("icon-name", s.a.trayIcon())
	_ = s.icon.SetProperty("tooltip-text", s.a.trayTooltip())
	for _, it := range s.a.trayItems() {
		if mi := s.items[it.id]; mi != nil {
			mi.SetLabel(it.label)
			mi.SetVisible(it.visible)
		}
	}
}

func (s *statusIcon) close() {
	_ = s.icon.SetProperty("visible", false)
	s.menu.Destroy()
}
