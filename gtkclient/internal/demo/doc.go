// Package demo is an in-memory UIService, the API of bastion-uiserver,
// with no agent behind it. bastion-gtk's tests drive the real widgets
// against it and record what reaches it; `make screenshots` fills it with
// realistic sample prompts and rules. It is never shipped.
//
// Trust boundary: none; it holds no real rules and decides nothing. Rules
// it receives are validated with internal/rules like the real service
// does, so a client bug that makes an invalid or non-covering rule fails
// here too.
package demo
