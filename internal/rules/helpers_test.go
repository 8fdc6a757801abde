package rules

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from golden file (run with -update if intended):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

var (
	t0  = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
	sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)

func pfx(s string) netip.Prefix {
	p, err := parseDst(s)
	if err != nil {
		panic(err)
	}
	return p
}

// sampleRules uses every field and form at least once.
func sampleRules() []Rule {
	return []Rule{
		{ID: "a1", Enabled: true, Action: flow.ActionAllow, Exe: "/usr/bin/curl", Lifetime: Forever, Created: t0},
		{ID: "a2", Enabled: false, Action: flow.ActionDeny, Exe: "/usr/lib/firefox/**", ExeSHA256: sha,
			Cmdline: `firefox --profile \S+`, Dst: pfx("192.0.2.0/24"), PortMin: 8000, PortMax: 8999, Proto: flow.TCP,
			Lifetime: Duration, Expires: t0.Add(5 * time.Minute), Created: t0, Hits: 42, LastHit: t0.Add(time.Second),
			Note: "multi\nline \"quoted\" note ünïcode"},
		{ID: "a3", Enabled: true, Action: flow.ActionReject, Host: "*.example.com", PortMin: 443, PortMax: 443, Proto: flow.UDP, Lifetime: Session},
		{ID: "a4", Enabled: true, Action: flow.ActionAllow, Dst: pfx("2001:db8::1"), Proto: flow.ICMPv6, Lifetime: Once},
		{Enabled: true, Action: flow.ActionDeny, Exe: `/tmp/we\*ird [x]`, Host: "api.example.org", Dst: pfx("10.0.0.0/8"), Lifetime: Forever},
		{ID: "a6", Enabled: true, Action: flow.ActionAllow, Dst: pfx("198.51.100.7"), Proto: flow.ICMP, Lifetime: Forever, Hits: 1 << 40},
		{ID: "a7", Enabled: true, Action: flow.ActionAllow, PortMin: 5000, PortMax: 5001, Proto: flow.UDPLite, Lifetime: Forever},
		{ID: "a8", Enabled: true, Action: flow.ActionDeny, Exe: "/usr/bin/tunnel", Proto: 253, Lifetime: Forever},
	}
}
