package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// fill inserts n rules in one transaction, bypassing AddRule's per-rule
// commit so that large databases are quick to build.
func fill(b *testing.B, s *Store, n int) {
	b.Helper()
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	stmt, err := tx.PrepareContext(ctx, "INSERT INTO rules ("+ruleColumns+") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		r := durableRule(i)
		r.ID = fmt.Sprintf("%016x", i)
		v, err := ruleValues(r)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := stmt.ExecContext(ctx, v...); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAddRule measures one acknowledged (fsynced) AddRule into a
// database of 100,000 rules. The baseline is the same insert with
// synchronous=OFF: the ratio is the price of durability on this disk.
func BenchmarkAddRule(b *testing.B) {
	for _, sync := range []string{"FULL", "OFF"} {
		b.Run("synchronous="+sync, func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "rules.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			fill(b, s, 100_000)
			if _, err := s.db.Exec("PRAGMA synchronous = " + sync); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := s.AddRule(ctx, durableRule(100_000+i)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRules reads all rules of databases of 1,000 and 100,000 rules;
// the per-rule cost should not grow with the table.
func BenchmarkRules(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "rules.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			fill(b, s, n)
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				rs, err := s.Rules(ctx)
				if err != nil || len(rs) != n {
					b.Fatal(len(rs), err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/rule")
		})
	}
}

// BenchmarkOpen measures Open (read-only probe with quick_check, then the
// read-write connection) of a database of 100,000 rules, against
// integrity_check on the same file, which also verifies indexes.
func BenchmarkOpen(b *testing.B) {
	path := filepath.Join(b.TempDir(), "rules.db")
	s, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	fill(b, s, 100_000)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.Run("Open", func(b *testing.B) {
		for b.Loop() {
			s, err := Open(path)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, check := range []string{"quick_check", "integrity_check"} {
		b.Run(check, func(b *testing.B) {
			s, err := Open(path)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			for b.Loop() {
				var res string
				if err := s.db.QueryRow("PRAGMA " + check).Scan(&res); err != nil || res != "ok" {
					b.Fatal(res, err)
				}
			}
		})
	}
}

// BenchmarkAppendHistory measures one history append at the bound
// (10,000 entries, so every append also drops the oldest).
func BenchmarkAppendHistory(b *testing.B) {
	s, err := OpenWithOptions(filepath.Join(b.TempDir(), "rules.db"), Options{MaxHistory: 10_000})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	e := HistoryEntry{Process: testProcess(1), Tuple: testTuple(1), Host: "example.com", DecidedBy: "rule"}
	for range 10_000 {
		if err := s.AppendHistory(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if err := s.AppendHistory(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
}
