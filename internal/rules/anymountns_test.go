package rules

import (
	"net/netip"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

func TestAnyMountNS(t *testing.T) {
	if err := (Rule{Enabled: true, Action: flow.ActionAllow, Exe: "/usr/bin/*", AnyMountNS: true, Lifetime: Forever}).Validate(); err == nil {
		t.Error("any_mount_ns with a glob validated")
	}
	if err := (Rule{Enabled: true, Action: flow.ActionAllow, AnyMountNS: true, Lifetime: Forever}).Validate(); err == nil {
		t.Error("any_mount_ns without exe validated")
	}
	m, err := NewMatcher([]Rule{
		{ID: "path", Enabled: true, Action: flow.ActionDeny, Exe: "/usr/bin/curl", Lifetime: Forever},
		{ID: "file", Enabled: true, Action: flow.ActionAllow, Exe: "/usr/bin/firefox", AnyMountNS: true, Lifetime: Forever},
	})
	if err != nil {
		t.Fatal(err)
	}
	tup := flow.Tuple{Proto: flow.TCP, Dst: netip.MustParseAddr("192.0.2.1"), DstPort: 443}
	isFile := func(want string) func(string) bool { return func(p string) bool { return p == want } }
	for _, tc := range []struct {
		name string
		c    Conn
		want string
	}{
		{"verified path", Conn{Exe: "/usr/bin/curl", Tuple: tup}, "path"},
		{"verified path of the file rule", Conn{Exe: "/usr/bin/firefox", Tuple: tup}, "file"},
		{"unverified: no path rule", Conn{SameFile: isFile("/nothing"), Tuple: tup}, ""},
		{"another namespace, the host's firefox", Conn{SameFile: isFile("/usr/bin/firefox"), Tuple: tup}, "file"},
		{"another namespace, the host's curl: path rules need the host namespace", Conn{SameFile: isFile("/usr/bin/curl"), Tuple: tup}, ""},
	} {
		r, ok := m.Match(tc.c, time.Now())
		got := ""
		if ok {
			got = r.ID
		}
		if got != tc.want {
			t.Errorf("%s: matched %q, want %q", tc.name, got, tc.want)
		}
	}
	// The rule file and wire forms keep the flag.
	r := Rule{ID: "f", Enabled: true, Action: flow.ActionAllow, Exe: "/usr/bin/firefox", AnyMountNS: true, Lifetime: Forever}
	if back, err := FromProto(ToProto(r)); err != nil || !back.AnyMountNS {
		t.Errorf("proto round trip: %+v, %v", back, err)
	}
}

func TestForPromptByIdentity(t *testing.T) {
	tup := flow.Tuple{Proto: flow.TCP, Dst: netip.MustParseAddr("192.0.2.1"), DstPort: 443}
	forever := Choice{Action: flow.ActionAllow, Lifetime: Forever, Scope: ScopeDestinationPort}
	once := Choice{Action: flow.ActionAllow, Lifetime: Once, Scope: ScopeDestinationPort}
	p := flow.Process{UID: 1000, Exe: "/usr/bin/curl", ExeIdentity: flow.ExeOtherNSHostFile, MntNS: 7}
	r, err := ForPrompt(p, tup, "", forever, time.Now())
	if err != nil || !r.AnyMountNS || r.Exe != "/usr/bin/curl" {
		t.Errorf("host file in another namespace: %+v, %v; want an any_mount_ns rule", r, err)
	}
	p.ExeIdentity = flow.ExeOtherNS
	if _, err := ForPrompt(p, tup, "", forever, time.Now()); err == nil {
		t.Error("a path rule was made for a process whose path is not the host's file")
	}
	r, err = ForPrompt(p, tup, "", once, time.Now())
	if err != nil || r.Exe != "" || r.AnyMountNS {
		t.Errorf("once for a foreign file: %+v, %v; want a rule for this prompt only, without exe", r, err)
	}
}
