package store

import (
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
)

// rawDB opens a SQLite file directly, bypassing the store's checks.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return db
}

func rawExec(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db := rawDB(t, path)
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// populated creates a closed database with n rules and returns its path
// and rules.
func populated(t *testing.T, n int) (string, []rules.Rule) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rules.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var rs []rules.Rule
	for i := range n {
		r := fullRule()
		r.ID = fmt.Sprintf("%016x", i)
		r.Note = strings.Repeat(fmt.Sprint(i), 20)
		r, err := s.AddRule(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path, rs
}

func TestOpenRefuses(t *testing.T) {
	sqliteWith := func(stmts ...string) func(t *testing.T, path string) {
		return func(t *testing.T, path string) { rawExec(t, path, stmts...) }
	}
	write := func(b []byte) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	bastionWith := func(stmts ...string) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			s, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			rawExec(t, path, stmts...)
		}
	}
	for _, tc := range []struct {
		name    string
		make    func(t *testing.T, path string)
		wantErr string
	}{
		{"garbage", write(bytes.Repeat([]byte("garbage!"), 1000)), "is not a Bastion rules database: not a SQLite 3 file"},
		{"short garbage", write([]byte("x")), "is not a Bastion rules database: not a SQLite 3 file"},
		{"sqlite header then garbage", write(append([]byte(sqliteHeader), bytes.Repeat([]byte{0xa5}, 8192)...)), "is not a Bastion rules database"},
		{"another program's database", sqliteWith("CREATE TABLE bookmarks (url TEXT)"), "is not a Bastion rules database: a SQLite database without Bastion's application id"},
		{"another application id", sqliteWith("PRAGMA application_id = 7"), "is not a Bastion rules database: SQLite application id 0x7"},
		{"newer schema", bastionWith("PRAGMA user_version = 99"), "has schema version 99, newer than this Bastion knows (" + fmt.Sprint(len(migrations())) + ")"},
		{"damaged page", func(t *testing.T, path string) {
			path2, _ := populated(t, 300)
			b, err := os.ReadFile(path2)
			if err != nil {
				t.Fatal(err)
			}
			// Page 3 (4 KiB pages) is a b-tree page; zero it.
			copy(b[2*4096:3*4096], make([]byte, 4096))
			write(b)(t, path)
		}, "failed its integrity check"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rules.db")
			tc.make(t, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(path)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open: %v\nwant an error naming %s and containing %q", err, path, tc.wantErr)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Error("Open changed a file it refused")
			}
		})
	}
}

func TestOpenRefusesNonRegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.db")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Open(directory) = %v, want an error saying it is not a regular file", err)
	}
}

func TestOpenEmptyFile(t *testing.T) {
	// What an Open that died right after creating the file leaves behind.
	path := filepath.Join(t.TempDir(), "rules.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.AddRule(t.Context(), rules.Rule{Action: flow.ActionAllow, Lifetime: rules.Forever}); err != nil {
		t.Fatal(err)
	}
}

// TestOpenTruncated cuts a real database at several points. Open must
// either refuse it or, if SQLite finds nothing wrong, return only rules
// exactly as written — never a changed rule.
func TestOpenTruncated(t *testing.T) {
	path, want := populated(t, 500)
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]rules.Rule{}
	for _, r := range want {
		byID[r.ID] = r
	}
	refused := 0
	cuts := []int{50, 100, 4096, 4096 + 100, len(full) / 3, len(full) / 2, len(full) - 4096, len(full) - 1}
	for _, cut := range cuts {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "rules.db")
			if err := os.WriteFile(p, full[:cut], 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(p)
			if err != nil {
				refused++
				if !strings.Contains(err.Error(), p) {
					t.Errorf("the error does not name the file: %v", err)
				}
				t.Logf("refused: %v", err)
				return
			}
			defer s.Close()
			got, err := s.Rules(t.Context())
			if err != nil {
				refused++
				t.Logf("opened, Rules() refused: %v", err)
				return
			}
			for _, r := range got {
				if !reflect.DeepEqual(r, byID[r.ID]) {
					t.Errorf("rule %s read back changed: %+v", r.ID, r)
				}
			}
			t.Logf("opened with %d of %d rules", len(got), len(want))
		})
	}
	if refused == 0 {
		t.Error("no truncated database was refused")
	}
}

// TestMigrateFromV1 opens a database written by the first schema version
// (testdata/v1.db, made by this test with -update from the first step
// alone) and checks that it is migrated, its rules intact, and a backup of
// it kept.
func TestMigrateFromV1(t *testing.T) {
	golden := filepath.Join("testdata", "v1.db")
	want := fullRule()
	if *update {
		tmp := filepath.Join(t.TempDir(), "v1.db")
		s, err := open(t.Context(), tmp, Options{}, migrations()[:1])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddRule(t.Context(), want); err != nil {
			t.Fatal(err)
		}
		// VACUUM INTO writes one self-contained file (no WAL).
		if err := os.Remove(golden); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if _, err := s.db.Exec("VACUUM INTO ?", golden); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	orig, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rules.db")
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var version int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&version); err != nil || version != len(migrations()) {
		t.Errorf("after Open, user_version = %d (%v), want %d", version, err, len(migrations()))
	}
	rs, err := s.Rules(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || !reflect.DeepEqual(rs[0], normalizeForTest(want)) {
		t.Errorf("rules after migration:\n%+v\nwant\n%+v", rs, normalizeForTest(want))
	}
	// The new tables work.
	if err := s.AppendHistory(t.Context(), HistoryEntry{Process: testProcess(1)}); err != nil {
		t.Error(err)
	}
	migrated := schemaOf(t, s.db)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	bak, err := os.ReadFile(path + ".v1.bak")
	if err != nil {
		t.Fatalf("no backup of the version 1 database: %v", err)
	}
	if fi, _ := os.Stat(path + ".v1.bak"); fi.Mode() != 0o600 {
		t.Errorf("backup mode %v, want 0600", fi.Mode())
	}
	bakPath := filepath.Join(t.TempDir(), "bak.db")
	if err := os.WriteFile(bakPath, bak, 0o600); err != nil {
		t.Fatal(err)
	}
	bdb := rawDB(t, bakPath)
	defer bdb.Close()
	var n int
	if err := bdb.QueryRow("SELECT count(*) FROM rules").Scan(&n); err != nil || n != 1 {
		t.Errorf("backup holds %d rules (%v), want 1", n, err)
	}
	if err := bdb.QueryRow("PRAGMA user_version").Scan(&version); err != nil || version != 1 {
		t.Errorf("backup user_version = %d (%v), want 1", version, err)
	}

	// A migrated database has exactly a new database's schema.
	fresh := openTest(t, Options{})
	if got := schemaOf(t, fresh.db); got != migrated {
		t.Errorf("migrated schema differs from a new database's:\n%s\nvs\n%s", migrated, got)
	}
}

func schemaOf(t *testing.T, db *sql.DB) string {
	t.Helper()
	rows, err := db.Query("SELECT type, name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var typ, name, text string
		if err := rows.Scan(&typ, &name, &text); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s: %s\n", typ, name, text)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestFailedMigrationRollsBack adds a failing last step: Open must fail
// and leave the database at the version before it, with its data.
func TestFailedMigrationRollsBack(t *testing.T) {
	path, want := populated(t, 3)
	steps := append(migrations(), "CREATE TABLE extra (x INTEGER); INSERT INTO no_such_table VALUES (1);")
	if _, err := open(t.Context(), path, Options{}, steps); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("from version %d to %d", len(migrations()), len(migrations())+1)) {
		t.Fatalf("open with a failing migration: %v", err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var objects int
	if err := s.db.QueryRow("SELECT count(*) FROM sqlite_schema WHERE name = 'extra'").Scan(&objects); err != nil || objects != 0 {
		t.Errorf("the failed step's table exists (%d, %v)", objects, err)
	}
	rs, err := s.Rules(t.Context())
	if err != nil || !reflect.DeepEqual(rs, want) {
		t.Errorf("rules after a failed migration: %v, %v", len(rs), err)
	}
}

// TestMigrationsAppendOnly holds shipped schema steps to the golden file:
// editing one would leave databases already at its version behind.
// Appending a step needs -update.
func TestMigrationsAppendOnly(t *testing.T) {
	golden := filepath.Join("testdata", "migrations.golden")
	var b strings.Builder
	for i, m := range migrations() {
		fmt.Fprintf(&b, "-- step %d\n%s\n", i+1, m)
	}
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), string(want)) {
		t.Error("a shipped migration step changed; add a new step instead (or run with -update if nothing has shipped)")
	}
	if b.String() != string(want) {
		t.Error("migrations were appended; run go test -update to record them")
	}
}

// TestHandEditedRuleIsReported edits a stored rule into something that is
// not a rule: reading it fails and names the rule, rather than returning
// a different rule.
func TestHandEditedRuleIsReported(t *testing.T) {
	for _, tc := range []struct{ name, edit, wantErr string }{
		{"bad prefix", "UPDATE rules SET dst = '10.0.0.300/8'", `invalid destination "10.0.0.300/8"`},
		{"lifetime refused by the schema", "UPDATE rules SET lifetime = 1", "CHECK constraint failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, rs := populated(t, 1)
			db := rawDB(t, path)
			_, err := db.Exec(tc.edit)
			db.Close()
			if err != nil {
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("edit: %v, want %q", err, tc.wantErr)
				}
				return // the schema itself refused the edit
			}
			s, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = s.Rules(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), rs[0].ID) {
				t.Errorf("Rules() = %v, want an error naming rule %s and containing %q", err, rs[0].ID, tc.wantErr)
			}
		})
	}
}
