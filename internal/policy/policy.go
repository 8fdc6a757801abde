package policy

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Mode is what the system policy does with a new connection.
type Mode uint8

const (
	// ModeAsk holds the connection for the UID's prompt clients, or for an
	// administrator answering through the API, until the deadline.
	ModeAsk Mode = iota
	ModeAllow
	ModeDeny
	ModeReject
)

func (m Mode) String() string {
	switch m {
	case ModeAllow:
		return "allow"
	case ModeDeny:
		return "deny"
	case ModeReject:
		return "reject"
	}
	return "ask"
}

// Action returns the verdict a non-ask mode stands for.
func (m Mode) Action() flow.Action {
	switch m {
	case ModeAllow:
		return flow.ActionAllow
	case ModeDeny:
		return flow.ActionDeny
	case ModeReject:
		return flow.ActionReject
	}
	return flow.ActionNone
}

// ParseMode parses "ask", "allow", "deny" and "reject".
func ParseMode(s string) (Mode, error) {
	if s == "ask" {
		return ModeAsk, nil
	}
	a, err := flow.ParseAction(s)
	if err != nil {
		return 0, fmt.Errorf("unknown policy action %q (want ask, allow, deny or reject)", s)
	}
	switch a {
	case flow.ActionAllow:
		return ModeAllow, nil
	case flow.ActionDeny:
		return ModeDeny, nil
	}
	return ModeReject, nil
}

// UIDRange is an inclusive range of UIDs.
type UIDRange struct{ First, Last uint32 }

// Contains reports whether uid is in the range.
func (r UIDRange) Contains(uid uint32) bool { return uid >= r.First && uid <= r.Last }

func (r UIDRange) String() string {
	if r.First == r.Last {
		return strconv.FormatUint(uint64(r.First), 10)
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// ParseUIDRange parses "1000" or "1000-1999".
func ParseUIDRange(s string) (UIDRange, error) {
	first, last, isRange := strings.Cut(strings.TrimSpace(s), "-")
	lo, err := parseUID(first)
	if err != nil {
		return UIDRange{}, fmt.Errorf("uid range %q: %w", s, err)
	}
	hi := lo
	if isRange {
		if hi, err = parseUID(last); err != nil {
			return UIDRange{}, fmt.Errorf("uid range %q: %w", s, err)
		}
	}
	if hi < lo {
		return UIDRange{}, fmt.Errorf("uid range %q: end is below start", s)
	}
	return UIDRange{lo, hi}, nil
}

func parseUID(s string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil {
		return 0, errors.New("not a UID")
	}
	return uint32(n), nil
}

// Rule is the policy for one UID range. The first rule whose range contains
// a UID applies.
type Rule struct {
	UIDs UIDRange
	Mode Mode
	// Log makes every decision of this rule visible at Info level.
	Log bool
}

// Policy is the agent's system policy.
type Policy struct {
	Rules []Rule
	// Default applies to UIDs no rule covers.
	Default Mode
	// PromptTimeout is how long a connection is held for an answer.
	PromptTimeout time.Duration
	// TimeoutAction applies when nobody answered in time.
	TimeoutAction flow.Action
}

// Default is the policy with no configuration: root and system accounts
// (UIDs below 1000) are allowed and logged, as Bastion's prototype did;
// everyone else is asked, and rejected when nobody answers in 30 seconds:
// the program sees its connection refused at once (a TCP reset or an ICMP
// port unreachable) rather than waiting minutes for a silent drop to time
// out.
func Default() Policy {
	return Policy{
		Rules: []Rule{
			{UIDs: UIDRange{0, 999}, Mode: ModeAllow, Log: true},
			{UIDs: UIDRange{1000, math.MaxUint32 - 1}, Mode: ModeAsk},
		},
		Default:       ModeAllow,
		PromptTimeout: 30 * time.Second,
		TimeoutAction: flow.ActionReject,
	}
}

// For returns the rule that applies to uid.
func (p Policy) For(uid uint32) Rule {
	for _, r := range p.Rules {
		if r.UIDs.Contains(uid) {
			return r
		}
	}
	return Rule{UIDs: UIDRange{uid, uid}, Mode: p.Default}
}

// Validate checks that the policy can be enforced.
func (p Policy) Validate() error {
	if p.PromptTimeout <= 0 || p.PromptTimeout > time.Hour {
		return fmt.Errorf("prompt timeout %v: must be between 0 and 1h", p.PromptTimeout)
	}
	if p.TimeoutAction == flow.ActionNone {
		return errors.New("timeout action must be allow, deny or reject")
	}
	return nil
}
