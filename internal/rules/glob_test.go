package rules

import (
	"strings"
	"testing"
)

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"/usr/bin/*", "/usr/bin/curl", true},
		{"/usr/bin/*", "/usr/bin/sub/curl", false},
		{"/usr/bin/cu?l", "/usr/bin/curl", true},
		{"/usr/bin/[a-c]url", "/usr/bin/curl", true},
		{"/usr/bin/[a-b]url", "/usr/bin/curl", false},
		{"/opt/**/bin/app", "/opt/bin/app", true},
		{"/opt/**/bin/app", "/opt/a/b/c/bin/app", true},
		{"/opt/**/bin/app", "/opt/a/b/c/bin/app2", false},
		{"/opt/app/**", "/opt/app/x", true},
		{"/opt/app/**", "/opt/app/x/y/z", true},
		{"/opt/app/**", "/opt/app", false},
		{"/**/firefox", "/usr/lib/firefox/firefox", true},
		{"/**/firefox", "/firefox", true},
		{"/**/firefox", "/usr/lib/firefox/firefox-bin", false},
		{"/**/a/**/b", "/x/a/y/a/z/b", true},
		{"/**/a/**/b", "/x/a/y/a/z/c", false},
		{"/**/**/b", "/b", true},
		{`/tmp/a\*`, "/tmp/a*", true},
		{`/tmp/a\*`, "/tmp/ab", false},
		{"/usr/bin/fire*", "/usr/bin/firefox", true},
		{"/usr/bin/fire**", "/usr/bin/firefox", true}, // `**` inside an element is `*`
		{"/usr/bin/fire**", "/usr/bin/fire/fox", false},
	}
	for _, tt := range tests {
		g, err := compileGlob(tt.pattern)
		if err != nil {
			t.Fatalf("compileGlob(%q): %v", tt.pattern, err)
		}
		if got := g.match(strings.Split(tt.name, "/")); got != tt.want {
			t.Errorf("glob %q match %q = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
		if tt.want && !strings.HasPrefix(tt.name, strings.ReplaceAll(g.prefix, `\`, "")) && !strings.Contains(g.prefix, `\`) {
			t.Errorf("glob %q: prefix %q is not a prefix of its match %q", tt.pattern, g.prefix, tt.name)
		}
	}
}

func TestGlobManyDoubleStarsIsFast(t *testing.T) {
	// Backtracking over every `**` would take ~n^k steps here; the greedy
	// algorithm takes at most len(pattern)*len(name). Count element tests
	// rather than time them.
	pattern := "/" + strings.Repeat("**/a/", 8) + "b"
	name := "/" + strings.Repeat("a/", 200) + "c"
	g, err := compileGlob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if g.match(strings.Split(name, "/")) {
		t.Fatal("matched, want no match")
	}
}

func TestEscapeGlob(t *testing.T) {
	for _, s := range []string{"/usr/bin/curl", "/tmp/*", `/tmp/a\b[c]?`} {
		e := escapeGlob(s)
		lit, ok := globLiteral(e)
		if !ok || lit != s {
			t.Errorf("globLiteral(escapeGlob(%q)) = %q, %v", s, lit, ok)
		}
	}
	if _, ok := globLiteral("/tmp/*"); ok {
		t.Error(`globLiteral("/tmp/*") reported a literal`)
	}
}
