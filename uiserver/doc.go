// Package uiserver is bastion-uiserver, the per-user rules service. One runs
// unprivileged for each desktop user. It stores the user's rules
// (internal/store), keeps them pushed into the agent (SetRules) so covered
// connections never wait, turns the agent's pending connections of the user
// into prompts for the user's prompt clients, and serves
// bastion.ui.v1.UIService on $XDG_RUNTIME_DIR/bastion/ui.sock. It records
// the user's decisions and the bytes of the user's connections (the
// agent's WatchTraffic) into the history and per-program statistics,
// written to the store about once a second (stats.go), which the programs
// view reads (programs.go).
//
// Trust boundary: every API caller is authorised by SO_PEERCRED before any
// request is read, and only the user who runs the service is let in; what
// such a caller sends (rules, import files) is still checked for size and
// validity, as it may come from any program of that user. The agent is
// trusted (it runs as root), but its events are parsed defensively and
// nothing it sends can block the service on a slow client.
package uiserver
