package dnsnames

import (
	"net/netip"
	"testing"
	"time"
)

// TestUniform: Uniform says whether every process of a UID is told one name
// for an address — which Lookup, for any process, must then return — and
// OnChange hears of every change that could make it say otherwise.
func TestUniform(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var changed []netip.Addr
	c := NewCache(CacheConfig{Now: func() time.Time { return now }, Grace: -1, OnChange: func(a netip.Addr) { changed = append(changed, a) }})
	ip := netip.MustParseAddr("192.0.2.66")
	check := func(what string, wantName string, wantOK bool) {
		t.Helper()
		name, _, ok := c.Uniform(1000, ip)
		if ok != wantOK || (ok && name != wantName) {
			t.Fatalf("%s: Uniform = %q, %v; want %q, %v", what, name, ok, wantName, wantOK)
		}
		if !ok {
			return
		}
		// What it promises: every process, with or without an answer
		// of its own, is told that name.
		for _, o := range []Owner{{UID: 1000}, aliceP10, aliceP11, {UID: 1000, TGID: 99}} {
			if got, _ := c.Lookup(o, ip); got != wantName {
				t.Fatalf("%s: Uniform promised %q, Lookup(%v) = %q", what, wantName, o, got)
			}
		}
	}
	check("no names", "", true)
	c.Add(bob, answer("bob.example", "192.0.2.66"))
	check("another user's name", "", true)
	c.Add(aliceP10, answer("good.example", "192.0.2.66"))
	check("one answer", "good.example", true)
	if len(changed) == 0 || changed[len(changed)-1] != ip {
		t.Fatalf("OnChange not told of the answer: %v", changed)
	}
	c.Add(aliceP11, answer("evil.example", "192.0.2.66"))
	check("two processes, two names", "", false)
	_, until, _ := c.Uniform(1000, netip.MustParseAddr("192.0.2.67"))
	if !until.IsZero() {
		t.Fatalf("an address without names has an end: %v", until)
	}
	// Once everything has expired, the UID is told nothing, uniformly.
	now = now.Add(2 * time.Hour)
	n := len(changed)
	c.Sweep()
	if len(changed) == n {
		t.Fatal("OnChange not told of expired entries")
	}
	check("all expired", "", true)
}
