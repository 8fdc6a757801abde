package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// A week of a busy desktop, for the figures of the programs view: about
// 50 programs (a few make most connections) and 2000 destinations.
const (
	benchPrograms     = 50
	benchDestinations = 2000
	benchWeek         = 7 * 24 * time.Hour
)

// benchStore is a store filled with n connections spread over the week
// before now, recorded through Batch and Record as the rules service does
// (one Record per simulated minute rather than per second: the same rows
// in fewer commits), and pruned every simulated hour with the default
// 30-day retention.
type benchStore struct {
	s        *Store
	path     string
	now      time.Time
	busiest  Program
	perConn  time.Duration // recording time per connection
	fileSize int64
}

func fillBench(b *testing.B, n int) *benchStore {
	b.Helper()
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "rules.db")
	s, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	// The file's size does not depend on when it is synced; not waiting
	// for 10,000 fsyncs keeps the fill within minutes on a slow disk.
	if _, err := s.db.Exec("PRAGMA synchronous = OFF"); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rng, 1.2, 1, benchPrograms-1)
	progs := make([]flow.Process, benchPrograms)
	for i := range progs {
		name := fmt.Sprintf("prog%02d", i)
		progs[i] = flow.Process{PID: uint32(1000 + i), TGID: uint32(1000 + i), UID: 1000, GID: 1000, Comm: name,
			Exe: "/usr/bin/" + name, Args: []string{name, "--some-option", "https://example.com/path"}, Source: "netfilter-link"}
	}
	type dest struct {
		host  string
		addr  netip.Addr
		port  uint16
		proto flow.Proto
	}
	dests := make([]dest, benchDestinations)
	for i := range dests {
		d := dest{addr: netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}), port: 443, proto: flow.TCP}
		if i%10 < 7 {
			d.host = fmt.Sprintf("host%04d.example.com", i)
		}
		switch i % 7 {
		case 0:
			d.port, d.proto = 53, flow.UDP
		case 1:
			d.port = 80
		}
		dests[i] = d
	}
	now := time.Date(2026, 7, 8, 12, 0, 0, 0, time.UTC)
	start := now.Add(-benchWeek)
	step := benchWeek / time.Duration(n)
	batch := NewBatch()
	nextFlush := start.Add(time.Minute)
	nextPrune := start.Add(time.Hour)
	var recording time.Duration
	flush := func() {
		t0 := time.Now()
		if err := s.Record(ctx, batch); err != nil {
			b.Fatal(err)
		}
		recording += time.Since(t0)
		batch = NewBatch()
	}
	for i := range n {
		at := start.Add(time.Duration(i) * step)
		if !at.Before(nextFlush) {
			flush()
			nextFlush = nextFlush.Add(time.Minute)
		}
		if !at.Before(nextPrune) {
			if err := s.Prune(ctx, at, 30*24*time.Hour); err != nil {
				b.Fatal(err)
			}
			nextPrune = nextPrune.Add(time.Hour)
		}
		pi := int(zipf.Uint64())
		// Each program talks to its own fortieth of the destinations,
		// and now and then to any of them.
		di := (pi*benchDestinations/benchPrograms + rng.IntN(benchDestinations/benchPrograms)) % benchDestinations
		if rng.IntN(10) == 0 {
			di = rng.IntN(benchDestinations)
		}
		d := dests[di]
		p := progs[pi]
		t := flow.Tuple{Proto: d.proto, Src: netip.MustParseAddr("10.0.0.2"), Dst: d.addr, SrcPort: uint16(32768 + i%28000), DstPort: d.port}
		action, by := flow.ActionAllow, "rule:r1"
		if rng.IntN(10) == 0 {
			action, by = flow.ActionDeny, "prompt"
		}
		t0 := time.Now()
		if err := batch.AddDecision(HistoryEntry{Time: at, Process: p, Tuple: t, Host: d.host, Action: action, DecidedBy: by}); err != nil {
			b.Fatal(err)
		}
		if action == flow.ActionAllow {
			if err := batch.AddTraffic(Traffic{Time: at.Add(step / 2), FirstSeen: at, Process: p, Tuple: t, Host: d.host,
				BytesSent: uint64(200 + rng.IntN(2000)), BytesReceived: uint64(500 + rng.IntN(200_000)), PacketsSent: 5, PacketsReceived: 20}); err != nil {
				b.Fatal(err)
			}
		}
		recording += time.Since(t0)
	}
	flush()
	if err := s.Prune(ctx, now, 30*24*time.Hour); err != nil {
		b.Fatal(err)
	}
	// Fold the WAL into the file, as a checkpoint does in time.
	if _, err := s.db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	busiest, err := s.FindProgram(ctx, progs[0].Exe)
	if err != nil {
		b.Fatal(err)
	}
	return &benchStore{s: s, path: path, now: now, busiest: busiest, perConn: recording / time.Duration(n), fileSize: fi.Size()}
}

// BenchmarkMillionConnections gives the figures of the programs view: the
// store's size after a million recorded connections, the cost of
// recording one, and the time to compute the busiest program's week chart
// and its GetProgram, each against the same on a store of 10,000
// connections (the ratio shows what the million costs). Filling takes a
// few minutes; it runs only with -bench.
func BenchmarkMillionConnections(b *testing.B) {
	small := fillBench(b, 10_000)
	big := fillBench(b, 1_000_000)
	ctx := context.Background()

	b.Run("Store", func(b *testing.B) {
		for b.Loop() {
			if _, err := os.Stat(big.path); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(big.fileSize)/1e6, "MB")
		b.ReportMetric(float64(small.fileSize)/1e6, "MB-10k")
		b.ReportMetric(float64(big.perConn.Nanoseconds()), "record-ns/conn")
	})
	measure := func(b *testing.B, name string, op func(bs *benchStore) error) {
		var base time.Duration
		b.Run(name, func(b *testing.B) {
			// The baseline: the same on the small store, this run.
			const rounds = 200
			t0 := time.Now()
			for range rounds {
				if err := op(small); err != nil {
					b.Fatal(err)
				}
			}
			base = time.Since(t0) / rounds
			b.ResetTimer()
			for b.Loop() {
				if err := op(big); err != nil {
					b.Fatal(err)
				}
			}
			per := b.Elapsed() / time.Duration(b.N)
			b.ReportMetric(float64(per.Microseconds()), "µs/op")
			b.ReportMetric(float64(per)/float64(base), "x-10k")
		})
	}
	measure(b, "WeekChart", func(bs *benchStore) error {
		cs, _, err := bs.s.Chart(ctx, bs.busiest, ChartWeek, bs.now)
		if err == nil && len(cs) != 168 {
			err = fmt.Errorf("%d buckets", len(cs))
		}
		return err
	})
	measure(b, "GetProgram", func(bs *benchStore) error {
		// What UIService.GetProgram reads: the program by name, its
		// summary since midnight, its destinations and its week chart.
		p, err := bs.s.FindProgram(ctx, "prog00")
		if err != nil {
			return err
		}
		midnight := bs.now.Truncate(24 * time.Hour)
		if _, err := bs.s.ProgramSummary(ctx, p, midnight, bs.now); err != nil {
			return err
		}
		if _, _, err := bs.s.Destinations(ctx, p, 5000); err != nil {
			return err
		}
		_, _, err = bs.s.Chart(ctx, p, ChartWeek, bs.now)
		return err
	})
	measure(b, "ListPrograms", func(bs *benchStore) error {
		_, err := bs.s.Programs(ctx, bs.now.Truncate(24*time.Hour), bs.now)
		return err
	})
}
