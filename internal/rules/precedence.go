package rules

import (
	"cmp"
	"strings"

	"github.com/bastion-fw/bastion/internal/flow"
)

// specificity ranks a rule for precedence; see doc.go. Every field is
// "more is more specific" except created (older wins) and id (lower wins).
type specificity struct {
	exeClass uint8 // 2 exact path, 1 glob, 0 any
	exeLit   int   // glob: length of the literal prefix
	exeSHA   uint8 // 1 when ExeSHA256 is set
	cmdline  uint8 // 1 when Cmdline is set
	dstHi    int   // the more specific of the host and address operands
	dstLo    int   // the other one
	port     int   // 65536 single port ... 1 all ports, 0 any
	proto    uint8 // 1 when set
	action   uint8 // deny 3, reject 2, allow 1
}

// Destination scores: a host name beats a single address, which beats
// prefixes (fewer host bits first), which beat domain wildcards (more
// labels first), which beat any destination.
const (
	scoreHost     = 1000
	scoreAddr     = 900
	scorePrefix   = 800 // minus the number of host bits, 1..128
	scoreWildcard = 100 // plus the number of labels after `*.`, 1..127
)

func specificityOf(r *Rule) specificity {
	var s specificity
	switch {
	case r.Exe == "":
	case !isGlob(r.Exe):
		s.exeClass = 2
	default:
		if _, ok := globLiteral(r.Exe); ok {
			s.exeClass = 2
		} else {
			s.exeClass = 1
			if i := strings.IndexAny(r.Exe, globMeta); i >= 0 {
				s.exeLit = i
			}
		}
	}
	if r.ExeSHA256 != "" {
		s.exeSHA = 1
	}
	if r.Cmdline != "" {
		s.cmdline = 1
	}
	host := 0
	switch {
	case r.Host == "":
	case strings.HasPrefix(r.Host, "*."):
		host = scoreWildcard + strings.Count(r.Host, ".")
	default:
		host = scoreHost
	}
	dst := 0
	if r.Dst.IsValid() {
		if hostBits := r.Dst.Addr().BitLen() - r.Dst.Bits(); hostBits == 0 {
			dst = scoreAddr
		} else {
			dst = scorePrefix - hostBits
		}
	}
	s.dstHi, s.dstLo = max(host, dst), min(host, dst)
	if r.PortMin != 0 || r.PortMax != 0 {
		s.port = 65536 - int(r.PortMax-r.PortMin)
	}
	if r.Proto != 0 {
		s.proto = 1
	}
	switch r.Action {
	case flow.ActionDeny:
		s.action = 3
	case flow.ActionReject:
		s.action = 2
	case flow.ActionAllow:
		s.action = 1
	}
	return s
}

// compare orders by specificity, most specific first.
func (a specificity) compare(b specificity) int {
	return cmp.Or(
		cmp.Compare(b.exeClass, a.exeClass),
		cmp.Compare(b.exeLit, a.exeLit),
		cmp.Compare(b.exeSHA, a.exeSHA),
		cmp.Compare(b.cmdline, a.cmdline),
		cmp.Compare(b.dstHi, a.dstHi),
		cmp.Compare(b.dstLo, a.dstLo),
		cmp.Compare(b.port, a.port),
		cmp.Compare(b.proto, a.proto),
		cmp.Compare(b.action, a.action),
	)
}

// Compare orders rules by precedence: it is negative when a takes
// precedence over b (a wins where both match), positive when b does, and
// zero only when the two rules rank alike in every respect, ID included.
// The order is documented in the package documentation.
func Compare(a, b Rule) int {
	return compareRules(&a, &b, specificityOf(&a), specificityOf(&b))
}

func compareRules(a, b *Rule, sa, sb specificity) int {
	if c := sa.compare(sb); c != 0 {
		return c
	}
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}
