// Package inerttest holds the test oracle for untrusted strings on their way
// to a person: a list of what must never reach a display, written apart
// from the inert package's own rules, so that a test of any output (the
// terminal, GTK labels, logs) checks inert against an independent list.
package inerttest

import (
	"slices"
	"strings"
	"unicode/utf8"
)

// RawControls returns the characters of s that must not reach a display,
// except those in allowed (e.g. the newlines of a terminal's output): C0
// controls, DEL, C1 controls, the bidi controls and marks, the line and
// paragraph separators and invalid UTF-8 (as U+FFFD, unless s holds a real
// U+FFFD there).
func RawControls(s string, allowed ...rune) string {
	var bad []rune
	for i, r := range s {
		switch {
		case slices.Contains(allowed, r):
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\ufffd"),
			r < 0x20, r >= 0x7f && r <= 0x9f,
			r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069,
			r == 0x200e, r == 0x200f, r == 0x061c, r == 0x2028, r == 0x2029:
			bad = append(bad, r)
		}
	}
	return string(bad)
}
