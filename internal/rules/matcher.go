package rules

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Matcher finds the rule that decides a connection. It is immutable once
// built and safe for concurrent use.
//
// Rules are indexed so that a lookup examines only rules that could match:
// by exact executable path, by the directory literal of a glob, and then by
// exact host, domain, exact address and prefix. Every list is sorted by
// precedence, so the first match in a list is the best in that list.
type Matcher struct {
	n     int
	exact map[string]*group // rules whose Exe is an exact path
	// globs holds glob rules by the literal directory before their first
	// wildcard; a lookup visits the lists of the executable's ancestors.
	globs map[string][]*crule
	any   *group // rules without Exe
	// files holds the AnyMountNS rules (also in exact), matched by file
	// identity for processes whose path is not the host's file.
	files []*crule
	// opaque holds, for KernelDeps, a copy of every rule that tests the
	// command line or the executable's hash, with those operands and the
	// host cleared; hosted one of every other rule that tests the host
	// name, with the host cleared.
	opaque, hosted []*crule
}

// crule is a compiled rule.
type crule struct {
	r      Rule
	spec   specificity
	idx    int    // position in NewMatcher's input: the last tie-break
	exe    string // an exact Exe with its escapes removed
	glob   *glob
	cmd    *regexp.Regexp
	domain string // Host without the leading "*." of a wildcard
	wild   bool
}

// group indexes rules by destination. A rule sits in exactly one list:
// the first of host, domain, address, prefix that it sets, else rest.
type group struct {
	byHost   map[string][]*crule
	byDomain map[string][]*crule
	byAddr   map[netip.Addr][]*crule
	byPrefix map[netip.Prefix][]*crule
	bits4    []int // distinct IPv4 prefix lengths in byPrefix
	bits6    []int
	rest     []*crule
}

// NewMatcher compiles the enabled rules of rs. It fails on the first
// enabled rule that does not validate.
func NewMatcher(rs []Rule) (*Matcher, error) {
	m := &Matcher{
		exact: make(map[string]*group),
		globs: make(map[string][]*crule),
		any:   newGroup(),
	}
	for i := range rs {
		if !rs[i].Enabled {
			continue
		}
		cr, err := compile(rs[i])
		if err != nil {
			return nil, fmt.Errorf("rule %d (id %q): %w", i, rs[i].ID, err)
		}
		cr.idx = i
		m.n++
		if cr.cmd != nil || cr.r.ExeSHA256 != "" || cr.r.Host != "" {
			sh := *cr
			sh.cmd, sh.r.ExeSHA256, sh.r.Host = nil, "", ""
			if cr.cmd != nil || cr.r.ExeSHA256 != "" {
				m.opaque = append(m.opaque, &sh)
			} else {
				m.hosted = append(m.hosted, &sh)
			}
		}
		switch {
		case cr.r.Exe == "":
			m.any.add(cr)
		case cr.glob == nil:
			g := m.exact[cr.exe]
			if g == nil {
				g = newGroup()
				m.exact[cr.exe] = g
			}
			g.add(cr)
			if cr.r.AnyMountNS {
				m.files = append(m.files, cr)
			}
		default:
			d := cr.glob.dir()
			m.globs[d] = append(m.globs[d], cr)
		}
	}
	for _, g := range m.exact {
		g.sort()
	}
	for _, l := range m.globs {
		sortRules(l)
	}
	m.any.sort()
	sortRules(m.files)
	return m, nil
}

func compile(r Rule) (*crule, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	cr := &crule{r: r, spec: specificityOf(&r)}
	if r.Exe != "" {
		if lit, ok := globLiteral(r.Exe); ok {
			cr.exe = lit
		} else {
			g, err := compileGlob(r.Exe)
			if err != nil {
				return nil, err
			}
			cr.glob = g
		}
	}
	if r.Cmdline != "" {
		re, err := compileCmdline(r.Cmdline)
		if err != nil {
			return nil, err
		}
		cr.cmd = re
	}
	cr.domain, cr.wild = strings.CutPrefix(r.Host, "*.")
	return cr, nil
}

// Len is the number of rules the Matcher holds (the enabled ones).
func (m *Matcher) Len() int { return m.n }

// Match returns the rule that decides c at time now (on the clock Duration
// rules are written on, see Now), or false when no rule matches. Of the
// rules that match, the one that takes precedence wins (see Compare).
// Duration rules whose Expires is not after now never match. The returned
// Rule belongs to the Matcher and must not be modified.
func (m *Matcher) Match(c Conn, now time.Time) (*Rule, bool) {
	cr, _ := m.match(&c, now)
	if cr == nil {
		return nil, false
	}
	return &cr.r, true
}

// KernelDeps says what, beyond what the kernel knows of a connection at
// connect time (the UID, the executable, the protocol, the destination
// address and port, and the time), the rule that decides c (or the absence
// of one) may depend on. process: some enabled rule not expired at now
// tests the command line or the executable's SHA-256 and matches c in all
// its other operands, so another process of the same program could be
// decided differently. host: some such rule tests the host name, so the
// decision holds for another process only if it is told the same name for
// the address. The agent remembers in the kernel only decisions that
// depend on neither, or on the host where every process of the UID is
// told the same name.
func (m *Matcher) KernelDeps(c Conn, now time.Time) (process, host bool) {
	if len(m.opaque) == 0 && len(m.hosted) == 0 {
		return false, false
	}
	st := newMatchState(c, now, true)
	for _, cr := range m.opaque {
		if st.matches(cr) {
			return true, false
		}
	}
	for _, cr := range m.hosted {
		if st.matches(cr) {
			return false, true
		}
	}
	return false, false
}

// match also returns how many rules it examined, for tests that prove the
// index keeps lookups sublinear.
func (m *Matcher) match(c *Conn, now time.Time) (*crule, int) {
	st := newMatchState(*c, now, true)
	// The executable is the most important operand: any rule naming the
	// exact path beats every glob rule, and any glob rule beats every rule
	// without Exe, so the first class that has a match decides.
	if g := m.exact[c.Exe]; g != nil && c.Exe != "" {
		if best := g.match(&st); best != nil {
			return best, st.examined
		}
	}
	// Rules for a host file in every mount namespace rank with the exact
	// paths: a process outside the host's namespace, or one that runs
	// the file under another name, is matched by the file itself.
	if len(m.files) > 0 && c.SameFile != nil {
		if best := st.first(m.files); best != nil {
			return best, st.examined
		}
	}
	var best *crule
	if len(m.globs) > 0 && c.Exe != "" {
		for i := 0; i < len(c.Exe); i++ {
			if c.Exe[i] != '/' {
				continue
			}
			best = st.better(best, st.first(m.globs[c.Exe[:i+1]]))
		}
		if best != nil {
			return best, st.examined
		}
	}
	return m.any.match(&st), st.examined
}

func newGroup() *group {
	return &group{
		byHost:   make(map[string][]*crule),
		byDomain: make(map[string][]*crule),
		byAddr:   make(map[netip.Addr][]*crule),
		byPrefix: make(map[netip.Prefix][]*crule),
	}
}

func (g *group) add(cr *crule) {
	r := &cr.r
	switch {
	case r.Host != "" && !cr.wild:
		g.byHost[r.Host] = append(g.byHost[r.Host], cr)
	case r.Host != "":
		g.byDomain[cr.domain] = append(g.byDomain[cr.domain], cr)
	case r.Dst.IsValid() && r.Dst.IsSingleIP():
		g.byAddr[r.Dst.Addr()] = append(g.byAddr[r.Dst.Addr()], cr)
	case r.Dst.IsValid():
		if _, ok := g.byPrefix[r.Dst]; !ok {
			if r.Dst.Addr().Is4() {
				g.bits4 = append(g.bits4, r.Dst.Bits())
			} else {
				g.bits6 = append(g.bits6, r.Dst.Bits())
			}
		}
		g.byPrefix[r.Dst] = append(g.byPrefix[r.Dst], cr)
	default:
		g.rest = append(g.rest, cr)
	}
}

func (g *group) sort() {
	for _, m := range []map[string][]*crule{g.byHost, g.byDomain} {
		for _, l := range m {
			sortRules(l)
		}
	}
	for _, l := range g.byAddr {
		sortRules(l)
	}
	for _, l := range g.byPrefix {
		sortRules(l)
	}
	slices.Sort(g.bits4)
	g.bits4 = slices.Compact(g.bits4)
	slices.Sort(g.bits6)
	g.bits6 = slices.Compact(g.bits6)
	sortRules(g.rest)
}

func sortRules(l []*crule) {
	slices.SortFunc(l, func(a, b *crule) int { return compareCompiled(a, b) })
}

func compareCompiled(a, b *crule) int {
	if c := compareRules(&a.r, &b.r, a.spec, b.spec); c != 0 {
		return c
	}
	return a.idx - b.idx
}

func (g *group) match(st *matchState) *crule {
	var best *crule
	if st.host != "" {
		best = st.better(best, st.first(g.byHost[st.host]))
		if len(g.byDomain) > 0 {
			// The name itself, then each parent domain.
			for d := st.host; ; {
				best = st.better(best, st.first(g.byDomain[d]))
				i := strings.IndexByte(d, '.')
				if i < 0 {
					break
				}
				d = d[i+1:]
			}
		}
	}
	if st.addr.IsValid() {
		best = st.better(best, st.first(g.byAddr[st.addr]))
		bits := g.bits6
		if st.addr.Is4() {
			bits = g.bits4
		}
		for _, b := range bits {
			p, err := st.addr.Prefix(b)
			if err == nil {
				best = st.better(best, st.first(g.byPrefix[p]))
			}
		}
	}
	return st.better(best, st.first(g.rest))
}

// matchState is one connection being matched, with what is computed from
// it at most once: the joined command line, the split path, the hash.
type matchState struct {
	c          Conn
	now        time.Time
	checkTime  bool
	addr       netip.Addr
	host       string
	exeElems   []string
	cmdline    string
	cmdlineSet bool
	sha        string
	shaDone    bool
	examined   int
	sameFile   map[string]bool // SameFile's answers, by path
}

func newMatchState(c Conn, now time.Time, checkTime bool) matchState {
	st := matchState{c: c, now: now, checkTime: checkTime}
	if c.Tuple.Dst.IsValid() {
		st.addr = c.Tuple.Dst.WithZone("").Unmap()
	}
	st.host = normalizeHost(c.Host)
	return st
}

// normalizeHost lower-cases a name and drops a trailing dot, the forms in
// which DNS names compare equal.
func normalizeHost(h string) string {
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

func (st *matchState) first(l []*crule) *crule {
	for _, cr := range l {
		st.examined++
		if st.matches(cr) {
			return cr
		}
	}
	return nil
}

func (st *matchState) better(a, b *crule) *crule {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case compareCompiled(b, a) < 0:
		return b
	}
	return a
}

// matches checks every operand of cr, cheapest first; the hash, which may
// read the executable, comes last.
func (st *matchState) matches(cr *crule) bool {
	r := &cr.r
	if st.checkTime && r.Lifetime == Duration && !st.now.Before(r.Expires) {
		return false
	}
	t := &st.c.Tuple
	if r.Proto != 0 && t.Proto != r.Proto {
		return false
	}
	if (r.PortMin != 0 || r.PortMax != 0) && (t.DstPort < r.PortMin || t.DstPort > r.PortMax) {
		return false
	}
	if r.Dst.IsValid() && (!st.addr.IsValid() || !r.Dst.Contains(st.addr)) {
		return false
	}
	if r.Host != "" {
		h := st.host
		if h == "" {
			return false
		}
		if cr.wild {
			if h != cr.domain && !(strings.HasSuffix(h, cr.domain) && h[len(h)-len(cr.domain)-1] == '.') {
				return false
			}
		} else if h != r.Host {
			return false
		}
	}
	if r.Exe != "" && !st.exeMatches(cr) {
		return false
	}
	if cr.cmd != nil {
		if st.c.Args == nil {
			return false
		}
		if !st.cmdlineSet {
			st.cmdline = cmdlineOf(st.c.Args)
			st.cmdlineSet = true
		}
		ok := cr.cmd.MatchString(st.cmdline)
		if st.c.Pace != nil {
			st.c.Pace()
		}
		if !ok {
			return false
		}
	}
	if r.ExeSHA256 != "" {
		if !st.shaDone {
			st.shaDone = true
			if st.c.SHA256 != nil {
				if h, err := st.c.SHA256(); err == nil {
					st.sha = strings.ToLower(h)
				}
			}
		}
		if st.sha != r.ExeSHA256 {
			return false
		}
	}
	return true
}

func (st *matchState) exeMatches(cr *crule) bool {
	exe := st.c.Exe
	if cr.r.AnyMountNS && exe != cr.exe && st.c.SameFile != nil {
		same, ok := st.sameFile[cr.exe]
		if !ok {
			same = st.c.SameFile(cr.exe)
			if st.sameFile == nil {
				st.sameFile = make(map[string]bool)
			}
			st.sameFile[cr.exe] = same
		}
		return same
	}
	if exe == "" {
		return false
	}
	if cr.glob == nil {
		return exe == cr.exe
	}
	// SECURITY: a glob never matches a path with a newline, so that a
	// glob is never broader than the regular expression (where `.` stops
	// at newlines) that an imported rule was translated from.
	if !strings.HasPrefix(exe, cr.glob.prefix) || strings.IndexByte(exe, '\n') >= 0 {
		return false
	}
	if st.exeElems == nil {
		st.exeElems = strings.Split(exe, "/")
	}
	return cr.glob.match(st.exeElems)
}

// Covers reports whether every operand of r matches c, ignoring whether r
// is enabled or expired. An invalid rule covers nothing. The rules service
// uses it to check that a prompt's answer covers the prompt's connection.
func Covers(r Rule, c Conn) bool {
	cr, err := compile(r)
	if err != nil {
		return false
	}
	st := newMatchState(c, time.Time{}, false)
	return st.matches(cr)
}
