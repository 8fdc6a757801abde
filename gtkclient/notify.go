package gtkclient

import (
	"context"
	"fmt"
	"sync"

	"github.com/godbus/dbus/v5"
)

// The desktop notification service (freedesktop.org Desktop
// Notifications Specification 1.2).
const (
	notifyName  = "org.freedesktop.Notifications"
	notifyPath  = dbus.ObjectPath("/org/freedesktop/Notifications")
	notifyIface = "org.freedesktop.Notifications"
)

// notification is one desktop notification.
type notification struct {
	Summary, Body string
	// Actions are key/label pairs shown as buttons.
	Actions []string
	Urgency byte // 0 low, 1 normal, 2 critical
}

// dbusNotifier sends notifications on a session bus and reports the
// actions the user invokes on them. It is used from goroutines, never from
// the GTK thread, as a D-Bus call can block.
type dbusNotifier struct {
	conn *dbus.Conn

	mu      sync.Mutex
	ours    map[uint32]bool
	onClick func(action string)
}

// newDBusNotifier connects to the session bus at address, or to the
// session bus of the environment when address is "".
func newDBusNotifier(ctx context.Context, address string, onAction func(action string)) (*dbusNotifier, error) {
	var (
		conn *dbus.Conn
		err  error
	)
	if address == "" {
		conn, err = dbus.ConnectSessionBus(dbus.WithContext(ctx))
	} else {
		conn, err = dbus.Connect(address, dbus.WithContext(ctx))
	}
	if err != nil {
		return nil, fmt.Errorf("connect to the session bus: %w", err)
	}
	n := &dbusNotifier{conn: conn, ours: map[uint32]bool{}, onClick: onAction}
	if err := conn.AddMatchSignal(dbus.WithMatchInterface(notifyIface), dbus.WithMatchMember("ActionInvoked")); err != nil {
		conn.Close()
		return nil, fmt.Errorf("watch notification actions: %w", err)
	}
	signals := make(chan *dbus.Signal, 16)
	conn.Signal(signals)
	go func() {
		// Ends when the connection closes, which closes signals.
		for s := range signals {
			n.signal(s)
		}
	}()
	return n, nil
}

func (n *dbusNotifier) signal(s *dbus.Signal) {
	if s.Name != notifyIface+".ActionInvoked" || len(s.Body) != 2 {
		return
	}
	id, ok1 := s.Body[0].(uint32)
	action, ok2 := s.Body[1].(string)
	n.mu.Lock()
	ours := n.ours[id]
	n.mu.Unlock()
	if ok1 && ok2 && ours && n.onClick != nil {
		n.onClick(action)
	}
}

// notify shows nt and returns its ID.
func (n *dbusNotifier) notify(ctx context.Context, nt notification) (uint32, error) {
	hints := map[string]dbus.Variant{
		"urgency":       dbus.MakeVariant(nt.Urgency),
		"desktop-entry": dbus.MakeVariant("bastion-gtk"),
		"category":      dbus.MakeVariant("network"),
	}
	actions := nt.Actions
	if actions == nil {
		actions = []string{}
	}
	var id uint32
	call := n.conn.Object(notifyName, notifyPath).CallWithContext(ctx, notifyIface+".Notify", 0,
		"Bastion", uint32(0), "security-high", nt.Summary, nt.Body, actions, hints, int32(-1))
	if err := call.Store(&id); err != nil {
		return 0, fmt.Errorf("send notification: %w", err)
	}
	n.mu.Lock()
	n.ours[id] = true
	n.mu.Unlock()
	return id, nil
}

func (n *dbusNotifier) Close() error { return n.conn.Close() }
