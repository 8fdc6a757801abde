package store

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

func testProcess(i int) flow.Process {
	return flow.Process{
		PID: uint32(1000 + i), TGID: uint32(1000 + i), PPID: 1, UID: 1000, GID: 1000,
		Comm: "curl", Exe: "/usr/bin/curl", Args: []string{"curl", fmt.Sprintf("https://host%d.example/", i), "é \"q\""},
		StartTime: 1<<40 + uint64(i), Source: "netfilter-link",
	}
}

func testTuple(i int) flow.Tuple {
	return flow.Tuple{Proto: flow.TCP, Src: netip.MustParseAddr("fd00::1"), Dst: netip.MustParseAddr("2001:db8::5"),
		SrcPort: uint16(40000 + i), DstPort: 443}
}

func TestHistoryRoundTripAndBound(t *testing.T) {
	ctx := t.Context()
	const keep = 50
	s := openTest(t, Options{MaxHistory: keep})
	t0 := time.Date(2026, 7, 1, 0, 0, 0, 123, time.FixedZone("X", 3600))
	var all []HistoryEntry
	for i := range 3 * keep {
		e := HistoryEntry{
			// The clock steps back at i == 70: order is by insertion.
			Time:    t0.Add(time.Duration(i%70) * time.Second),
			Process: testProcess(i), Tuple: testTuple(i), Host: fmt.Sprintf("host%d.example", i),
			Action: flow.Action(1 + i%3), DecidedBy: "prompt", RuleID: fmt.Sprintf("%016x", i),
		}
		switch i {
		case 1: // unknown argv and process
			e.Process = flow.Process{}
			e.Tuple = flow.Tuple{Proto: flow.ICMP, Dst: netip.MustParseAddr("192.0.2.1")}
		case 2: // known-empty argv
			e.Process.Args = []string{}
		}
		if err := s.AppendHistory(ctx, e); err != nil {
			t.Fatal(err)
		}
		e.Time = e.Time.UTC()
		all = append(all, e)
		if i == 2 {
			got, err := s.History(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, all) {
				t.Fatalf("History() =\n%+v\nwant\n%+v", got, all)
			}
		}
	}
	for _, tc := range []struct{ limit, want int }{{0, keep}, {-1, keep}, {10, 10}, {keep, keep}, {keep + 1, keep}} {
		got, err := s.History(ctx, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		want := all[len(all)-tc.want:]
		if !reflect.DeepEqual(got, want) {
			t.Errorf("History(%d): got %d entries (first %v), want the newest %d, oldest first",
				tc.limit, len(got), got[0].Process.PID, tc.want)
		}
	}
	var n int
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM history").Scan(&n); err != nil || n != keep {
		t.Errorf("history table holds %d rows (%v), want %d", n, err, keep)
	}
}

func TestDecideLater(t *testing.T) {
	ctx := t.Context()
	const keep = 20
	s := openTest(t, Options{MaxDecideLater: keep})
	var all []DecideLaterEntry
	t0 := time.Date(2026, 7, 1, 0, 0, 0, 999, time.Local)
	for i := range keep + 5 {
		e, err := s.AddDecideLater(ctx, DecideLaterEntry{
			Time: t0.Add(time.Duration(i) * time.Minute), Process: testProcess(i), Tuple: testTuple(i),
			Host: "h", Applied: flow.ActionDeny,
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(e.ID) != 16 || e.Time.Location() != time.UTC {
			t.Fatalf("AddDecideLater returned ID %q, time %v", e.ID, e.Time)
		}
		all = append(all, e)
	}
	got, err := s.DecideLater(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := all[5:]; !reflect.DeepEqual(got, want) {
		t.Fatalf("DecideLater() = %d entries, want the newest %d in order:\n%+v\n%+v", len(got), keep, got, want)
	}
	if err := s.RemoveDecideLater(ctx, all[10].ID); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveDecideLater(ctx, all[10].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second RemoveDecideLater = %v, want ErrNotFound", err)
	}
	if err := s.RemoveDecideLater(ctx, all[0].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemoveDecideLater of a dropped entry = %v, want ErrNotFound", err)
	}
	got, err = s.DecideLater(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]DecideLaterEntry{}, all[5:10]...), all[11:]...)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after RemoveDecideLater, DecideLater() has %d entries, want %d", len(got), len(want))
	}
	// A caller-chosen ID that exists already is refused, and nothing is
	// dropped for it.
	if _, err := s.AddDecideLater(ctx, DecideLaterEntry{ID: all[12].ID, Time: t0}); err == nil {
		t.Error("AddDecideLater with an existing ID succeeded")
	}
	if got2, _ := s.DecideLater(ctx); len(got2) != len(want) {
		t.Errorf("a refused AddDecideLater changed the list to %d entries", len(got2))
	}
}

func TestDefaultBounds(t *testing.T) {
	s := openTest(t, Options{})
	if s.maxHistory != 100_000 || s.maxDecideLater != 1_000 || s.opts.MaxDestinations != DefaultMaxDestinations || s.opts.MaxHourBuckets != DefaultMaxHourBuckets {
		t.Errorf("default bounds %d, %d, %+v; want 100000, 1000 and the defaults", s.maxHistory, s.maxDecideLater, s.opts)
	}
	if _, err := OpenWithOptions(t.TempDir()+"/x.db", Options{MaxHistory: -1}); err == nil {
		t.Error("a negative bound was accepted")
	}
}
