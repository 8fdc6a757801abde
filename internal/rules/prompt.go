package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Scope is how much of a prompted connection's destination an answer
// covers. The executable is always the prompted one.
type Scope uint8

const (
	// ScopeDestinationPort: this destination (host name when known, else
	// the address), this port and protocol.
	ScopeDestinationPort Scope = iota + 1
	// ScopeHost: this destination (host name when known, else the
	// address), any port.
	ScopeHost
	// ScopeDomain: the host's domain and every name under it
	// (`*.example.com` for www.example.com); needs a host name.
	ScopeDomain
	// ScopePort: this port and protocol, any destination.
	ScopePort
	// ScopeAny: any destination, any port.
	ScopeAny
)

func (s Scope) String() string {
	switch s {
	case ScopeDestinationPort:
		return "destination-port"
	case ScopeHost:
		return "host"
	case ScopeDomain:
		return "domain"
	case ScopePort:
		return "port"
	case ScopeAny:
		return "any"
	}
	return fmt.Sprintf("scope-%d", uint8(s))
}

// Choice is a user's answer to a prompt.
type Choice struct {
	Action   flow.Action
	Lifetime Lifetime
	For      time.Duration // how long, for Lifetime Duration
	Scope    Scope
	// WithCmdline limits the rule to this exact command line.
	WithCmdline bool
}

// ForPrompt returns exactly the rule a prompt answer makes: enabled, for
// the exact executable p.Exe (escaped, so that a path with glob characters
// names only itself), with the command line quoted when c.WithCmdline,
// and the destination operands c.Scope names. It has no ID; Created is
// now, and a Duration rule expires at now+c.For. The rule covers the
// prompted connection (Covers is true for it).
func ForPrompt(p flow.Process, t flow.Tuple, host string, c Choice, now time.Time) (Rule, error) {
	if p.Exe == "" {
		// SECURITY: a rule without Exe would decide every program's
		// connections, not the prompted one's.
		return Rule{}, errors.New("rule for prompt: the process's executable is unknown")
	}
	r := Rule{
		Enabled:  true,
		Action:   c.Action,
		Exe:      escapeGlob(p.Exe),
		Lifetime: c.Lifetime,
		Created:  now,
	}
	// SECURITY: a path rule matches only a process whose path is the
	// host's file (see flow.ExeIdentity). A process in another mount
	// namespace that runs the host's file gets a rule for that file in
	// every namespace; one whose file the host does not have at its path
	// can be answered once (the rule then decides only this prompt's
	// connections), or by a sha256 rule made by hand.
	// (ExeUnchecked: the agent matches no path rule against such a
	// process, so the rule is merely useless for it, never too broad.)
	switch p.ExeIdentity {
	case flow.ExeHost, flow.ExeUnchecked:
	case flow.ExeOtherNSHostFile:
		r.AnyMountNS = true
	default:
		if c.Lifetime != Once {
			return Rule{}, fmt.Errorf("rule for prompt: %s is not the host's file, so no path rule can name it; answer once, or add a rule by its SHA-256", p.ExeDisplay())
		}
		r.Exe = ""
	}
	switch {
	case c.Lifetime == Duration && c.For <= 0:
		return Rule{}, fmt.Errorf("rule for prompt: lifetime duration needs a positive length, not %s", c.For)
	case c.Lifetime == Duration:
		r.Expires = now.Add(c.For)
	case c.For != 0:
		return Rule{}, fmt.Errorf("rule for prompt: a length (%s) is only for lifetime duration, not %s", c.For, c.Lifetime)
	}
	if c.WithCmdline {
		if p.Args == nil {
			return Rule{}, errors.New("rule for prompt: the command line is unknown")
		}
		r.Cmdline = regexp.QuoteMeta(cmdlineOf(p.Args))
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	dst := t.Dst.WithZone("").Unmap()
	// destination sets the host name when known (and a valid name), else
	// the address.
	destination := func() error {
		if host != "" && validHostName(host) == nil {
			r.Host = host
			return nil
		}
		if !dst.IsValid() {
			return errors.New("the destination address is unknown")
		}
		r.Dst = netip.PrefixFrom(dst, dst.BitLen())
		return nil
	}
	var err error
	switch c.Scope {
	case ScopeDestinationPort:
		err = destination()
		r.PortMin, r.PortMax, r.Proto = t.DstPort, t.DstPort, t.Proto
	case ScopeHost:
		err = destination()
	case ScopeDomain:
		if host == "" {
			return Rule{}, errors.New("rule for prompt: scope domain needs the destination's host name")
		}
		r.Host = "*." + parentDomain(host)
	case ScopePort:
		r.PortMin, r.PortMax, r.Proto = t.DstPort, t.DstPort, t.Proto
	case ScopeAny:
	default:
		return Rule{}, fmt.Errorf("rule for prompt: unknown scope %d", uint8(c.Scope))
	}
	if err != nil {
		return Rule{}, fmt.Errorf("rule for prompt: scope %s: %w", c.Scope, err)
	}
	if err := r.Validate(); err != nil {
		return Rule{}, fmt.Errorf("rule for prompt: %w", err)
	}
	return r, nil
}

// parentDomain drops the first label of a name of three or more labels
// (www.example.com → example.com) and keeps shorter names whole, so that
// the domain scope never widens to a top-level domain. The wildcard covers
// the domain itself too, so the prompted name is always covered.
func parentDomain(host string) string {
	if strings.Count(host, ".") >= 2 {
		return host[strings.IndexByte(host, '.')+1:]
	}
	return host
}
