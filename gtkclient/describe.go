package gtkclient

// Readable descriptions of processes, flows and rules, shared by the
// prompt and the main window.

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/inert"
	"github.com/bastion-fw/bastion/internal/procinfo"
	"github.com/bastion-fw/bastion/internal/rules"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// exeName is the base name of a process's executable, or its kernel name.
func exeName(p *agentv1.Process) string {
	if p.GetExe() != "" {
		return path.Base(p.GetExe())
	}
	if p.GetComm() != "" {
		return "[" + p.GetComm() + "]"
	}
	return "unknown program"
}

func actionName(a rulesv1.Action) string {
	switch a {
	case rulesv1.Action_ACTION_ALLOW:
		return "allow"
	case rulesv1.Action_ACTION_DENY:
		return "deny"
	case rulesv1.Action_ACTION_REJECT:
		return "reject"
	}
	return "-"
}

// protoName is how people write a flow's protocol: "TCP", "UDP-Lite",
// "protocol 253".
func protoName(f *agentv1.Flow) string {
	return displayProto(apiconv.Proto(f.GetProtocol(), f.GetProtocolNumber()))
}

func displayProto(p flow.Proto) string {
	switch p {
	case 0:
		return "unknown protocol"
	case flow.ICMPv6:
		return "ICMPv6"
	case flow.UDPLite:
		return "UDP-Lite"
	}
	if n := p.String(); !strings.HasPrefix(n, "proto-") {
		return strings.ToUpper(n)
	}
	return "protocol " + strconv.Itoa(int(p))
}

// target is what a prompt's title names: "example.com:443",
// "[2001:db8::1]:22" or "10.0.0.1".
func target(f *agentv1.Flow, host string) string {
	to := host
	if to == "" {
		to = f.GetDstIp()
		if f.GetIpVersion() == 6 && f.GetDstPort() != 0 {
			to = "[" + to + "]"
		}
	}
	if f.GetDstPort() != 0 {
		to += ":" + strconv.FormatUint(uint64(f.GetDstPort()), 10)
	}
	return to
}

// destinationText is "example.com (93.184.216.34)" or the address alone.
func destinationText(f *agentv1.Flow, host string) string {
	if host != "" {
		return host + " (" + f.GetDstIp() + ")"
	}
	return f.GetDstIp()
}

// portText is "443 (https) · TCP · IPv4".
func portText(f *agentv1.Flow, svc *procinfo.Services) string {
	proto := protoName(f)
	var parts []string
	if p := apiconv.Proto(f.GetProtocol(), f.GetProtocolNumber()); p.HasPorts() && f.GetDstPort() != 0 {
		parts = append(parts, "port "+svc.DescribePort(p.String(), uint16(f.GetDstPort())))
	}
	parts = append(parts, proto, fmt.Sprintf("IPv%d", f.GetIpVersion()))
	return strings.Join(parts, " · ")
}

// ruleDestination describes a rule's destination operands: "TCP
// example.com:443", "UDP port 53", "10.0.0.0/8" or "anywhere".
func ruleDestination(r *rulesv1.Rule) string {
	where, ports := rules.DestinationText(r)
	var s string
	switch {
	case ports != "" && where == "":
		s = "port " + ports
	case ports != "" && strings.Contains(where, ":"):
		s = "[" + where + "]:" + ports
	case ports != "":
		s = where + ":" + ports
	case where == "":
		s = "anywhere"
	default:
		s = where
	}
	if p := ruleProtoName(r); p != "" {
		return p + " " + s
	}
	return s
}

// ruleProtoName is a rule's protocol as protoName writes it, "" for any.
func ruleProtoName(r *rulesv1.Rule) string {
	if p := rules.ProtocolOf(r); p != 0 {
		return displayProto(p)
	}
	return ""
}

// ruleLifetime is "forever", "until logout", "once", or "42m left" for a
// Duration rule ("expired" once it has).
func ruleLifetime(r *rulesv1.Rule, now time.Time) string {
	switch r.GetLifetime() {
	case rulesv1.Lifetime_LIFETIME_ONCE:
		return "once"
	case rulesv1.Lifetime_LIFETIME_SESSION:
		return "until logout"
	case rulesv1.Lifetime_LIFETIME_FOREVER:
		return "forever"
	case rulesv1.Lifetime_LIFETIME_DURATION:
		left := r.GetExpires().AsTime().Sub(now)
		if left <= 0 {
			return "expired"
		}
		return roughDuration(left) + " left"
	}
	return "-"
}

// ruleApp is the rule's program: the executable, "any program", plus the
// command line when set.
func ruleApp(r *rulesv1.Rule) string {
	app := r.GetExe()
	if app == "" {
		app = "any program"
	}
	if r.GetExeSha256() != "" {
		app += " (sha256 " + inert.Elide(r.GetExeSha256(), 12) + ")"
	}
	return app
}

// ruleSentence is the whole rule in one line, as the prompt previews it:
// "/usr/bin/curl → TCP example.com:443, for 1 hour (until 15:04)".
func ruleSentence(r *rulesv1.Rule, now time.Time, loc *time.Location) string {
	var b strings.Builder
	b.WriteString(ruleApp(r))
	if r.GetCmdline() != "" {
		b.WriteString(" with command line matching \"" + inert.Elide(r.GetCmdline(), 80) + "\"")
	}
	b.WriteString(" → " + ruleDestination(r))
	switch r.GetLifetime() {
	case rulesv1.Lifetime_LIFETIME_ONCE:
		b.WriteString(", this time only (not stored)")
	case rulesv1.Lifetime_LIFETIME_SESSION:
		b.WriteString(", until logout")
	case rulesv1.Lifetime_LIFETIME_FOREVER:
		b.WriteString(", forever")
	case rulesv1.Lifetime_LIFETIME_DURATION:
		exp := r.GetExpires().AsTime()
		fmt.Fprintf(&b, ", for %s (until %s)", rules.ShortDuration(exp.Sub(now)), exp.In(loc).Format("15:04"))
	}
	return b.String()
}

// roughDuration is shortDuration without the seconds past a minute.
func roughDuration(d time.Duration) string {
	if d >= time.Minute && d < time.Hour {
		return fmt.Sprintf("%dm", int((d+time.Minute-1)/time.Minute))
	}
	return rules.ShortDuration(d)
}

// ago is "just now", "5m ago", "3h ago", or a date for older times.
func ago(t, now time.Time, loc *time.Location) string {
	d := now.Sub(t)
	switch {
	case t.IsZero():
		return "never"
	case d < 10*time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return t.In(loc).Format("2006-01-02")
}

// ruleShort names a rule in a few words: its note when it has one, else
// "Allow curl → TCP deb.debian.org:443".
func ruleShort(r *rulesv1.Rule) string {
	if n := strings.TrimSpace(r.GetNote()); n != "" {
		return inert.Elide(n, 60)
	}
	app := "any program"
	if r.GetExe() != "" {
		app = path.Base(r.GetExe())
	}
	return capitalize(actionName(r.GetAction())) + " " + app + " → " + ruleDestination(r)
}

// decidedByText says in words who or what decided a connection, from the
// decided_by string of the agent ("rule:ID", "cache:ID", "policy",
// "deadline", "api:uid=N", "unparsed") or the rules service ("prompt",
// "default", "deadline"). rule looks a rule up by ID (nil: not found),
// or is nil while the rules are not known yet; uid is the user's own UID.
// The tooltip is the rule in full, if any.
func decidedByText(by, ruleID string, rule func(id string) *rulesv1.Rule, uid uint32, now time.Time, loc *time.Location) (text, tooltip string) {
	if id, ok := strings.CutPrefix(by, "rule:"); ok && ruleID == "" {
		ruleID = id
	}
	switch {
	case strings.HasPrefix(by, "rule:"):
		if rule == nil {
			return "a rule", "rule " + inert.String(ruleID)
		}
		r := rule(ruleID)
		if r == nil {
			return "a rule deleted since", "rule " + inert.String(ruleID)
		}
		return "rule “" + inert.String(ruleShort(r)) + "”", inert.String(capitalize(actionName(r.GetAction())) + " " + ruleSentence(r, now, loc))
	case by == "prompt":
		return "you, in the prompt", ""
	case by == "default":
		return "no prompt client was running (your silent action)", ""
	case by == "deadline":
		return "nobody answered in time", ""
	case strings.HasPrefix(by, "cache:"):
		return "an earlier answer of yours", ""
	case by == "policy":
		return "the agent's policy for your account", ""
	case by == "unparsed":
		return "the agent (a packet it could not read)", ""
	case strings.HasPrefix(by, "api:uid="):
		n := strings.TrimPrefix(by, "api:uid=")
		switch {
		case n == strconv.FormatUint(uint64(uid), 10):
			return "you, through bastionctl", ""
		case n == "0":
			return "root, through bastionctl", ""
		}
		return "user " + inert.String(n) + ", through bastionctl", ""
	case by == "":
		return "-", ""
	}
	return inert.String(by), ""
}
