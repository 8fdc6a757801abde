// Package fakeui is an in-memory UIService, the API of bastion-uiserver,
// with no agent behind it. bastionctl's tests and bastion-gtk's tests run
// the real clients against it and check what reaches it; `make
// screenshots` fills it with realistic sample prompts and rules
// (gtkclient/internal/demo). It is never shipped.
//
// Like the real service it validates every rule it receives with
// internal/rules, refuses to store LIFETIME_ONCE rules and accepts an
// answer only to a waiting prompt that the rule covers, so that a client
// bug that makes an invalid or non-covering rule fails here too. Tests set
// what the real service would decide otherwise: SetRuleError,
// SetStatusEdit, DropPrompt.
//
// Trust boundary: none; it holds no real rules and decides nothing.
package fakeui
