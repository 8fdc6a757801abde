package rules

import (
	"fmt"
	"path"
	"strings"
)

// glob is a compiled executable pattern: path.Match semantics within each
// `/`-separated element, plus `**` elements that cross elements. A `**`
// anywhere but last matches zero or more elements (`/opt/**/bin/app`
// matches /opt/bin/app); a trailing `**` matches one or more (`/opt/app/**`
// matches what is inside /opt/app, not /opt/app itself), as in gitignore.
type glob struct {
	elems []string
	// prefix is the literal text before the first wildcard; every name the
	// glob matches starts with it.
	prefix string
}

const globMeta = `*?[\`

// isGlob reports whether s has any glob syntax (wildcards or escapes).
func isGlob(s string) bool { return strings.ContainsAny(s, globMeta) }

// escapeGlob makes a literal path into a glob that matches only that path.
func escapeGlob(s string) string {
	if !isGlob(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(globMeta, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// globLiteral returns the path a pattern matches when it has escapes but no
// wildcard, so that `/tmp/a\*b` is treated (and ranked) as an exact path.
func globLiteral(pattern string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; c {
		case '*', '?', '[':
			return "", false
		case '\\':
			if i+1 == len(pattern) {
				return "", false
			}
			i++
			b.WriteByte(pattern[i])
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

func compileGlob(pattern string) (*glob, error) {
	elems := strings.Split(pattern, "/")
	for _, e := range elems {
		if e == "**" {
			continue
		}
		// path.Match checks the whole pattern's syntax whatever the name.
		if _, err := path.Match(e, ""); err != nil {
			return nil, fmt.Errorf("bad glob %q: element %q: %w", pattern, e, err)
		}
	}
	prefix := pattern
	if i := strings.IndexAny(pattern, globMeta); i >= 0 {
		prefix = pattern[:i]
	}
	return &glob{elems: elems, prefix: prefix}, nil
}

// dir is the literal prefix cut after its last `/`: the directory every
// match lies under. The Matcher indexes globs by it.
func (g *glob) dir() string {
	return g.prefix[:strings.LastIndexByte(g.prefix, '/')+1]
}

// match reports whether name, split on `/`, matches. It is the classic
// greedy wildcard algorithm over elements, so it costs O(len(pattern) *
// len(name)) at worst, however many `**` a pattern has.
func (g *glob) match(name []string) bool {
	pat := g.elems
	pi, ni := 0, 0
	starP, starN := -1, 0
	for ni < len(name) {
		if pi < len(pat) && pat[pi] == "**" {
			if pi == len(pat)-1 {
				// Trailing `**`: one or more elements.
				return true
			}
			starP, starN = pi, ni
			pi++
			continue
		}
		if pi < len(pat) && elemMatch(pat[pi], name[ni]) {
			pi++
			ni++
			continue
		}
		if starP >= 0 {
			starN++
			pi, ni = starP+1, starN
			continue
		}
		return false
	}
	for pi < len(pat) && pat[pi] == "**" && pi != len(pat)-1 {
		pi++
	}
	return pi == len(pat)
}

func elemMatch(pattern, name string) bool {
	if !strings.ContainsAny(pattern, globMeta) {
		return pattern == name
	}
	ok, _ := path.Match(pattern, name)
	return ok
}
