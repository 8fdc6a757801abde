package gtkclient

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"
)

// The StatusNotifierItem protocol (KDE, freedesktop.org draft; GNOME's
// AppIndicator extension, Xfce, LXQt and most panels host it): the item
// is an object on the session bus that a watcher lists and a panel shows,
// with its menu exported as com.canonical.dbusmenu.
const (
	sniWatcherName  = "org.kde.StatusNotifierWatcher"
	sniWatcherPath  = dbus.ObjectPath("/StatusNotifierWatcher")
	sniWatcherIface = "org.kde.StatusNotifierWatcher"
	sniIface        = "org.kde.StatusNotifierItem"
	sniPath         = dbus.ObjectPath("/StatusNotifierItem")
	menuIface       = "com.canonical.dbusmenu"
	menuPath        = dbus.ObjectPath("/MenuBar")
)

// sni is bastion-gtk's StatusNotifierItem. D-Bus calls arrive on godbus's
// goroutines: they read the menu snapshot under mu and hand actions to
// the GTK thread with app.post.
type sni struct {
	a     *app
	conn  *dbus.Conn
	props *prop.Properties

	mu       sync.Mutex
	items    []trayItem // as of the last update; run only on the GTK thread
	revision uint32
}

// newSNI registers a StatusNotifierItem with the session's
// StatusNotifierWatcher; it fails when the session has none.
func newSNI(a *app) (presence, error) {
	if os.Getenv("DBUS_SESSION_BUS_ADDRESS") == "" {
		return nil, errors.New("no session bus")
	}
	conn, err := dbus.ConnectSessionBus()
	if err != nil {
		return nil, fmt.Errorf("connect to the session bus: %w", err)
	}
	var owned bool
	if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, sniWatcherName).Store(&owned); err != nil || !owned {
		conn.Close()
		return nil, fmt.Errorf("no %s on the session bus", sniWatcherName)
	}
	s := &sni{a: a, conn: conn}
	s.items = a.trayItems()
	if err := s.export(); err != nil {
		conn.Close()
		return nil, err
	}
	// The watcher knows the item by our unique name and the object path.
	if err := conn.Object(sniWatcherName, sniWatcherPath).Call(sniWatcherIface+".RegisterStatusNotifierItem", 0, string(sniPath)).Err; err != nil {
		conn.Close()
		return nil, fmt.Errorf("register with %s: %w", sniWatcherName, err)
	}
	s.update()
	return s, nil
}

func (s *sni) export() error {
	ro := func(v any) *prop.Prop { return &prop.Prop{Value: v, Emit: prop.EmitFalse} }
	props, err := prop.Export(s.conn, sniPath, prop.Map{sniIface: {
		"Category":   ro("SystemServices"),
		"Id":         ro("bastion-gtk"),
		"Title":      ro("Bastion"),
		"Status":     ro("Active"),
		"IconName":   ro(s.a.trayIcon()),
		"ToolTip":    ro(sniToolTip{Title: s.a.trayTooltip()}),
		"ItemIsMenu": ro(false),
		"Menu":       ro(menuPath),
	}})
	if err != nil {
		return fmt.Errorf("export the item's properties: %w", err)
	}
	s.props = props
	if err := s.conn.ExportMethodTable(map[string]any{
		"Activate":          func(x, y int32) *dbus.Error { s.a.post(s.a.focusPrompt); return nil },
		"SecondaryActivate": func(x, y int32) *dbus.Error { s.a.post(func() { s.a.showMain("programs") }); return nil },
		"ContextMenu":       func(x, y int32) *dbus.Error { return nil }, // the host shows Menu
		"Scroll":            func(delta int32, orientation string) *dbus.Error { return nil },
	}, sniPath, sniIface); err != nil {
		return fmt.Errorf("export the item: %w", err)
	}
	if _, err := prop.Export(s.conn, menuPath, prop.Map{menuIface: {
		"Version":       ro(uint32(3)),
		"TextDirection": ro("ltr"),
		"Status":        ro("normal"),
		"IconThemePath": ro([]string{}),
	}}); err != nil {
		return fmt.Errorf("export the menu's properties: %w", err)
	}
	if err := s.conn.ExportMethodTable(map[string]any{
		"GetLayout":          s.getLayout,
		"GetGroupProperties": s.getGroupProperties,
		"GetProperty":        s.getProperty,
		"Event":              s.event,
		"EventGroup":         s.eventGroup,
		"AboutToShow":        func(id int32) (bool, *dbus.Error) { return false, nil },
		"AboutToShowGroup":   func(ids []int32) ([]int32, []int32, *dbus.Error) { return nil, nil, nil },
	}, menuPath, menuIface); err != nil {
		return fmt.Errorf("export the menu: %w", err)
	}
	return nil
}

// sniToolTip is the ToolTip property: (icon name, icon pixmaps, title,
// text).
type sniToolTip struct {
	IconName string
	Pixmaps  []sniPixmap
	Title    string
	Text     string
}

type sniPixmap struct {
	W, H int32
	Data []byte
}

// menuNode is one dbusmenu layout node: (id, properties, children).
type menuNode struct {
	ID       int32
	Props    map[string]dbus.Variant
	Children []dbus.Variant
}

// The menu's IDs: 0 is the root, entry i of trayItems is i+1.
func (s *sni) nodeProps(it trayItem) map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"label":   dbus.MakeVariant(it.label),
		"visible": dbus.MakeVariant(it.visible),
		"enabled": dbus.MakeVariant(true),
	}
}

func (s *sni) getLayout(parent, depth int32, _ []string) (uint32, menuNode, *dbus.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	root := menuNode{ID: 0, Props: map[string]dbus.Variant{"children-display": dbus.MakeVariant("submenu")}}
	for i, it := range s.items {
		root.Children = append(root.Children, dbus.MakeVariant(menuNode{ID: int32(i + 1), Props: s.nodeProps(it), Children: []dbus.Variant{}}))
	}
	if parent != 0 {
		if parent < 1 || int(parent) > len(s.items) {
			return 0, menuNode{}, dbus.MakeFailedError(fmt.Errorf("no menu entry %d", parent))
		}
		return s.revision, menuNode{ID: parent, Props: s.nodeProps(s.items[parent-1]), Children: []dbus.Variant{}}, nil
	}
	return s.revision, root, nil
}

type menuProps struct {
	ID    int32
	Props map[string]dbus.Variant
}

func (s *sni) getGroupProperties(ids []int32, _ []string) ([]menuProps, *dbus.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []menuProps
	for _, id := range ids {
		if id >= 1 && int(id) <= len(s.items) {
			out = append(out, menuProps{ID: id, Props: s.nodeProps(s.items[id-1])})
		}
	}
	return out, nil
}

func (s *sni) getProperty(id int32, name string) (dbus.Variant, *dbus.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id < 1 || int(id) > len(s.items) {
		return dbus.Variant{}, dbus.MakeFailedError(fmt.Errorf("no menu entry %d", id))
	}
	v, ok := s.nodeProps(s.items[id-1])[name]
	if !ok {
		return dbus.Variant{}, dbus.MakeFailedError(fmt.Errorf("no property %q", name))
	}
	return v, nil
}

// event runs a clicked menu entry on the GTK thread, as the app's state
// has it then.
func (s *sni) event(id int32, eventID string, _ dbus.Variant, _ uint32) *dbus.Error {
	if eventID != "clicked" {
		return nil
	}
	s.mu.Lock()
	var key string
	if id >= 1 && int(id) <= len(s.items) {
		key = s.items[id-1].id
	}
	s.mu.Unlock()
	if key == "" {
		return nil
	}
	s.a.post(func() {
		for _, it := range s.a.trayItems() {
			if it.id == key && it.visible {
				it.run()
			}
		}
	})
	return nil
}

type menuEvent struct {
	ID        int32
	EventID   string
	Data      dbus.Variant
	Timestamp uint32
}

func (s *sni) eventGroup(events []menuEvent) ([]int32, *dbus.Error) {
	for _, e := range events {
		s.event(e.ID, e.EventID, e.Data, e.Timestamp)
	}
	return nil, nil
}

// update publishes the app's state: icon, tooltip, status and menu; GTK
// thread.
func (s *sni) update() {
	items := s.a.trayItems()
	icon, tip := s.a.trayIcon(), s.a.trayTooltip()
	status := "Active"
	if s.a.prompt != nil && s.a.prompt.shown != nil {
		status = "NeedsAttention"
	}
	s.mu.Lock()
	changed := !sameItems(items, s.items)
	s.items = items
	if changed {
		s.revision++
	}
	rev := s.revision
	s.mu.Unlock()
	// The setters below only record the values (EmitFalse): hosts learn
	// of changes from the item's own signals.
	if s.props.GetMust(sniIface, "IconName") != icon {
		s.props.SetMust(sniIface, "IconName", icon)
		s.conn.Emit(sniPath, sniIface+".NewIcon")
	}
	if t, _ := s.props.GetMust(sniIface, "ToolTip").(sniToolTip); t.Title != tip {
		s.props.SetMust(sniIface, "ToolTip", sniToolTip{Title: tip})
		s.conn.Emit(sniPath, sniIface+".NewToolTip")
	}
	if s.props.GetMust(sniIface, "Status") != status {
		s.props.SetMust(sniIface, "Status", status)
		s.conn.Emit(sniPath, sniIface+".NewStatus", status)
	}
	if changed {
		s.conn.Emit(menuPath, menuIface+".LayoutUpdated", rev, int32(0))
	}
}

func sameItems(a, b []trayItem) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].id != b[i].id || a[i].label != b[i].label || a[i].visible != b[i].visible {
			return false
		}
	}
	return true
}

func (s *sni) close() { s.conn.Close() }
