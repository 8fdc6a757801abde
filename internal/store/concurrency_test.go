package store

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
)

// TestConcurrentWriters writes from several goroutines through one Store
// and through a second Store on the same file (as a second process would):
// the single connection and SQLite's locks with busy_timeout serialize
// them, and no write is lost.
func TestConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.db")
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const writers, each = 6, 25
	var g errgroup.Group
	for w := range writers {
		s := a
		if w%2 == 1 {
			s = b
		}
		g.Go(func() error {
			for range each {
				if _, err := s.AddRule(t.Context(), rules.Rule{Action: flow.ActionAllow, Lifetime: rules.Forever}); err != nil {
					return err
				}
				if err := s.AppendHistory(t.Context(), HistoryEntry{DecidedBy: "rule"}); err != nil {
					return err
				}
				if _, err := s.Rules(t.Context()); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	rs, err := b.Rules(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	h, err := a.History(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != writers*each || len(h) != writers*each {
		t.Errorf("%d rules and %d history entries, want %d each", len(rs), len(h), writers*each)
	}
}

// FuzzOpen opens mutated database files: Open must refuse them or return
// a store whose reads fail cleanly or succeed — never panic or hang.
func FuzzOpen(f *testing.F) {
	v1, err := os.ReadFile(filepath.Join("testdata", "v1.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(v1)
	f.Add([]byte{})
	f.Add([]byte(sqliteHeader))
	f.Add(append([]byte(sqliteHeader), make([]byte, 200)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "rules.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path)
		if err != nil {
			return
		}
		defer s.Close()
		_, _ = s.Rules(t.Context())
		_, _ = s.History(t.Context(), 0)
		_, _ = s.DecideLater(t.Context())
	})
}
