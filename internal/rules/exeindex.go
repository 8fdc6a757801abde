package rules

import "slices"

// ExeIndex finds the rules that name an executable: those whose Exe, an
// exact path or a glob, matches it as the Matcher would. Rules without an
// Exe (any program) and invalid rules name none; whether a rule is enabled
// or expired does not matter. The rules service uses it to list a
// program's rules.
type ExeIndex struct {
	exact map[string][]int
	globs []indexedGlob
}

type indexedGlob struct {
	i  int
	cr *crule
}

// NewExeIndex indexes rs by their Exe.
func NewExeIndex(rs []Rule) *ExeIndex {
	x := &ExeIndex{exact: make(map[string][]int)}
	for i, r := range rs {
		if r.Exe == "" {
			continue
		}
		cr, err := compile(r)
		if err != nil {
			continue
		}
		if cr.glob == nil {
			x.exact[cr.exe] = append(x.exact[cr.exe], i)
		} else {
			x.globs = append(x.globs, indexedGlob{i, cr})
		}
	}
	return x
}

// Match returns the indexes (into the rules given to NewExeIndex) of the
// rules that name exe, in order.
func (x *ExeIndex) Match(exe string) []int {
	if exe == "" {
		return nil
	}
	out := append([]int(nil), x.exact[exe]...)
	if len(x.globs) == 0 {
		return out
	}
	st := matchState{c: Conn{Exe: exe}}
	for _, g := range x.globs {
		if st.exeMatches(g.cr) {
			out = append(out, g.i)
		}
	}
	if len(out) > len(x.exact[exe]) {
		slices.Sort(out)
	}
	return out
}
