package agent

import (
	"slices"
	"testing"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
)

// masquerader shows /usr/bin/curl from a mount namespace of its own (a bind
// mount of another program over the path): UID 1000, like curl1000.
var masquerader = flow.Process{PID: 80, TGID: 80, UID: 1000, GID: 1000, Comm: "curl", Exe: "/usr/bin/curl",
	Source: "test", MntNS: 4026532999, ExeDev: 8 << 20, ExeIno: 424242, ExeIdentity: flow.ExeOtherNS}

// TestMasqueraderGetsNothingOfCurls: a rule for /usr/bin/curl, a cached
// decision made for the real curl and the real curl's pending entry all
// leave a process alone that only shows curl's path.
func TestMasqueraderGetsNothingOfCurls(t *testing.T) {
	e, r, _ := newRuleEngine(t)
	defer e.WatchPending(alice).Cancel()

	// A pending entry of the real curl is not joined by the masquerader.
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.1", 40001, 443), masquerader)
	list := e.ListPending(alice)
	if len(list) != 2 {
		t.Fatalf("pending entries %d, want 2 (curl and the masquerader apart)", len(list))
	}
	var curlID string
	for _, p := range list {
		if p.Process.TGID == curl1000.TGID {
			curlID = p.ID
		}
	}
	// A decision for the real curl, cached for the destination, does not
	// cover the masquerader's next connection.
	if _, _, err := e.Decide(alice, DecideRequest{ID: curlID, Action: flow.ActionAllow, Scope: ScopeDestinationPort}); err != nil {
		t.Fatal(err)
	}
	if got := r.verdict(1); got != flow.ActionAllow {
		t.Fatalf("curl's packet: %v, want allow", got)
	}
	if got := r.verdict(2); got != flow.ActionNone {
		t.Fatalf("masquerader's packet decided %v with curl's answer", got)
	}
	e.Handle(PacketRef{ID: 3}, tcp("192.0.2.1", 40002, 443), masquerader)
	if got := r.verdict(3); got != flow.ActionNone {
		t.Errorf("masquerader's new connection: %v from curl's cached decision", got)
	}
	e.Handle(PacketRef{ID: 4}, tcp("192.0.2.1", 40003, 443), curl1000)
	if got := r.verdict(4); got != flow.ActionAllow {
		t.Errorf("curl's new connection: %v, want allow from the cache", got)
	}

	// A path rule for curl matches curl, not the masquerader; a rule for
	// the file in every mount namespace does not either (another file).
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{
		{ID: "curl", Enabled: true, Action: flow.ActionAllow, Exe: "/usr/bin/curl", Lifetime: rules.Forever},
		{ID: "curl-anywhere", Enabled: true, Action: flow.ActionAllow, Exe: "/usr/bin/curl", AnyMountNS: true, Lifetime: rules.Forever},
	}}); err != nil {
		t.Fatal(err)
	}
	e.Handle(PacketRef{ID: 5}, tcp("198.51.100.1", 40004, 80), masquerader)
	if got := r.verdict(5); got != flow.ActionNone {
		t.Errorf("masquerader under a curl rule: %v, want held", got)
	}
	e.Handle(PacketRef{ID: 6}, tcp("198.51.100.1", 40005, 80), curl1000)
	if got := r.verdict(6); got != flow.ActionAllow {
		t.Errorf("curl under a curl rule: %v, want allow", got)
	}
	// Deleted or replaced since it started: no path rule either.
	deleted := curl1000
	deleted.TGID, deleted.PID, deleted.ExeIdentity = 81, 81, flow.ExeDeleted
	e.Handle(PacketRef{ID: 7}, tcp("198.51.100.2", 40006, 80), deleted)
	if got := r.verdict(7); got != flow.ActionNone {
		t.Errorf("deleted curl under a curl rule: %v, want held", got)
	}
}

// TestMergedEntryKeepsEveryProcess: two processes of one program to one
// destination share a pending entry that lists both, and each packet's
// decision names its own process.
func TestMergedEntryKeepsEveryProcess(t *testing.T) {
	e, _, _ := newTestEngine(t)
	defer e.WatchPending(alice).Cancel()
	decisions := e.WatchDecisions(alice)
	defer decisions.Cancel()
	a, b := curl1000, curl1000
	a.PID, a.TGID, a.Args = 18993, 18993, []string{"curl", "/a"}
	b.PID, b.TGID, b.Args = 19021, 19021, []string{"curl", "/b"}
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), a)
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.1", 40001, 443), b)
	e.Handle(PacketRef{ID: 3}, tcp("192.0.2.1", 40002, 443), a) // a again: listed once
	list := e.ListPending(alice)
	if len(list) != 1 {
		t.Fatalf("pending entries %d, want 1", len(list))
	}
	p := list[0]
	if len(p.Processes) != 2 || p.Processes[0].TGID != a.TGID || p.Processes[1].TGID != b.TGID || p.MoreProcesses != 0 {
		t.Fatalf("entry lists %+v (+%d), want %d then %d", p.Processes, p.MoreProcesses, a.TGID, b.TGID)
	}
	if _, _, err := e.Decide(alice, DecideRequest{ID: p.ID, Action: flow.ActionAllow}); err != nil {
		t.Fatal(err)
	}
	for i, want := range []flow.Process{a, b, a} {
		d := next(t, decisions)
		if d.Process.TGID != want.TGID || !slices.Equal(d.Process.Args, want.Args) {
			t.Errorf("decision %d names PID %d %q, want %d %q", i, d.Process.TGID, d.Process.Args, want.TGID, want.Args)
		}
	}

	// Past maxListedProcesses, the others are counted.
	for i := range maxListedProcesses + 3 {
		q := curl1000
		q.PID, q.TGID = uint32(30000+i), uint32(30000+i)
		e.Handle(PacketRef{ID: uint32(100 + i)}, tcp("192.0.2.9", uint16(41000+i), 443), q)
	}
	list = e.ListPending(alice)
	if len(list) != 1 || len(list[0].Processes) != maxListedProcesses || list[0].MoreProcesses != 3 {
		t.Errorf("entry of %d processes lists %d and counts %d more, want %d and 3",
			maxListedProcesses+3, len(list[0].Processes), list[0].MoreProcesses, maxListedProcesses)
	}
}
