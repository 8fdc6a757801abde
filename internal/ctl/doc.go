// Package ctl is bastionctl, Bastion's command line. It talks to two
// services: the agent's API (status, pending connections, decisions, the
// decision cache) and the user's own rules service, bastion-uiserver
// (rules, import and export, the decision history, the decide-later list,
// the programs view: `programs`, `program` and `connections`, and
// `prompt`, a line-based prompt client for machines without a desktop).
// It prints readable text, or JSON with --json.
//
// Trust boundary: bastionctl runs with its user's rights; the agent and
// the rules service decide what that user may see and do from the socket's
// peer credentials. What the services send (process names, command lines,
// host names) is shown to the user as text through internal/inert (so no
// control, bidi or invalid byte reaches the terminal; --json keeps exact
// values with those written as \u escapes) and never interpreted; files
// given to `rules import` are parsed by the rules service, not here.
// /proc, /etc/services and the desktop entries that name programs
// (internal/desktopentry) are read best effort, for display only.
package ctl
