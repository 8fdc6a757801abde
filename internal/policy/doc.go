// Package policy is the agent's system policy: what happens to connections
// of UIDs that have no rules service connected (root, system accounts,
// logged-out users), and the prompt deadline that applies to everyone.
//
// Trust boundary: the policy is read from a root-owned file; a malformed
// file is an error at start-up, never a silent default.
package policy
