package demo

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Sample prompts, rules, history and decide-later entries that look like a
// desktop's: what `make screenshots` shows.

// CurlPrompt is curl connecting to example.com:443 over IPv4.
func CurlPrompt(now time.Time, timeout time.Duration) *uiv1.Prompt {
	return &uiv1.Prompt{
		Process: &agentv1.Process{Pid: 48213, Tgid: 48213, Ppid: 48170, Uid: 1000, Gid: 1000, Comm: "curl",
			Exe: "/usr/bin/curl", Args: []string{"curl", "-fsSL", "https://example.com/install.sh"}, IdentifiedBy: "netfilter-link"},
		Flow: &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 4, SrcIp: "192.168.1.23", SrcPort: 51544,
			DstIp: "93.184.215.14", DstPort: 443},
		Host:           "example.com",
		FirstSeen:      timestamppb.New(now),
		Deadline:       timestamppb.New(now.Add(timeout)),
		DeadlineAction: rulesv1.Action_ACTION_REJECT,
		Connections:    1,
	}
}

// FirefoxPrompt is a Firefox content process with a long command line.
func FirefoxPrompt(now time.Time, timeout time.Duration) *uiv1.Prompt {
	return &uiv1.Prompt{
		Process: &agentv1.Process{Pid: 3121, Tgid: 3121, Ppid: 2987, Uid: 1000, Gid: 1000, Comm: "firefox-esr",
			Exe: "/usr/lib/firefox-esr/firefox-esr",
			Args: []string{"/usr/lib/firefox-esr/firefox-esr", "-contentproc", "-childID", "7", "-isForBrowser",
				"-prefsLen", "31042", "-prefMapSize", "244787", "-jsInitLen", "231800", "-parentBuildID", "20240812101556",
				"-appDir", "/usr/lib/firefox-esr/browser", "{8a3f1c2e-4b7d-4e1a-9c55-0d2f6b8e7a11}", "2987", "true", "tab"},
			IdentifiedBy: "netfilter-link"},
		Flow: &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 4, SrcIp: "192.168.1.23", SrcPort: 40112,
			DstIp: "34.107.221.82", DstPort: 443},
		Host:           "detectportal.firefox.com",
		FirstSeen:      timestamppb.New(now),
		Deadline:       timestamppb.New(now.Add(timeout)),
		DeadlineAction: rulesv1.Action_ACTION_REJECT,
		Connections:    3,
	}
}

// SSHv6Prompt is ssh to an IPv6 address with no known name.
func SSHv6Prompt(now time.Time, timeout time.Duration) *uiv1.Prompt {
	return &uiv1.Prompt{
		Process: &agentv1.Process{Pid: 50877, Tgid: 50877, Ppid: 2987, Uid: 1000, Gid: 1000, Comm: "ssh",
			Exe: "/usr/bin/ssh", Args: []string{"ssh", "-p", "2222", "deploy@2001:db8:4006:812::200e"}, IdentifiedBy: "sockops"},
		Flow: &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 6, SrcIp: "2001:db8:1::23", SrcPort: 42980,
			DstIp: "2001:db8:4006:812::200e", DstPort: 2222},
		FirstSeen:      timestamppb.New(now),
		Deadline:       timestamppb.New(now.Add(timeout)),
		DeadlineAction: rulesv1.Action_ACTION_REJECT,
		Connections:    1,
	}
}

// SampleRules is a small, varied rule set.
func SampleRules(now time.Time) []*rulesv1.Rule {
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(d)) }
	return []*rulesv1.Rule{
		{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: "/usr/lib/firefox-esr/firefox-esr", DstPortMin: 443, DstPortMax: 443,
			Protocol: rulesv1.Protocol_PROTOCOL_TCP, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER, Hits: 18342, LastHit: ts(-2 * time.Second),
			Created: ts(-40 * 24 * time.Hour)},
		{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: "/usr/bin/git", Host: "*.github.com",
			Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER, Hits: 211, LastHit: ts(-47 * time.Minute), Created: ts(-12 * 24 * time.Hour)},
		{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: "/usr/bin/curl", Host: "deb.debian.org", DstPortMin: 443, DstPortMax: 443,
			Protocol: rulesv1.Protocol_PROTOCOL_TCP, Lifetime: rulesv1.Lifetime_LIFETIME_DURATION, Expires: ts(42 * time.Minute),
			Hits: 3, LastHit: ts(-17 * time.Minute), Created: ts(-18 * time.Minute)},
		{Enabled: true, Action: rulesv1.Action_ACTION_DENY, Exe: "/usr/lib/firefox-esr/firefox-esr", Host: "*.telemetry.mozilla.org",
			Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER, Hits: 97, LastHit: ts(-3 * time.Hour), Created: ts(-40 * 24 * time.Hour)},
		{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: "/usr/sbin/chronyd", DstPortMin: 123, DstPortMax: 123,
			Protocol: rulesv1.Protocol_PROTOCOL_UDP, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER, Hits: 5120, LastHit: ts(-9 * time.Minute),
			Created: ts(-90 * 24 * time.Hour)},
		{Enabled: false, Action: rulesv1.Action_ACTION_REJECT, Exe: "/usr/bin/python3.11", Cmdline: `python3\.11 -m http\.server`,
			Dst: "10.0.0.0/8", Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER, Created: ts(-5 * 24 * time.Hour)},
		{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: "/opt/zoom/zoom", Lifetime: rulesv1.Lifetime_LIFETIME_SESSION,
			Hits: 64, LastHit: ts(-5 * time.Minute), Created: ts(-2 * time.Hour)},
		{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: "/usr/bin/ssh", Dst: "2001:db8:4006:812::200e", DstPortMin: 2222,
			DstPortMax: 2222, Protocol: rulesv1.Protocol_PROTOCOL_TCP, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER, Hits: 12,
			LastHit: ts(-26 * time.Hour), Created: ts(-30 * 24 * time.Hour)},
	}
}

// SampleHistory is a few recent decisions.
func SampleHistory(now time.Time) []*uiv1.HistoryEntry {
	p := CurlPrompt(now, 0)
	f := FirefoxPrompt(now, 0)
	s := SSHv6Prompt(now, 0)
	git := &agentv1.Process{Pid: 51230, Tgid: 51230, Ppid: 2987, Uid: 1000, Gid: 1000, Comm: "git", Exe: "/usr/bin/git",
		Args: []string{"git", "fetch", "origin"}, IdentifiedBy: "netfilter-link"}
	return []*uiv1.HistoryEntry{
		// The newest answer of each kind a decision can have: a deadline,
		// a rule deleted since, rules, bastionctl, a remembered answer,
		// the prompt.
		{Time: timestamppb.New(now.Add(-30 * time.Minute)), Process: s.Process, Flow: s.Flow,
			Action: rulesv1.Action_ACTION_REJECT, DecidedBy: "deadline"},
		{Time: timestamppb.New(now.Add(-20 * time.Minute)), Process: git,
			Flow: &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 4, SrcIp: "192.168.1.23", SrcPort: 46002,
				DstIp: "140.82.121.4", DstPort: 443}, Host: "github.com",
			Action: rulesv1.Action_ACTION_ALLOW, DecidedBy: "rule:00000000000000ff", RuleId: "00000000000000ff"},
		{Time: timestamppb.New(now.Add(-9 * time.Minute)), Process: f.Process, Flow: f.Flow, Host: "incoming.telemetry.mozilla.org",
			Action: rulesv1.Action_ACTION_DENY, DecidedBy: "rule:0000000000000004", RuleId: "0000000000000004"},
		{Time: timestamppb.New(now.Add(-7 * time.Minute)), Process: p.Process, Flow: p.Flow, Host: p.Host,
			Action: rulesv1.Action_ACTION_ALLOW, DecidedBy: "api:uid=1000"},
		{Time: timestamppb.New(now.Add(-4 * time.Minute)), Process: p.Process, Flow: p.Flow, Host: "deb.debian.org",
			Action: rulesv1.Action_ACTION_ALLOW, DecidedBy: "rule:0000000000000003", RuleId: "0000000000000003"},
		{Time: timestamppb.New(now.Add(-2 * time.Minute)), Process: f.Process, Flow: f.Flow, Host: "push.services.mozilla.com",
			Action: rulesv1.Action_ACTION_ALLOW, DecidedBy: "cache:c1f3"},
		{Time: timestamppb.New(now.Add(-1 * time.Minute)), Process: f.Process, Flow: f.Flow, Host: f.Host,
			Action: rulesv1.Action_ACTION_ALLOW, DecidedBy: "prompt"},
	}
}

// SampleDecideLater is a connection denied while no prompt client ran.
func SampleDecideLater(now time.Time) []*uiv1.DecideLaterEntry {
	s := SSHv6Prompt(now, 0)
	return []*uiv1.DecideLaterEntry{
		{Time: timestamppb.New(now.Add(-2 * time.Hour)), Process: &agentv1.Process{Pid: 1811, Tgid: 1811, Uid: 1000, Comm: "syncthing",
			Exe: "/usr/bin/syncthing", Args: []string{"/usr/bin/syncthing", "serve", "--no-browser"}},
			Flow: &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_UDP, IpVersion: 4, SrcIp: "192.168.1.23", SrcPort: 21027,
				DstIp: "192.168.1.255", DstPort: 21027}, Applied: rulesv1.Action_ACTION_DENY},
		{Time: timestamppb.New(now.Add(-95 * time.Minute)), Process: s.Process, Flow: s.Flow, Applied: rulesv1.Action_ACTION_DENY},
	}
}
