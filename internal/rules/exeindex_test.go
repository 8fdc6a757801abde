package rules

import (
	"slices"
	"testing"

	"github.com/bastion-fw/bastion/internal/flow"
)

func TestExeIndex(t *testing.T) {
	rs := []Rule{
		{Enabled: true, Action: flow.ActionAllow, Exe: "/usr/bin/curl", Lifetime: Forever},
		{Enabled: false, Action: flow.ActionDeny, Exe: "/usr/lib/firefox/**", Lifetime: Forever},
		{Enabled: true, Action: flow.ActionAllow, Host: "example.com", Lifetime: Forever}, // any program
		{Enabled: true, Action: flow.ActionDeny, Exe: "/usr/bin/cur?", Lifetime: Forever},
		{Enabled: true, Action: flow.ActionDeny, Exe: "relative/path", Lifetime: Forever}, // invalid
		{Enabled: true, Action: flow.ActionDeny, Exe: `/tmp/we\*ird`, Lifetime: Forever},
		{Enabled: true, Action: flow.ActionAllow, Exe: "/usr/bin/curl", Host: "example.org", Lifetime: Forever},
	}
	x := NewExeIndex(rs)
	for exe, want := range map[string][]int{
		"/usr/bin/curl":                {0, 3, 6},
		"/usr/bin/curl2":               nil,
		"/usr/lib/firefox/firefox":     {1},
		"/usr/lib/firefox/bin/firefox": {1},
		"/usr/lib/firefox/x\nfirefox":  nil,
		`/tmp/we*ird`:                  {5},
		"/tmp/weXird":                  nil,
		"":                             nil,
		"relative/path":                nil,
	} {
		if got := x.Match(exe); !slices.Equal(got, want) {
			t.Errorf("Match(%q) = %v, want %v", exe, got, want)
		}
	}
}
