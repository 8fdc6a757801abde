package ctl

import "testing"

// TestDecidedByLabel: every decided_by the agent and the rules service
// write has the README's words, and nothing else is shown raw but inert.
func TestDecidedByLabel(t *testing.T) {
	for by, want := range map[string]string{
		"rule:r1":           "rule r1",
		"cache:c7":          "cache c7",
		"api:uid=1000":      "answer of uid 1000",
		"deadline:uid=1000": "deadline of uid 1000's rules service",
		"default:uid=1001":  "silent action of uid 1001's rules service",
		"prompt":            "your answer",
		"later":             "silent action (decide later)",
		"paused":            "protection paused",
		"":                  "-",
		"policy":            "policy",
	} {
		if got := decidedByLabel(by); got != want {
			t.Errorf("decidedByLabel(%q) = %q, want %q", by, got, want)
		}
	}
}
