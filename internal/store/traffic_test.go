package store

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// trafficNow is the tests' "now": a Wednesday, 10:37:20 UTC.
var trafficNow = time.Date(2026, 7, 1, 10, 37, 20, 0, time.UTC)

func proc(exe, comm string) flow.Process {
	return flow.Process{PID: 7, TGID: 7, UID: 1000, Comm: comm, Exe: exe, Args: []string{comm, "--flag"}}
}

func tuple(dst string, port uint16) flow.Tuple {
	return flow.Tuple{Proto: flow.TCP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr(dst), SrcPort: 40000, DstPort: port}
}

func decision(at time.Time, p flow.Process, t flow.Tuple, host string, a flow.Action, by, rule string) HistoryEntry {
	return HistoryEntry{Time: at, Process: p, Tuple: t, Host: host, Action: a, DecidedBy: by, RuleID: rule}
}

func record(t *testing.T, s *Store, add func(b *Batch)) {
	t.Helper()
	b := NewBatch()
	add(b)
	if err := s.Record(t.Context(), b); err != nil {
		t.Fatal(err)
	}
}

func mustAdd(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var (
	firefox = proc("/usr/lib/firefox/firefox", "firefox")
	curl    = proc("/usr/bin/curl", "curl")
)

// TestProgramsCountsAndBytes records decisions and traffic over several
// batches and checks every figure of the summaries and destinations.
func TestProgramsCountsAndBytes(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	now := trafficNow
	web := tuple("192.0.2.10", 443)
	dns := flow.Tuple{Proto: flow.UDP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("192.0.2.53"), SrcPort: 5353, DstPort: 53}
	record(t, s, func(b *Batch) {
		mustAdd(t, b.AddDecision(decision(now.Add(-3*time.Hour), firefox, web, "example.com", flow.ActionAllow, "rule:r1", "r1")))
		mustAdd(t, b.AddDecision(decision(now.Add(-2*time.Hour), firefox, web, "example.com", flow.ActionAllow, "rule:r1", "r1")))
		mustAdd(t, b.AddDecision(decision(now.Add(-time.Hour), firefox, dns, "", flow.ActionDeny, "prompt", "")))
		mustAdd(t, b.AddTraffic(Traffic{Time: now.Add(-2 * time.Hour), FirstSeen: now.Add(-3 * time.Hour), Process: firefox, Tuple: web, Host: "example.com",
			BytesSent: 1000, BytesReceived: 50_000, PacketsSent: 10, PacketsReceived: 40}))
	})
	// A later batch adds to the same rows.
	record(t, s, func(b *Batch) {
		mustAdd(t, b.AddDecision(decision(now.Add(-time.Minute), curl, tuple("198.51.100.7", 80), "", flow.ActionReject, "rule:r2", "r2")))
		mustAdd(t, b.AddDecision(decision(now.Add(-30*time.Minute), firefox, tuple("192.0.2.11", 443), "example.com", flow.ActionAllow, "prompt", "")))
		mustAdd(t, b.AddTraffic(Traffic{Time: now.Add(-time.Minute), Process: firefox, Tuple: web, Host: "example.com", BytesSent: 24, BytesReceived: 1}))
	})

	progs, err := s.Programs(ctx, now.Add(-12*time.Hour), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(progs) != 2 || progs[0].Exe != curl.Exe || progs[1].Exe != firefox.Exe {
		t.Fatalf("programs = %+v, want curl then firefox", progs)
	}
	ff := progs[1]
	if ff.Allowed != 3 || ff.Denied != 1 || ff.BytesSent != 1024 || ff.BytesReceived != 50_001 || ff.PacketsSent != 10 ||
		ff.Destinations != 2 || ff.Comm != "firefox" || !ff.LastSeen.Equal(now.Add(-time.Minute)) {
		t.Errorf("firefox = %+v", ff)
	}
	if c := progs[0]; c.Allowed != 0 || c.Denied != 1 || c.Destinations != 1 || c.BytesSent != 0 {
		t.Errorf("curl = %+v", c)
	}
	// Since 90 minutes ago: the older decisions and bytes are out.
	progs, err = s.Programs(ctx, now.Add(-90*time.Minute), now)
	if err != nil {
		t.Fatal(err)
	}
	if ff := progs[1]; ff.Allowed != 1 || ff.Denied != 1 || ff.BytesSent != 24 {
		t.Errorf("firefox in the last 90 minutes = %+v", ff)
	}
	// Since two days ago: read from hour buckets.
	progs, err = s.Programs(ctx, now.Add(-48*time.Hour), now)
	if err != nil {
		t.Fatal(err)
	}
	if ff := progs[1]; ff.Allowed != 3 || ff.BytesReceived != 50_001 {
		t.Errorf("firefox over two days = %+v", ff)
	}

	p, err := s.FindProgram(ctx, "firefox")
	if err != nil {
		t.Fatal(err)
	}
	ds, total, err := s.Destinations(ctx, p, 100)
	if err != nil {
		t.Fatal(err)
	}
	if total != 2 || len(ds) != 2 {
		t.Fatalf("destinations = %+v (total %d), want 2", ds, total)
	}
	// Most recently seen first: example.com:443 (traffic a minute ago,
	// to the address it had then), then the denied DNS server, named by
	// its address.
	d := ds[0]
	if d.Host != "example.com" || d.Address != "192.0.2.10" || d.Port != 443 || d.Proto != flow.TCP || d.Allowed != 3 || d.Denied != 0 ||
		d.BytesSent != 1024 || d.BytesReceived != 50_001 || !d.FirstSeen.Equal(now.Add(-3*time.Hour)) || !d.LastSeen.Equal(now.Add(-time.Minute)) ||
		d.DecidedBy != "prompt" || d.RuleID != "" || d.Action != flow.ActionAllow {
		t.Errorf("example.com = %+v", d)
	}
	if d := ds[1]; d.Host != "" || d.Address != "192.0.2.53" || d.Proto != flow.UDP || d.Port != 53 || d.Denied != 1 || d.BytesSent != 0 ||
		d.Action != flow.ActionDeny || d.DecidedBy != "prompt" {
		t.Errorf("dns = %+v", d)
	}
	sum, err := s.ProgramSummary(ctx, p, now.Add(-12*time.Hour), now)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Allowed != 3 || sum.Denied != 1 || sum.Destinations != 2 || sum.BytesSent != 1024 {
		t.Errorf("summary = %+v", sum)
	}
}

// TestChartsHaveEveryBucket checks the three ranges: bucket count, length,
// alignment, the last bucket holding now, and empty buckets included.
func TestChartsHaveEveryBucket(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	now := trafficNow
	web := tuple("192.0.2.10", 443)
	record(t, s, func(b *Batch) {
		for _, at := range []time.Time{now, now.Add(-5 * time.Minute), now.Add(-5 * time.Minute), now.Add(-3 * time.Hour), now.Add(-50 * time.Hour)} {
			mustAdd(t, b.AddDecision(decision(at, curl, web, "", flow.ActionAllow, "prompt", "")))
			mustAdd(t, b.AddTraffic(Traffic{Time: at, Process: curl, Tuple: web, BytesSent: 100, BytesReceived: 7}))
		}
		// Another program's traffic is not in curl's chart.
		mustAdd(t, b.AddTraffic(Traffic{Time: now, Process: firefox, Tuple: web, BytesSent: 1 << 40}))
	})
	p, err := s.FindProgram(ctx, "/usr/bin/curl")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		r      ChartRange
		n      int
		step   time.Duration
		filled map[int]uint64 // bucket index -> allowed
	}{
		{ChartHour, 60, time.Minute, map[int]uint64{59: 1, 54: 2}},
		{ChartDay, 96, 15 * time.Minute, map[int]uint64{95: 3, 95 - 12: 1}},
		{ChartWeek, 168, time.Hour, map[int]uint64{167: 3, 164: 1, 167 - 50: 1}},
	} {
		bs, step, err := s.Chart(ctx, p, tc.r, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) != tc.n || step != tc.step {
			t.Fatalf("range %d: %d buckets of %s, want %d of %s", tc.r, len(bs), step, tc.n, tc.step)
		}
		last := bs[len(bs)-1].Start
		if !last.Equal(now.Truncate(tc.step)) || !bs[0].Start.Equal(last.Add(-time.Duration(tc.n-1)*tc.step)) {
			t.Errorf("range %d: buckets from %s to %s, want the last at %s", tc.r, bs[0].Start, last, now.Truncate(tc.step))
		}
		for i, b := range bs {
			if i > 0 && b.Start.Sub(bs[i-1].Start) != tc.step {
				t.Fatalf("range %d: bucket %d starts at %s, after %s", tc.r, i, b.Start, bs[i-1].Start)
			}
			want := tc.filled[i]
			if b.Allowed != want || b.BytesSent != 100*want || b.BytesReceived != 7*want || b.Denied != 0 {
				t.Errorf("range %d: bucket %d (%s) = %+v, want %d connections", tc.r, i, b.Start, b, want)
			}
		}
	}
	if _, _, err := s.Chart(ctx, p, ChartRange(9), now); err == nil {
		t.Error("an unknown range made a chart")
	}
}

// TestPruneByRetention drops minute buckets after a day and everything
// else after the retention.
func TestPruneByRetention(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	now := trafficNow
	web := tuple("192.0.2.10", 443)
	record(t, s, func(b *Batch) {
		mustAdd(t, b.AddDecision(decision(now.Add(-10*24*time.Hour), firefox, web, "old.example", flow.ActionAllow, "prompt", "")))
		mustAdd(t, b.AddDecision(decision(now.Add(-30*time.Hour), curl, web, "", flow.ActionAllow, "prompt", "")))
		mustAdd(t, b.AddDecision(decision(now.Add(-time.Hour), curl, web, "", flow.ActionAllow, "prompt", "")))
	})
	if err := s.Prune(ctx, now, 7*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	rowsOf := func(table string) int {
		var n int
		if err := s.db.QueryRow("SELECT count(*) FROM " + table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for table, want := range map[string]int{"traffic_minute": 1, "traffic_hour": 2, "history": 2, "destinations": 1, "programs": 1} {
		if got := rowsOf(table); got != want {
			t.Errorf("%s: %d rows after pruning, want %d", table, got, want)
		}
	}
	if _, err := s.FindProgram(ctx, "firefox"); !errors.Is(err, ErrNotFound) {
		t.Errorf("firefox after its retention: %v, want not found", err)
	}
	// A shorter retention applies at once.
	if err := s.Prune(ctx, now, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := rowsOf("history"); got != 1 {
		t.Errorf("history: %d rows after pruning to a day, want 1", got)
	}
	if err := s.Prune(ctx, now, 0); err == nil {
		t.Error("pruning with no retention succeeded")
	}
	// Recording after pruning counts the rows again and goes on.
	record(t, s, func(b *Batch) {
		mustAdd(t, b.AddDecision(decision(now, curl, web, "", flow.ActionAllow, "prompt", "")))
	})
	if got := rowsOf("history"); got != 2 {
		t.Errorf("history: %d rows, want 2", got)
	}
}

// TestAggregateBounds fills every table past its bound: each keeps its
// newest rows only, batch after batch.
func TestAggregateBounds(t *testing.T) {
	ctx := t.Context()
	opts := Options{MaxHistory: 30, MaxPrograms: 5, MaxDestinations: 12, MaxMinuteBuckets: 20, MaxHourBuckets: 15}
	s := openTest(t, opts)
	start := trafficNow.Add(-20 * time.Hour)
	for batch := range 10 {
		record(t, s, func(b *Batch) {
			for i := range 10 {
				n := batch*10 + i
				at := start.Add(time.Duration(n) * 10 * time.Minute)
				p := proc("/usr/bin/prog"+string(rune('a'+n%8)), "p")
				mustAdd(t, b.AddDecision(decision(at, p, tuple("192.0.2.1", uint16(1000+n)), "", flow.ActionAllow, "prompt", "")))
			}
		})
		for table, max := range map[string]int{"history": 30, "programs": 5, "destinations": 12, "traffic_minute": 20, "traffic_hour": 15} {
			var n int
			if err := s.db.QueryRow("SELECT count(*) FROM " + table).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n > max {
				t.Errorf("after batch %d: %s has %d rows, over its bound %d", batch, table, n, max)
			}
		}
	}
	// The newest are the ones kept.
	es, truncated, err := s.QueryHistory(ctx, HistoryFilter{}, 1)
	if err != nil || !truncated || len(es) != 1 || es[0].Tuple.DstPort != 1099 {
		t.Errorf("newest entry = %+v, %v, %v; want port 1099", es, truncated, err)
	}
	progs, err := s.Programs(ctx, time.Unix(1, 0), trafficNow)
	if err != nil || len(progs) != 5 || progs[0].Exe != "/usr/bin/progd" {
		t.Errorf("programs = %+v, %v; want the 5 most recent, progd first", progs, err)
	}
}

// TestFindProgram resolves paths and names; a comm never poses as a path.
func TestFindProgram(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	web := tuple("192.0.2.10", 443)
	record(t, s, func(b *Batch) {
		for _, p := range []flow.Process{
			firefox, curl, proc("/opt/curl/bin/curl", "curl"),
			proc("", "/usr/bin/ssh"), // no exe, and a comm that looks like a path
			proc("/usr/bin/python3.12", "myscript"),
		} {
			mustAdd(t, b.AddDecision(decision(trafficNow, p, web, "", flow.ActionAllow, "prompt", "")))
		}
	})
	for _, tc := range []struct {
		name, exe, comm string
		err             error
	}{
		{"/usr/lib/firefox/firefox", firefox.Exe, "firefox", nil},
		{"firefox", firefox.Exe, "firefox", nil},
		{"/usr/bin/curl", "/usr/bin/curl", "curl", nil},
		{"curl", "", "", ErrAmbiguous},
		{"myscript", "/usr/bin/python3.12", "myscript", nil},
		{"python3.12", "/usr/bin/python3.12", "myscript", nil},
		{"/usr/bin/ssh", "", "", ErrNotFound},
		{"ssh", "", "", ErrNotFound},
		{"nothing", "", "", ErrNotFound},
		{"", "", "", ErrNotFound},
	} {
		p, err := s.FindProgram(ctx, tc.name)
		if !errors.Is(err, tc.err) || p.Exe != tc.exe || (tc.err == nil && p.Comm != tc.comm) {
			t.Errorf("FindProgram(%q) = %+v, %v; want %q %q, %v", tc.name, p, err, tc.exe, tc.comm, tc.err)
		}
		if errors.Is(err, ErrAmbiguous) && (!strings.Contains(err.Error(), "/usr/bin/curl") || !strings.Contains(err.Error(), "/opt/curl/bin/curl")) {
			t.Errorf("ambiguous error does not name the candidates: %v", err)
		}
	}
}

// TestQueryHistoryFilters checks each filter alone and together.
func TestQueryHistoryFilters(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	now := trafficNow
	record(t, s, func(b *Batch) {
		mustAdd(t, b.AddDecision(decision(now.Add(-4*time.Hour), firefox, tuple("192.0.2.10", 443), "Example.com", flow.ActionAllow, "rule:r1", "r1")))
		mustAdd(t, b.AddDecision(decision(now.Add(-3*time.Hour), firefox, tuple("192.0.2.11", 443), "tracker.net", flow.ActionDeny, "rule:r2", "r2")))
		mustAdd(t, b.AddDecision(decision(now.Add(-2*time.Hour), curl, tuple("198.51.100.7", 80), "", flow.ActionReject, "prompt", "")))
		mustAdd(t, b.AddDecision(decision(now.Add(-time.Hour), proc("", "mystery"), tuple("203.0.113.5", 22), "", flow.ActionAllow, "default:uid=1000", "")))
	})
	ff, err := s.FindProgram(ctx, "firefox")
	if err != nil {
		t.Fatal(err)
	}
	mystery, err := s.FindProgram(ctx, "mystery")
	if err != nil {
		t.Fatal(err)
	}
	ports := func(es []HistoryEntry) []uint16 {
		var out []uint16
		for _, e := range es {
			out = append(out, e.Tuple.DstPort)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    HistoryFilter
		want []uint16
	}{
		{"all, newest first", HistoryFilter{}, []uint16{22, 80, 443, 443}},
		{"program", HistoryFilter{Program: &ff}, []uint16{443, 443}},
		{"program by comm", HistoryFilter{Program: &mystery}, []uint16{22}},
		{"host, any case", HistoryFilter{Host: "example.COM"}, []uint16{443}},
		{"host as address", HistoryFilter{Host: "198.51"}, []uint16{80}},
		{"deny and reject", HistoryFilter{Actions: []flow.Action{flow.ActionDeny, flow.ActionReject}}, []uint16{80, 443}},
		{"since", HistoryFilter{Since: now.Add(-2 * time.Hour)}, []uint16{22, 80}},
		{"until", HistoryFilter{Until: now.Add(-3 * time.Hour)}, []uint16{443, 443}},
		{"since and until", HistoryFilter{Since: now.Add(-3 * time.Hour), Until: now.Add(-2 * time.Hour)}, []uint16{80, 443}},
		{"rule", HistoryFilter{RuleID: "r2"}, []uint16{443}},
		{"text in the command line", HistoryFilter{Text: "curl --FLAG"}, []uint16{80}},
		{"text in decided_by", HistoryFilter{Text: "default:"}, []uint16{22}},
		{"text with SQL in it", HistoryFilter{Text: "%' OR 1=1 --"}, nil},
		{"together", HistoryFilter{Program: &ff, Actions: []flow.Action{flow.ActionAllow}, Text: "example"}, []uint16{443}},
	} {
		es, truncated, err := s.QueryHistory(ctx, tc.f, 10)
		if err != nil || truncated || !equalPorts(ports(es), tc.want) {
			t.Errorf("%s: %v (truncated %v, err %v), want %v", tc.name, ports(es), truncated, err, tc.want)
		}
	}
	es, truncated, err := s.QueryHistory(ctx, HistoryFilter{}, 3)
	if err != nil || !truncated || len(es) != 3 {
		t.Errorf("limit 3: %d entries, truncated %v, %v", len(es), truncated, err)
	}
	for _, limit := range []int{0, -1, math.MaxInt32} {
		if _, _, err := s.QueryHistory(ctx, HistoryFilter{}, limit); err == nil {
			t.Errorf("limit %d accepted", limit)
		}
	}
}

func equalPorts(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestCorruptAggregatesReadAsErrors edits stored aggregates by hand
// (bypassing CHECK constraints, as a damaged file may): each read fails
// rather than returning a wrong figure.
func TestCorruptAggregatesReadAsErrors(t *testing.T) {
	now := trafficNow
	web := tuple("192.0.2.10", 443)
	for _, tc := range []struct {
		name, edit string
		read       func(ctx context.Context, s *Store, p Program) error
	}{
		{"negative minute count", "UPDATE traffic_minute SET bytes_sent = -5", summaryRead},
		{"unaligned minute", "UPDATE traffic_minute SET start = start + 1", summaryRead},
		{"negative hour count", "UPDATE traffic_hour SET allowed = -1", chartRead(ChartWeek)},
		{"unaligned hour", "UPDATE traffic_hour SET start = start + 60", chartRead(ChartWeek)},
		{"negative destination bytes", "UPDATE destinations SET bytes_received = -1", destRead},
		{"destination port", "UPDATE destinations SET port = 70000", destRead},
		{"destination action", "UPDATE destinations SET action = 9", destRead},
		{"destination address", "UPDATE destinations SET address = 'not an address'", destRead},
		{"destination times", "UPDATE destinations SET first_seen = last_seen + 1", destRead},
		{"program name", "UPDATE programs SET comm_key = 'x'", func(ctx context.Context, s *Store, _ Program) error {
			_, err := s.Programs(ctx, now.Add(-time.Hour), now)
			return err
		}},
		{"history action", "UPDATE history SET action = 300", func(ctx context.Context, s *Store, _ Program) error {
			_, _, err := s.QueryHistory(ctx, HistoryFilter{}, 10)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s := openTest(t, Options{})
			record(t, s, func(b *Batch) {
				mustAdd(t, b.AddDecision(decision(now.Add(-time.Minute), curl, web, "", flow.ActionAllow, "prompt", "")))
				mustAdd(t, b.AddTraffic(Traffic{Time: now.Add(-time.Minute), Process: curl, Tuple: web, BytesSent: 10}))
			})
			p, err := s.FindProgram(ctx, "curl")
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.read(ctx, s, p); err != nil {
				t.Fatalf("before the edit: %v", err)
			}
			if _, err := s.db.Exec("PRAGMA ignore_check_constraints = 1"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.db.Exec(tc.edit); err != nil {
				t.Fatal(err)
			}
			if err := tc.read(ctx, s, p); err == nil || !strings.Contains(err.Error(), "in the database") {
				t.Errorf("after %q: %v, want an error about the database", tc.edit, err)
			}
		})
	}
}

func summaryRead(ctx context.Context, s *Store, p Program) error {
	_, err := s.ProgramSummary(ctx, p, trafficNow.Add(-time.Hour), trafficNow)
	return err
}

func chartRead(r ChartRange) func(ctx context.Context, s *Store, p Program) error {
	return func(ctx context.Context, s *Store, p Program) error {
		_, _, err := s.Chart(ctx, p, r, trafficNow)
		return err
	}
}

func destRead(ctx context.Context, s *Store, p Program) error {
	_, _, err := s.Destinations(ctx, p, 10)
	return err
}

// TestCountsSaturate adds counts near the largest integer: they stop
// there instead of failing the batch or wrapping.
func TestCountsSaturate(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	web := tuple("192.0.2.10", 443)
	for i := range 3 {
		record(t, s, func(b *Batch) {
			// Twice in one bucket (the row saturates), once in another
			// (the sum over buckets saturates).
			at := trafficNow.Add(-time.Duration(i/2) * time.Minute)
			mustAdd(t, b.AddTraffic(Traffic{Time: at, Process: curl, Tuple: web, BytesSent: math.MaxUint64, BytesReceived: math.MaxInt64 - 1}))
		})
	}
	p, err := s.FindProgram(ctx, "curl")
	if err != nil {
		t.Fatal(err)
	}
	sum, err := s.ProgramSummary(ctx, p, trafficNow.Add(-time.Hour), trafficNow)
	if err != nil {
		t.Fatal(err)
	}
	// Each bucket stops at the largest int64; their sum, a uint64, is exact.
	if sum.BytesSent != 2*math.MaxInt64 || sum.BytesReceived != 2*math.MaxInt64-1 {
		t.Errorf("sums = %d, %d; want %d, %d", sum.BytesSent, sum.BytesReceived, uint64(2*math.MaxInt64), uint64(2*math.MaxInt64-1))
	}
	b := NewBatch()
	if err := b.AddDecision(HistoryEntry{Process: curl}); err == nil {
		t.Error("a decision without a time was added")
	}
	if err := b.AddTraffic(Traffic{Time: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}); err == nil {
		t.Error("a sample from the year 3000 was added")
	}
}

// TestRepeatedDecisionCountsNoConnection: a decision about a connection
// already counted is history and its destination's latest decision, but
// not another connection.
func TestRepeatedDecisionCountsNoConnection(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	now := trafficNow
	web := tuple("192.0.2.10", 443)
	record(t, s, func(b *Batch) {
		mustAdd(t, b.AddDecision(decision(now.Add(-2*time.Second), curl, web, "", flow.ActionDeny, "rule:r1", "r1")))
		mustAdd(t, b.AddRepeatedDecision(decision(now.Add(-time.Second), curl, web, "", flow.ActionReject, "rule:r2", "r2")))
	})
	p, err := s.FindProgram(ctx, curl.Exe)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := s.ProgramSummary(ctx, p, now.Add(-time.Hour), now)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Allowed != 0 || sum.Denied != 1 {
		t.Errorf("summary %+v, want 1 denied connection", sum)
	}
	ds, _, err := s.Destinations(ctx, p, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Denied != 1 || ds[0].RuleID != "r2" || ds[0].Action != flow.ActionReject {
		t.Errorf("destinations %+v, want 1 denied connection whose latest decision is r2's reject", ds)
	}
	h, err := s.History(ctx, 0)
	if err != nil || len(h) != 2 {
		t.Errorf("history %d entries (%v), want both decisions", len(h), err)
	}
}
