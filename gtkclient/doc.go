// Package gtkclient is bastion-gtk, Bastion's desktop client: the prompt
// window that asks whether a program may connect, and the main window with
// what each program did (its connections, destinations, traffic chart and
// rules), the user's rules, the recent decisions, the decide-later list and the
// status of the agent and the rules service.
//
// It talks only to the user's own rules service, bastion-uiserver, on
// $XDG_RUNTIME_DIR/bastion/ui.sock, never to the root agent. Every GTK call
// happens on the GTK main thread: the gRPC streams and calls run in
// goroutines and hand their results over with glib.IdleAdd, so a slow or
// vanished service never freezes a window. When the service goes away the
// client says so in a banner and reconnects with backoff.
//
// Trust boundary: what the rules service sends (process names, command
// lines, host names) comes from programs the user runs and may be crafted
// by them; it is shown as plain text (never as Pango markup; the one cell
// that is markup, a program's name over its path, escapes both with
// glib.MarkupEscapeText), through internal/inert (controls, bidi controls and invalid bytes as visible
// escapes, long values elided), and it is never interpreted; notification
// bodies, which servers may read as markup, go through inert.Markup. The
// rule dialog's entries hold a rule's exact values for editing and are
// not escaped. The rule a prompt answer sends is built by
// rules.ForPrompt from the prompt itself, so the rule the user saw is the
// rule that is stored. .desktop files and the icon theme are read for
// display only.
package gtkclient
