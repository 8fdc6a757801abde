package rules

import (
	"net/netip"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Lifetime says how long a rule applies.
type Lifetime uint8

const (
	// Once decides only the connections of the prompt it answered; such a
	// rule is never stored.
	Once Lifetime = iota + 1
	// Duration applies until Rule.Expires, on a clock that keeps running
	// through suspend.
	Duration
	// Session applies until logout or the rules service restarts; it is
	// never written to disk.
	Session
	// Forever applies until the rule is deleted.
	Forever
)

// Rule decides some of one user's connections. A zero operand matches
// anything; a rule matches when every operand it sets matches.
type Rule struct {
	ID      string
	Enabled bool
	Action  flow.Action

	// Exe is an exact path, or a glob: `*` and `?` within one path
	// element, `[...]` classes, `**` across elements, `\` escapes (see
	// the package documentation).
	Exe string
	// Cmdline is an RE2 expression that must match the whole command line
	// (arguments joined by single spaces, cut at MaxMatchedCmdline bytes).
	// Its size and matching work are bounded (CostOf).
	Cmdline string
	// AnyMountNS widens an exact Exe to processes in every mount namespace
	// (containers, Flatpak, Snap): it then matches any process whose
	// executable is the very file the host has at Exe (same device and
	// inode), whatever path the process knows it by. Without it, Exe
	// matches only processes in the host's mount namespace whose
	// executable is the host's file at that path (flow.ExeVerified).
	AnyMountNS bool
	// ExeSHA256 is the lower-case hex SHA-256 of the executable.
	ExeSHA256 string
	// Dst is the destination address (a /32 or /128) or prefix; the zero
	// Prefix matches any destination.
	Dst netip.Prefix
	// PortMin..PortMax is the destination port range; 0..0 is any.
	PortMin, PortMax uint16
	// Host is a lower-case host name or a domain wildcard `*.example.com`
	// (example.com and every name under it); it matches only connections
	// whose destination name is known.
	Host  string
	Proto flow.Proto // 0 is any

	Lifetime Lifetime
	Expires  time.Time // for Duration

	Created time.Time
	Hits    uint64
	LastHit time.Time
	Note    string
}

// Conn is what a rule is matched against.
type Conn struct {
	UID uint32
	// Exe is the executable's path, only when it is known to be the
	// host's file (flow.Process.ExeVerified); "" otherwise, so that no
	// path or glob rule matches a process that may be masquerading.
	Exe   string
	Args  []string
	Tuple flow.Tuple
	// Host is the destination name when known.
	Host string
	// SHA256 returns the executable's hex SHA-256; it is only called when
	// a rule needs it, as hashing costs a file read. nil means unknown.
	SHA256 func() (string, error)
	// Pace, when set, is called after each command-line expression is
	// matched, so that the caller can let others run between them: a
	// match against many rules is a series of bounded steps.
	Pace func()
	// SameFile reports whether the host's file at path is the file the
	// process runs (device and inode); nil means unknown. Only AnyMountNS
	// rules ask it.
	SameFile func(path string) bool
}
