package rules

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// hostileCmdlines are expressions from issue 11: each compiles to a huge
// program or matches in time far beyond a millisecond.
var hostileCmdlines = map[string]string{
	"a{1000} x584":      strings.Repeat("a{1000}", 584),
	"(?:.?){1000}ZQ":    "(?:.?){1000}ZQ",
	"(?:.?){1000} x300": strings.Repeat("(?:.?){1000}", 300) + "ZQ",
	"(?:.*){100}ZQ":     "(?:.*){100}ZQ",
	"(?:a|aa){100}ZQ":   "(?:a|aa){100}ZQ",
	"(?:a*a*){40}ZQ":    "(?:a*a*){40}ZQ",
	"literal 4096":      strings.Repeat("x", 4096),
}

func TestCmdlineCostBounds(t *testing.T) {
	for name, expr := range hostileCmdlines {
		t.Run("hostile "+name, func(t *testing.T) {
			start := time.Now()
			err := Rule{Enabled: true, Action: flow.ActionAllow, Lifetime: Forever, Cmdline: expr}.Validate()
			if err == nil {
				t.Fatalf("accepted")
			}
			if !strings.Contains(err.Error(), "at most") || !strings.Contains(err.Error(), "cmdline") {
				t.Errorf("error %q does not name the field and the limit", err)
			}
			t.Logf("%v (refused in %v)", err, time.Since(start))
		})
	}
	for _, expr := range []string{
		`/usr/bin/python3 /home/.*/backup\.py --verbose .*`,
		`java -Xmx[0-9]+m -jar .*/app-[0-9.]+\.jar .*`,
		`(/usr/lib/firefox/firefox|/usr/bin/firefox-esr) -contentproc -childID [0-9]+ .*`,
		regexp.QuoteMeta(strings.Repeat("--some-long-flag=value ", 30)[:MaxMatchedCmdline]),
		`(?:ab|cd){100}`, // fixed-length copies: one live at a time
		`[a-z]{1,8}`,
	} {
		if _, err := CostOf(Rule{Cmdline: expr}); err != nil {
			t.Errorf("%q refused: %v", expr, err)
		}
	}
}

// TestEstimateFollowsCompile: the estimate made before the program is
// built is close to the real program size, so that refusing on it refuses
// what the compiled program would have been refused for.
func TestEstimateFollowsCompile(t *testing.T) {
	for _, expr := range []string{
		"abc", "a{10}", "a{3,7}", "(?:ab|c){5}", "x*y+z?", "(a)(b)", "[a-z]{1,8}-[0-9]+", "(?:.?){50}ZQ",
		"a{2,}", "(?i)hello", `\bfoo\b`, "(?:a|b|c)", "a{0}", "", "(?:a{10}){10}",
	} {
		re, err := syntax.Parse(anchorCmdline(expr), syntax.Perl)
		if err != nil {
			t.Fatal(err)
		}
		est := estimate(re)
		prog, err := syntax.Compile(re.Simplify())
		if err != nil {
			t.Fatal(err)
		}
		if n := len(prog.Inst); est.insts < n-4 || est.insts > 2*n+4 {
			t.Errorf("%q: estimated %d instructions, compiled %d", expr, est.insts, n)
		}
	}
}

func TestCmdlineWidth(t *testing.T) {
	for _, tc := range []struct {
		expr string
		max  int
	}{
		{"abc", 6},
		{regexp.QuoteMeta(strings.Repeat("x", 500)), 6},
		{"(?:ab|cd){100}", 10}, {`[a-z]x\bfoo[0-9]`, 8},
		{"abc.*", 10},
		{"(?:.?){10}", 40},
	} {
		_, w, err := cmdlineProg(tc.expr)
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		if w > tc.max {
			t.Errorf("%q: width %d, want at most %d", tc.expr, w, tc.max)
		}
	}
}

func TestSetCost(t *testing.T) {
	big := regexp.QuoteMeta(strings.Repeat("y", 500))
	var rs []Rule
	for i := range 10_000 {
		rs = append(rs, Rule{ID: fmt.Sprintf("r%d", i), Enabled: true, Action: flow.ActionAllow, Lifetime: Forever, Cmdline: big})
	}
	_, err := SetCost(rs)
	if err == nil || !strings.Contains(err.Error(), "bytes") || !strings.Contains(err.Error(), fmt.Sprint(MaxSetBytes)) {
		t.Errorf("10,000 rules of 500-instruction expressions: %v, want the per-user memory bound", err)
	}
	wide := "[a-z]*" + strings.Repeat("x", 55)
	rs = rs[:0]
	for i := range 2000 {
		rs = append(rs, Rule{ID: fmt.Sprintf("w%d", i), Enabled: true, Action: flow.ActionAllow, Lifetime: Forever, Cmdline: wide})
	}
	if _, err := SetCost(rs); err == nil || !strings.Contains(err.Error(), "per user") {
		t.Errorf("2,000 rules of width ~60: %v, want a per-user bound", err)
	}
	c, err := SetCost(rs[:100])
	if err != nil || c.Rules != 100 || c.Width < 100*50 {
		t.Errorf("100 wide rules: %+v, %v", c, err)
	}
	// Disabled rules are not compiled and cost nothing.
	for i := range rs {
		rs[i].Enabled = false
	}
	if c, err := SetCost(rs); err != nil || c.Rules != 0 {
		t.Errorf("disabled rules: %+v, %v", c, err)
	}
}

func TestCmdlineOf(t *testing.T) {
	long := []string{"/usr/bin/prog", strings.Repeat("é", 400)}
	s := cmdlineOf(long)
	if len(s) > MaxMatchedCmdline || len(s) < MaxMatchedCmdline-3 || !strings.HasPrefix(s, "/usr/bin/prog é") {
		t.Errorf("cmdlineOf: %d bytes %q", len(s), s)
	}
	if !utf8Valid(s) {
		t.Errorf("cut inside a character")
	}
	if got := cmdlineOf([]string{"a", "b c"}); got != "a b c" {
		t.Errorf("cmdlineOf short: %q", got)
	}
	// A prompt answer quotes the command line as it is matched, so the
	// rule covers the prompted connection however long its argv.
	p := flow.Process{Exe: "/usr/bin/prog", Args: long}
	r, err := ForPrompt(p, flow.Tuple{}, "", Choice{Action: flow.ActionAllow, Lifetime: Forever, Scope: ScopeAny, WithCmdline: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !Covers(r, Conn{Exe: p.Exe, Args: p.Args}) {
		t.Errorf("the prompt's rule does not cover its connection")
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// TestRegexBytesPerInst checks the memory estimate per instruction against
// what compiled expressions hold once they have matched.
func TestRegexBytesPerInst(t *testing.T) {
	exprs := map[string]string{
		"literal": anchorCmdline(regexp.QuoteMeta(strings.Repeat("abcdefgh", 64))),
		"classes": anchorCmdline(strings.Repeat("[a-z]x", 250)),
		"alts":    anchorCmdline(strings.Repeat("(?:ab|cd)", 200)),
	}
	for name, expr := range exprs {
		prog, _, err := cmdlineProg(expr[4 : len(expr)-2])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		const n = 200
		res := make([]*regexp.Regexp, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range res {
			res[i] = regexp.MustCompile(expr)
			res[i].MatchString(strings.Repeat("a", MaxMatchedCmdline))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		per := float64(after.HeapAlloc-before.HeapAlloc) / n / float64(len(prog.Inst))
		t.Logf("%s: %d instructions, %.0f bytes each", name, len(prog.Inst), per)
		if per > bytesPerInst {
			t.Errorf("%s: %.0f bytes per instruction, estimate is %d", name, per, bytesPerInst)
		}
		runtime.KeepAlive(res)
	}
}

// BenchmarkCmdlineWorst matches the costliest expressions the bounds
// accept against the longest command line, and reports the time per
// (width × byte): the constant that MaxRegexWidth's budget is based on.
func BenchmarkCmdlineWorst(b *testing.B) {
	in := strings.Repeat("a", MaxMatchedCmdline)
	for _, expr := range []string{
		"(?:.*){30}ZQ", "(?:a*a*){15}ZQ", "(?:.?){30}ZQ", `(?:\b.*){30}ZQ`, "(?:a|aa){20}ZQ",
	} {
		b.Run(expr, func(b *testing.B) {
			_, w, err := cmdlineProg(expr)
			if err != nil {
				b.Skipf("refused: %v", err)
			}
			re := regexp.MustCompile(anchorCmdline(expr))
			for b.Loop() {
				re.MatchString(in)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(w*len(in)), "ns/width-byte")
			b.ReportMetric(float64(w), "width")
		})
	}
}
