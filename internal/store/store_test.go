package store

import (
	"context"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func openTest(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := OpenWithOptions(filepath.Join(t.TempDir(), "sub", "rules.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// fullRule sets every field to a value other than its zero value.
func fullRule() rules.Rule {
	loc := time.FixedZone("UTC+5:30", 5*3600+1800)
	return rules.Rule{
		ID:        "0123456789abcdef",
		Enabled:   true,
		Action:    flow.ActionReject,
		Exe:       "/usr/lib/**/firefox-?",
		Cmdline:   `^-P\s+default$`,
		ExeSHA256: strings.Repeat("ab", 32),
		Dst:       netip.MustParsePrefix("2001:db8::/32"),
		PortMin:   1000,
		PortMax:   65535,
		Host:      "*.example.com",
		Proto:     flow.UDP,
		Lifetime:  rules.Duration,
		Expires:   time.Date(2031, 2, 3, 4, 5, 6, 789012345, loc),
		Created:   time.Date(2026, 1, 2, 3, 4, 5, 6, loc),
		Hits:      42,
		LastHit:   time.Date(2026, 1, 3, 3, 4, 5, 999999999, time.UTC),
		Note:      "ünïcode note\nwith a newline and 'quotes'",
	}
}

func TestRuleRoundTrip(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	in := []rules.Rule{
		fullRule(),
		// Zero operands, a /32 written non-canonically, Forever.
		{ID: "minimal", Action: flow.ActionAllow, Lifetime: rules.Forever, Created: time.Unix(1, 1),
			Dst: netip.MustParsePrefix("10.1.2.3/8")},
		{ID: "v4", Action: flow.ActionDeny, Lifetime: rules.Forever, Created: time.Unix(2, 0),
			Dst: netip.MustParsePrefix("192.0.2.7/32"), PortMin: 53, PortMax: 53, Proto: flow.TCP},
	}
	for _, r := range in {
		got, err := s.AddRule(ctx, r)
		if err != nil {
			t.Fatalf("AddRule(%s): %v", r.ID, err)
		}
		want := normalizeForTest(r)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("AddRule returned\n%+v\nwant\n%+v", got, want)
		}
	}
	got, err := s.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Fatalf("Rules() returned %d rules, want %d", len(got), len(in))
	}
	for i := range in {
		want := normalizeForTest(in[i])
		if !reflect.DeepEqual(got[i], want) {
			t.Errorf("rule %d read back as\n%+v\nwant\n%+v", i, got[i], want)
		}
		if got[i].Created.Location() != time.UTC {
			t.Errorf("rule %d Created location %v, want UTC", i, got[i].Created.Location())
		}
	}
	// Nanoseconds survive.
	if got[0].Expires.Nanosecond() != 789012345 {
		t.Errorf("Expires nanoseconds = %d", got[0].Expires.Nanosecond())
	}
}

// normalizeForTest is the form a rule is read back in, written out
// independently of the store's normalize.
func normalizeForTest(r rules.Rule) rules.Rule {
	conv := func(t time.Time) time.Time {
		if t.IsZero() {
			return t
		}
		return time.Unix(0, t.UnixNano()).UTC()
	}
	r.Expires, r.Created, r.LastHit = conv(r.Expires), conv(r.Created), conv(r.LastHit)
	return r
}

func TestAddRuleAssigns(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	before := time.Now()
	seen := map[string]bool{}
	for range 100 {
		r, err := s.AddRule(ctx, rules.Rule{Action: flow.ActionAllow, Lifetime: rules.Forever, Exe: "/bin/true"})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.ID) != 16 || strings.Trim(r.ID, "0123456789abcdef") != "" {
			t.Fatalf("assigned ID %q is not 16 lower-case hex characters", r.ID)
		}
		if seen[r.ID] {
			t.Fatalf("ID %q assigned twice", r.ID)
		}
		seen[r.ID] = true
		if r.Created.Before(before.Truncate(time.Second)) || r.Created.After(time.Now()) || r.Created.Location() != time.UTC {
			t.Fatalf("Created = %v, want now in UTC", r.Created)
		}
	}
	_, err := s.AddRule(ctx, rules.Rule{ID: "dup", Action: flow.ActionAllow, Lifetime: rules.Forever})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.AddRule(ctx, rules.Rule{ID: "dup", Action: flow.ActionDeny, Lifetime: rules.Forever})
	if !errors.Is(err, ErrExists) {
		t.Errorf("AddRule with an existing ID: %v, want ErrExists", err)
	}
}

func TestAddRuleRejects(t *testing.T) {
	ok := rules.Rule{Action: flow.ActionAllow, Lifetime: rules.Forever}
	for _, tc := range []struct {
		name    string
		edit    func(*rules.Rule)
		wantErr string
	}{
		{"once", func(r *rules.Rule) { r.Lifetime = rules.Once }, "lifetime Once rules are never stored"},
		{"session", func(r *rules.Rule) { r.Lifetime = rules.Session }, "lifetime Session rules are never stored"},
		{"no lifetime", func(r *rules.Rule) { r.Lifetime = 0 }, "invalid lifetime 0"},
		{"duration without expiry", func(r *rules.Rule) { r.Lifetime = rules.Duration }, "needs an expiry"},
		{"no action", func(r *rules.Rule) { r.Action = flow.ActionNone }, "invalid action 0"},
		{"reversed ports", func(r *rules.Rule) { r.PortMin, r.PortMax = 80, 79 }, "reversed"},
		{"invalid prefix", func(r *rules.Rule) { r.Dst = netip.PrefixFrom(netip.MustParseAddr("10.0.0.1"), 99) }, "invalid destination prefix"},
		{"time out of range", func(r *rules.Rule) { r.Created = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC) }, "outside the storable range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, Options{})
			r := ok
			tc.edit(&r)
			_, err := s.AddRule(t.Context(), r)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("AddRule: %v, want an error containing %q", err, tc.wantErr)
			}
			if rs, err := s.Rules(t.Context()); err != nil || len(rs) != 0 {
				t.Fatalf("after a rejected AddRule, Rules() = %v, %v; want none", rs, err)
			}
		})
	}
}

func TestUpdateDeleteRule(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	orig, err := s.AddRule(ctx, fullRule())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RecordHits(ctx, map[string]Hit{orig.ID: {Count: 8, Last: orig.LastHit.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}

	// An edit from a stale read: Hits/LastHit in it are ignored, a zero
	// Created keeps the stored one.
	edit := orig
	edit.Enabled = false
	edit.Action = flow.ActionAllow
	edit.Dst = netip.Prefix{}
	edit.Lifetime = rules.Forever
	edit.Expires = time.Time{}
	edit.Note = ""
	edit.Hits = 0
	edit.LastHit = time.Time{}
	edit.Created = time.Time{}
	if err := s.UpdateRule(ctx, edit); err != nil {
		t.Fatal(err)
	}
	want := edit
	want.Hits = 50
	want.LastHit = orig.LastHit.Add(time.Hour)
	want.Created = orig.Created
	rs, err := s.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || !reflect.DeepEqual(rs[0], want) {
		t.Fatalf("after UpdateRule, Rules() =\n%+v\nwant\n%+v", rs, want)
	}

	newCreated := time.Date(2020, 1, 1, 0, 0, 0, 1, time.UTC)
	edit.Created = newCreated
	if err := s.UpdateRule(ctx, edit); err != nil {
		t.Fatal(err)
	}
	if rs, _ := s.Rules(ctx); !rs[0].Created.Equal(newCreated) {
		t.Errorf("a non-zero Created was not written: %v", rs[0].Created)
	}

	session := edit
	session.Lifetime = rules.Session
	if err := s.UpdateRule(ctx, session); err == nil {
		t.Error("UpdateRule to a Session lifetime succeeded")
	}
	missing := edit
	missing.ID = "missing"
	if err := s.UpdateRule(ctx, missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateRule(missing) = %v, want ErrNotFound", err)
	}
	if err := s.DeleteRule(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteRule(missing) = %v, want ErrNotFound", err)
	}
	if err := s.DeleteRule(ctx, orig.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRule(ctx, orig.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteRule = %v, want ErrNotFound", err)
	}
	if rs, err := s.Rules(ctx); err != nil || len(rs) != 0 {
		t.Errorf("after DeleteRule, Rules() = %v, %v", rs, err)
	}
}

func TestRecordHits(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	a, err := s.AddRule(ctx, rules.Rule{ID: "a", Action: flow.ActionAllow, Lifetime: rules.Forever, Hits: 5, LastHit: t0})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.AddRule(ctx, rules.Rule{ID: "b", Action: flow.ActionDeny, Lifetime: rules.Forever})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		hits         map[string]Hit
		wantA, wantB uint64
		lastA, lastB time.Time
	}{
		{map[string]Hit{"a": {3, t0.Add(time.Second)}, "b": {1, t0}, "gone": {7, t0}}, 8, 1, t0.Add(time.Second), t0},
		// An older Last does not move LastHit back.
		{map[string]Hit{"a": {1, t0.Add(-time.Hour)}}, 9, 1, t0.Add(time.Second), t0},
		// Counts saturate instead of wrapping.
		{map[string]Hit{"b": {^uint64(0), t0.Add(time.Nanosecond)}}, 9, 1<<63 - 1, t0.Add(time.Second), t0.Add(time.Nanosecond)},
		{map[string]Hit{"b": {10, t0}}, 9, 1<<63 - 1, t0.Add(time.Second), t0.Add(time.Nanosecond)},
		{nil, 9, 1<<63 - 1, t0.Add(time.Second), t0.Add(time.Nanosecond)},
	}
	for i, st := range steps {
		if err := s.RecordHits(ctx, st.hits); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		rs, err := s.Rules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rs[0].ID != a.ID || rs[1].ID != b.ID {
			t.Fatalf("order changed: %v", rs)
		}
		if rs[0].Hits != st.wantA || rs[1].Hits != st.wantB || !rs[0].LastHit.Equal(st.lastA) || !rs[1].LastHit.Equal(st.lastB) {
			t.Errorf("step %d: hits a=%d@%v b=%d@%v, want a=%d@%v b=%d@%v", i,
				rs[0].Hits, rs[0].LastHit, rs[1].Hits, rs[1].LastHit, st.wantA, st.lastA, st.wantB, st.lastB)
		}
	}
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "rules.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	// A write creates the WAL; it must be as private as the database.
	if _, err := s.AddRule(t.Context(), rules.Rule{Action: flow.ActionAllow, Lifetime: rules.Forever}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{
		dir: 0o700 | os.ModeDir, filepath.Dir(dir): 0o700 | os.ModeDir,
		path: 0o600, path + "-wal": 0o600, path + "-shm": 0o600,
	} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode(), want)
		}
	}
	var mode string
	if err := s.db.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	var sync, fk, busy int
	if err := s.db.QueryRowContext(t.Context(), "PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Errorf("synchronous = %d, %v; want 2 (FULL)", sync, err)
	}
	if err := s.db.QueryRowContext(t.Context(), "PRAGMA foreign_keys").Scan(&fk); err != nil || fk != 1 {
		t.Errorf("foreign_keys = %d, %v; want 1", fk, err)
	}
	if err := s.db.QueryRowContext(t.Context(), "PRAGMA busy_timeout").Scan(&busy); err != nil || busy != busyTimeoutMS {
		t.Errorf("busy_timeout = %d, %v; want %d", busy, err, busyTimeoutMS)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopening finds the rule.
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if rs, err := s.Rules(t.Context()); err != nil || len(rs) != 1 {
		t.Errorf("after reopening, Rules() = %v, %v; want one rule", rs, err)
	}
}

func TestOpenPathWithSpecialCharacters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "we?ird #dir%20", "rules?x=1.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.AddRule(t.Context(), rules.Rule{Action: flow.ActionAllow, Lifetime: rules.Forever}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the database is not at the path given: %v", err)
	}
}

func TestContextCanceled(t *testing.T) {
	s := openTest(t, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.AddRule(ctx, rules.Rule{Action: flow.ActionAllow, Lifetime: rules.Forever}); err == nil {
		t.Error("AddRule with a canceled context succeeded")
	}
	if rs, err := s.Rules(t.Context()); err != nil || len(rs) != 0 {
		t.Errorf("Rules() = %v, %v; want none", rs, err)
	}
}
