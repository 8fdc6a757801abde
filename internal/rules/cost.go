package rules

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode/utf8"
)

// What a rule may cost the agent that holds it. A rule's owner chooses its
// operands, and the agent is shared by every user, so each rule and each
// user's set of rules is bounded both in memory and in the time a match can
// take (see docs/security.md, "Rule cost").
const (
	// MaxMatchedCmdline is the longest command line (arguments joined by
	// spaces) a Cmdline expression is matched against; the rest is cut
	// off. It is the kernel side's ARGS_LEN (bpf/procid.c), so a rule
	// matches the same whether the process was identified by eBPF or by
	// /proc (which reads up to 32 KiB).
	MaxMatchedCmdline = 512

	// MaxRegexInsts bounds the compiled program of one Cmdline
	// expression. A command line quoted by a prompt answer (at most
	// MaxMatchedCmdline bytes) needs about one instruction a byte.
	MaxRegexInsts = 1024
	// MaxRegexWidth bounds how many instructions of one expression can be
	// live at once while it matches: the work per byte of the command
	// line. One match costs at most about width × MaxMatchedCmdline steps
	// of ~10 ns (0.3 ms at the bound; BenchmarkCmdlineWorst).
	MaxRegexWidth = 64

	// MaxSetBytes bounds the memory one user's rules hold in the agent.
	MaxSetBytes = 16 << 20
	// MaxSetWidth bounds the sum of the widths of one user's expressions:
	// the most one connection's match can cost (~0.35 s at the bound).
	MaxSetWidth = 1 << 16
)

// Estimated memory, in bytes, of a compiled rule: the rule and its index
// entries, and each instruction of a compiled expression (syntax.Inst, the
// one-pass copy and the matcher's queues; measured by TestRegexBytesPerInst).
const (
	ruleBytes    = 512
	bytesPerInst = 256
)

// Cost is what a compiled rule, or a set of them, costs.
type Cost struct {
	Rules int
	// Insts is the size of the Cmdline programs.
	Insts int
	// Width is the instructions that can be live at once while the Cmdline
	// expressions match, summed over the rules: the work per byte.
	Width int
	// Bytes is the estimated memory held.
	Bytes int
}

func (c *Cost) add(d Cost) {
	c.Rules += d.Rules
	c.Insts += d.Insts
	c.Width += d.Width
	c.Bytes += d.Bytes
}

// CostOf returns what r costs once compiled, or an error naming the bound
// it exceeds. It does not validate the rest of r.
func CostOf(r Rule) (Cost, error) {
	if r.Cmdline == "" {
		return costOf(r, nil, 0), nil
	}
	prog, width, err := cmdlineProg(r.Cmdline)
	if err != nil {
		return Cost{}, err
	}
	return costOf(r, prog, width), nil
}

// costOf is CostOf with the Cmdline program (nil if none) already built.
func costOf(r Rule, prog *syntax.Prog, width int) Cost {
	c := Cost{Rules: 1, Bytes: ruleBytes + len(r.ID) + len(r.Exe) + len(r.Cmdline) + len(r.ExeSHA256) + len(r.Host) + len(r.Note)}
	if isGlob(r.Exe) {
		c.Bytes += len(r.Exe) + 16*strings.Count(r.Exe, "/")
	}
	if prog != nil {
		c.Insts, c.Width = len(prog.Inst), width
		c.Bytes += bytesPerInst * len(prog.Inst)
	}
	return c
}

// SetCost returns what the enabled rules of rs cost together, or an error
// naming the first rule (by position) that takes the set over a bound. It
// stops at that rule, so a hostile set is refused before all of it is
// compiled.
func SetCost(rs []Rule) (Cost, error) {
	var b Budget
	for i := range rs {
		if !rs[i].Enabled {
			continue
		}
		c, err := CostOf(rs[i])
		if err == nil {
			err = b.add(c)
		}
		if err != nil {
			return b.Cost, fmt.Errorf("rule %d (id %q): %w", i, rs[i].ID, err)
		}
	}
	return b.Cost, nil
}

// Budget adds up the cost of one user's rules as they are read, so that a
// set over the per-user bounds is refused at the rule that takes it over,
// before the rest is even validated.
type Budget struct{ Cost Cost }

// Add validates r and, if it is enabled, adds its cost.
func (b *Budget) Add(r Rule) error {
	c, err := r.validate()
	if err != nil || !r.Enabled {
		return err
	}
	return b.add(c)
}

func (b *Budget) add(c Cost) error {
	b.Cost.add(c)
	switch {
	case b.Cost.Bytes > MaxSetBytes:
		return fmt.Errorf("the rules up to it need about %d bytes of the agent's memory, at most %d per user", b.Cost.Bytes, MaxSetBytes)
	case b.Cost.Width > MaxSetWidth:
		return fmt.Errorf("the command-line expressions up to it have a total width of %d, at most %d per user", b.Cost.Width, MaxSetWidth)
	}
	return nil
}

// cmdlineProg checks and compiles a Cmdline expression, anchored as
// compileCmdline anchors it, within the bounds. The parse tree is measured
// before it is expanded, so that an expression whose program would be huge
// (`a{1000}` repeated) is refused without building that program.
func cmdlineProg(expr string) (*syntax.Prog, int, error) {
	re, err := syntax.Parse(anchorCmdline(expr), syntax.Perl)
	if err != nil {
		return nil, 0, fmt.Errorf("cmdline: bad regular expression: %w", err)
	}
	est := estimate(re)
	if est.insts > MaxRegexInsts {
		return nil, 0, fmt.Errorf("cmdline regex: compiled program would have about %d instructions, at most %d", est.insts, MaxRegexInsts)
	}
	if est.width > MaxRegexWidth {
		return nil, 0, fmt.Errorf("cmdline regex: up to %d instructions live at once while matching (width), at most %d; "+
			"avoid nested or repeated variable-length parts such as (.*){n} or (a|aa)+", est.width, MaxRegexWidth)
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return nil, 0, fmt.Errorf("cmdline: bad regular expression: %w", err)
	}
	if len(prog.Inst) > MaxRegexInsts {
		return nil, 0, fmt.Errorf("cmdline regex: compiled program has %d instructions, at most %d", len(prog.Inst), MaxRegexInsts)
	}
	return prog, est.width, nil
}

func anchorCmdline(expr string) string { return `^(?:` + expr + `)$` }

// compileCmdline compiles a Cmdline expression so that it must match the
// whole command line, within the cost bounds.
func compileCmdline(expr string) (*regexp.Regexp, error) {
	if _, _, err := cmdlineProg(expr); err != nil {
		return nil, err
	}
	re, err := regexp.Compile(anchorCmdline(expr))
	if err != nil {
		return nil, fmt.Errorf("cmdline: bad regular expression: %w", err)
	}
	return re, nil
}

// cmdlineOf is the command line Cmdline expressions are matched against:
// the arguments joined by spaces, cut at MaxMatchedCmdline bytes.
func cmdlineOf(args []string) string {
	n := 0
	for i, a := range args {
		if i > 0 {
			n++
		}
		n += len(a)
		if n >= MaxMatchedCmdline {
			break
		}
	}
	var b strings.Builder
	b.Grow(min(n, MaxMatchedCmdline))
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(a)
		if b.Len() >= MaxMatchedCmdline {
			break
		}
	}
	s := b.String()
	if len(s) > MaxMatchedCmdline {
		// Cut at a character boundary, so that a prompt answer's quoted
		// command line stays valid UTF-8.
		i := MaxMatchedCmdline
		for i > MaxMatchedCmdline-utf8.UTFMax && i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	return s
}

// reCost is the estimated cost of a parsed (not yet simplified) expression.
type reCost struct {
	insts int // instructions of its compiled program, about
	// width bounds the instructions live at once when the expression is
	// entered at one offset: the NFA's (and the backtracker's) work per
	// input character.
	width int
	// length is the number of characters every match has, or -1 when it
	// varies. Parts after a fixed-length part are entered at one offset;
	// after a variable one, at many, so that all their instructions may
	// be live at once.
	length int
}

// costCap keeps the arithmetic of hostile repeat counts from overflowing;
// anything near it is far beyond every bound.
const costCap = 1 << 30

func sat(n int) int { return min(n, costCap) }

func satMul(a, b int) int {
	if a != 0 && b > costCap/a {
		return costCap
	}
	return sat(a * b)
}

// estimate follows regexp/syntax's Simplify and Compile: a literal is an
// instruction per rune, x{n,m} is n copies of x and m-n optional ones, an
// alternation adds a split per branch, a capture two instructions.
func estimate(re *syntax.Regexp) reCost {
	switch re.Op {
	case syntax.OpLiteral:
		n := len(re.Rune)
		return reCost{insts: max(n, 1), width: 1, length: n}
	case syntax.OpCharClass, syntax.OpAnyCharNotNL, syntax.OpAnyChar:
		return reCost{insts: 1, width: 1, length: 1}
	case syntax.OpCapture:
		s := estimate(re.Sub[0])
		return reCost{insts: sat(s.insts + 2), width: sat(s.width + 2), length: s.length}
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		s := estimate(re.Sub[0])
		n := sat(s.insts + 1)
		return reCost{insts: n, width: n, length: -1}
	case syntax.OpRepeat:
		s := estimate(re.Sub[0])
		lo, hi := re.Min, re.Max
		var n int
		switch {
		case hi == -1:
			n = sat(satMul(lo, s.insts) + s.insts + 1)
		case hi == 0:
			return reCost{insts: 1, width: 1, length: 0}
		default:
			n = sat(satMul(lo, s.insts) + satMul(hi-lo, s.insts+1))
		}
		if hi == lo && s.length >= 0 {
			// Fixed-length copies follow each other at fixed offsets:
			// only one copy is live at a time.
			return reCost{insts: n, width: s.width, length: satMul(lo, s.length)}
		}
		return reCost{insts: n, width: n, length: -1}
	case syntax.OpConcat:
		// Up to the first variable-length part, the parts are entered one
		// after the other at fixed offsets: one is live at a time (and the
		// zero-width assertions at its edges). The first variable-length
		// part is entered at one offset too, but every part after it at
		// many, and all of those may be live at once.
		c := reCost{}
		prefix, rest := 0, 0
		many := false
		for _, sub := range re.Sub {
			s := estimate(sub)
			c.insts = sat(c.insts + s.insts)
			switch {
			case many:
				rest = sat(rest + s.insts)
			case s.length < 0:
				rest = s.width
				many = true
			case s.length == 0:
				prefix = sat(prefix + s.width)
			default:
				prefix = max(prefix, s.width)
				if c.length >= 0 {
					c.length = sat(c.length + s.length)
				}
			}
		}
		c.width = sat(prefix + rest)
		if many {
			c.length = -1
		}
		return c
	case syntax.OpAlternate:
		c := reCost{insts: len(re.Sub) - 1, width: len(re.Sub) - 1}
		for i, sub := range re.Sub {
			s := estimate(sub)
			c.insts = sat(c.insts + s.insts)
			c.width = sat(c.width + s.width)
			if i == 0 {
				c.length = s.length
			} else if s.length != c.length {
				c.length = -1
			}
		}
		return c
	}
	// Empty-width assertions, the empty match, no match.
	return reCost{insts: 1, width: 1, length: 0}
}
