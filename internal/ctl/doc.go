// Package ctl is bastionctl, Bastion's command line: it talks to the agent's
// API (status, pending connections, decisions, the decision cache) and
// prints readable text, or JSON with --json.
//
// Trust boundary: bastionctl runs with its user's rights; the agent decides
// what that user may see and do from the socket's peer credentials.
package ctl
