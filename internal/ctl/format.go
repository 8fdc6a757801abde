package ctl

// Readable descriptions of rules, processes and flows.

import (
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/inert"
	"github.com/bastion-fw/bastion/internal/rules"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

func ruleActionName(a rulesv1.Action) string {
	if a == rulesv1.Action_ACTION_UNSPECIFIED {
		return "-"
	}
	return strings.TrimPrefix(strings.ToLower(a.String()), "action_")
}

// ruleProtoName is a rule's protocol ("tcp", "udplite", "proto-253"), ""
// for any.
func ruleProtoName(r *rulesv1.Rule) string { return rules.ProtocolName(r) }

// flowProtoName is a flow's protocol, as ruleProtoName writes it.
func flowProtoName(f *agentv1.Flow) string { return apiconv.FlowProtoName(f) }

// ruleDestination describes a rule's destination operands, e.g.
// "tcp example.com:443", "udp *:53", "10.0.0.0/8" or "anywhere".
func ruleDestination(r *rulesv1.Rule) string {
	where, ports := rules.DestinationText(r)
	var s string
	switch {
	case ports != "" && where == "":
		s = "*:" + ports
	case ports != "" && strings.Contains(where, ":"):
		s = "[" + where + "]:" + ports
	case ports != "":
		s = where + ":" + ports
	default:
		s = where
	}
	if p := ruleProtoName(r); p != "" {
		if s == "" {
			return p + " anywhere"
		}
		return p + " " + s
	}
	if s == "" {
		return "anywhere"
	}
	return s
}

// ruleLifetime describes how long a rule applies, with the time left for
// Duration rules.
func ruleLifetime(r *rulesv1.Rule, now time.Time, loc *time.Location) string {
	switch r.GetLifetime() {
	case rulesv1.Lifetime_LIFETIME_ONCE:
		return "once"
	case rulesv1.Lifetime_LIFETIME_SESSION:
		return "until logout"
	case rulesv1.Lifetime_LIFETIME_DURATION:
		exp := r.GetExpires().AsTime()
		left := exp.Sub(now)
		if left <= 0 {
			return "expired " + exp.In(loc).Format(time.DateTime)
		}
		return fmt.Sprintf("until %s (%s left)", exp.In(loc).Format(time.DateTime), rules.ShortDuration(left))
	case rulesv1.Lifetime_LIFETIME_FOREVER:
		return "forever"
	}
	return "-"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printRuleTable prints rules as an aligned table. Every cell goes
// through inert: a rule's exe, command line and host come from prompts,
// that is from the programs that connected, and from imported files.
func printRuleTable(w io.Writer, rs []*rulesv1.Rule, now time.Time, loc *time.Location) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tON\tACTION\tAPP\tDESTINATION\tCMDLINE\tLIFETIME\tHITS\tLAST HIT")
	for _, r := range rs {
		on := "yes"
		if !r.GetEnabled() {
			on = "no"
		}
		app := inert.String(r.GetExe())
		if app == "" {
			app = "*"
		}
		if r.GetExeSha256() != "" {
			app += " sha256:" + inert.Elide(r.GetExeSha256(), 9)
		}
		last := "never"
		if r.GetLastHit() != nil {
			last = r.GetLastHit().AsTime().In(loc).Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", orDash(inert.String(r.GetId())), on, ruleActionName(r.GetAction()), app,
			inert.String(ruleDestination(r)), orDash(inert.Elide(r.GetCmdline(), 40)), ruleLifetime(r, now, loc), r.GetHits(), last)
	}
	tw.Flush()
}

// printRule prints one rule in full, one field a line.
func printRule(w io.Writer, r *rulesv1.Rule, now time.Time, loc *time.Location) {
	state := "enabled"
	if !r.GetEnabled() {
		state = "disabled"
	}
	if r.GetId() != "" {
		fmt.Fprintf(w, "rule %s (%s)\n", inert.String(r.GetId()), state)
	} else {
		fmt.Fprintf(w, "rule (%s)\n", state)
	}
	field := func(k, v string) { fmt.Fprintf(w, "  %-12s %s\n", k+":", inert.String(v)) }
	field("action", ruleActionName(r.GetAction()))
	app := r.GetExe()
	if app == "" {
		app = "any program"
	}
	field("app", app)
	if r.GetCmdline() != "" {
		field("cmdline", r.GetCmdline())
	}
	if r.GetExeSha256() != "" {
		field("sha256", r.GetExeSha256())
	}
	field("destination", ruleDestination(r))
	field("lifetime", ruleLifetime(r, now, loc))
	if r.GetNote() != "" {
		field("note", r.GetNote())
	}
	if r.GetCreated() != nil {
		field("created", r.GetCreated().AsTime().In(loc).Format(time.DateTime))
	}
	if r.GetHits() > 0 || r.GetLastHit() != nil {
		last := "never"
		if r.GetLastHit() != nil {
			last = r.GetLastHit().AsTime().In(loc).Format(time.DateTime)
		}
		field("hits", fmt.Sprintf("%d, last %s", r.GetHits(), last))
	}
}

// appName is the base name of a process's executable, or its kernel
// name, made inert.
func appName(p *agentv1.Process) string {
	if p.GetExe() != "" {
		return inert.String(path.Base(p.GetExe()))
	}
	if p.GetComm() != "" {
		return "[" + inert.String(p.GetComm()) + "]"
	}
	return "unknown program"
}

// flowDestination is "host (ip) port" / "ip port" with brackets for IPv6,
// made inert.
func flowDestination(f *agentv1.Flow, host string) string {
	host = inert.String(host)
	dst := inert.String(f.GetDstIp())
	if f.GetIpVersion() == 6 {
		dst = "[" + dst + "]"
	}
	if f.GetDstPort() != 0 {
		dst += ":" + strconv.FormatUint(uint64(f.GetDstPort()), 10)
	}
	if host != "" {
		return host + " " + dst
	}
	return dst
}
