package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// ErrNotFound is returned (wrapped) when a rule or decide-later entry with the
// given ID does not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned (wrapped) by AddRule when a rule with the given ID
// already exists.
var ErrExists = errors.New("already exists")

// ErrAmbiguous is returned (wrapped) when a program's name names several.
var ErrAmbiguous = errors.New("ambiguous")

// Default bounds of the tables. The history holds a month of a busy
// desktop's connections; the hour buckets a year of 50 programs active
// every hour; the minute buckets a day of 140 programs active every
// minute.
const (
	DefaultMaxHistory       = 100_000
	DefaultMaxDecideLater   = 1_000
	DefaultMaxPrograms      = 10_000
	DefaultMaxDestinations  = 100_000
	DefaultMaxMinuteBuckets = 200_000
	DefaultMaxHourBuckets   = 500_000
)

// busyTimeoutMS is how long a statement waits for another process's lock on
// the file before failing with SQLITE_BUSY.
const busyTimeoutMS = 5000

// Options tune a Store; the zero value means the defaults.
type Options struct {
	// MaxHistory is how many of the newest history entries are kept;
	// 0 means DefaultMaxHistory.
	MaxHistory int
	// MaxDecideLater is how many of the newest decide-later entries are
	// kept; 0 means DefaultMaxDecideLater.
	MaxDecideLater int
	// MaxPrograms, MaxDestinations, MaxMinuteBuckets and MaxHourBuckets
	// bound the aggregate tables (traffic.go): the least recently seen
	// programs and destinations, and the oldest buckets, are dropped
	// beyond them. 0 means the Default of each.
	MaxPrograms      int
	MaxDestinations  int
	MaxMinuteBuckets int
	MaxHourBuckets   int
}

// Store is one user's rules database. Its methods are safe for concurrent
// use; they are serialized on one connection.
type Store struct {
	db             *sql.DB
	path           string
	maxHistory     int
	maxDecideLater int
	opts           Options

	// aggMu serialises Record and Prune, and guards rows.
	aggMu sync.Mutex
	rows  rowCounts
}

// Open opens the rules database at path with default Options, creating it
// (and its parent directory, mode 0700; the file mode 0600) if it does not
// exist, and bringing its schema up to date.
func Open(path string) (*Store, error) {
	return OpenWithOptions(path, Options{})
}

// OpenWithOptions is Open with explicit Options.
//
// It refuses, without modifying it, a file that is not a SQLite database,
// a SQLite database that is not Bastion's, a database that fails SQLite's
// integrity check, and one whose schema is newer than this build knows.
func OpenWithOptions(path string, opts Options) (*Store, error) {
	return open(context.Background(), path, opts, migrations())
}

func open(ctx context.Context, path string, opts Options, steps []string) (*Store, error) {
	for _, b := range []struct {
		v   *int
		def int
	}{
		{&opts.MaxHistory, DefaultMaxHistory}, {&opts.MaxDecideLater, DefaultMaxDecideLater},
		{&opts.MaxPrograms, DefaultMaxPrograms}, {&opts.MaxDestinations, DefaultMaxDestinations},
		{&opts.MaxMinuteBuckets, DefaultMaxMinuteBuckets}, {&opts.MaxHourBuckets, DefaultMaxHourBuckets},
	} {
		if *b.v < 0 {
			return nil, fmt.Errorf("open rules database %s: negative bound in options", path)
		}
		if *b.v == 0 {
			*b.v = b.def
		}
	}
	if path == "" {
		return nil, errors.New("open rules database: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open rules database %s: %w", path, err)
	}
	if err := prepareFile(abs); err != nil {
		return nil, err
	}
	// Everything that may refuse the file runs on a read-only connection,
	// so that a refused file is left exactly as it was: not converted to
	// WAL, not checkpointed.
	version, err := probe(ctx, abs, len(steps))
	if err != nil {
		return nil, err
	}

	db, err := sql.Open("sqlite", dsn(abs, false))
	if err != nil {
		return nil, fmt.Errorf("open rules database %s: %w", abs, err)
	}
	// One connection, never recycled: writes are serialized, and the
	// connection's pragmas hold for every statement.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)

	s := &Store{db: db, path: path, maxHistory: opts.MaxHistory, maxDecideLater: opts.MaxDecideLater, opts: opts}
	if err := s.init(ctx, abs, version, steps); err != nil {
		_ = db.Close() // the init error is the one to report
		return nil, err
	}
	return s, nil
}

// dsn is the modernc.org/sqlite data source name for the file at abs. The
// path goes through a file: URI so that no character in it (say '?') can
// be mistaken for a parameter. SQLite never creates the file (mode rw or
// ro): prepareFile did, and if it vanished since, opening must fail.
func dsn(abs string, readOnly bool) string {
	u := url.URL{Scheme: "file", Path: abs}
	q := url.Values{}
	if readOnly {
		q.Set("mode", "ro")
	} else {
		q.Set("mode", "rw")
	}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS))
	// FULL: in WAL mode, the WAL is fsynced at every commit, so a
	// commit that returned survives power loss, not only a crash.
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	// Every transaction here writes; taking the write lock at BEGIN
	// makes a concurrent writer wait (busy_timeout) instead of failing
	// with SQLITE_BUSY at its first write.
	q.Set("_txlock", "immediate")
	return u.String() + "?" + q.Encode()
}

// sqliteHeader is the first 16 bytes of every SQLite 3 database file.
const sqliteHeader = "SQLite format 3\x00"

// prepareFile creates the parent directory (0700) and an empty database
// file (0600) if they do not exist, and checks that an existing file looks
// like a SQLite database before SQLite touches it.
func prepareFile(abs string) error {
	dir := filepath.Dir(abs)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory for rules database %s: %w", abs, err)
	}
	// SECURITY: the file holds the user's rules and history (program
	// paths, hosts); it is created readable by its owner only. SQLite
	// creates the -wal and -shm files with the database file's mode.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return f.Close()
	}
	if !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create rules database %s: %w", abs, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return fmt.Errorf("open rules database %s: %w", abs, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("open rules database %s: not a regular file (%s)", abs, fi.Mode().Type())
	}
	if fi.Size() == 0 {
		// Created by an earlier Open that stopped before SQLite wrote
		// to it; SQLite treats an empty file as a new database.
		return nil
	}
	f, err = os.Open(abs)
	if err != nil {
		return fmt.Errorf("open rules database %s: %w", abs, err)
	}
	defer f.Close()
	hdr := make([]byte, 100)
	n, err := io.ReadFull(f, hdr)
	if n < len(sqliteHeader) || string(hdr[:len(sqliteHeader)]) != sqliteHeader {
		return fmt.Errorf("%s is not a Bastion rules database: not a SQLite 3 file (it was left untouched)", abs)
	}
	if err != nil {
		return fmt.Errorf("rules database %s is truncated inside its header (%d bytes) and was left untouched (restore it from a backup or move it aside)", abs, n)
	}
	// A non-empty WAL means a crash before a checkpoint finished; the
	// main file may legitimately be shorter than its header says until
	// SQLite replays the WAL, which the integrity check then covers.
	if wal, err := os.Stat(abs + "-wal"); err == nil && wal.Size() > 0 {
		return nil
	}
	return checkSize(abs, hdr, fi.Size())
}

// checkSize refuses a file shorter than its header says. SQLite reads
// the missing end of a truncated file as zeros, and as records carry no
// checksum, integrity checks can miss a cut inside a row's text: the row
// would come back silently changed.
//
// Header layout (https://sqlite.org/fileformat.html): page size at 16
// (big-endian uint16, 1 meaning 65536), change counter at 24, database
// size in pages at 28, and at 92 the change counter for which that size
// is valid. A size whose counter does not match is stale (written by an
// old SQLite) and SQLite itself ignores it; so does this check.
func checkSize(abs string, hdr []byte, size int64) error {
	pageSize := int64(binary.BigEndian.Uint16(hdr[16:18]))
	if pageSize == 1 {
		pageSize = 65536
	}
	pages := int64(binary.BigEndian.Uint32(hdr[28:32]))
	valid := binary.BigEndian.Uint32(hdr[24:28]) == binary.BigEndian.Uint32(hdr[92:96])
	if !valid || pages == 0 || pageSize < 512 || pageSize&(pageSize-1) != 0 {
		return nil // not a size SQLite would use either; SQLite reports the file
	}
	if size < pages*pageSize {
		return fmt.Errorf("rules database %s is truncated and was left untouched (restore it from a backup or move it aside): its header says %d pages of %d bytes, the file holds %d bytes",
			abs, pages, pageSize, size)
	}
	return nil
}

// probe checks, on a read-only connection, that the file at abs is a
// healthy Bastion rules database (or a new, empty one) whose schema this
// build can handle, and returns its schema version.
func probe(ctx context.Context, abs string, known int) (version int64, err error) {
	db, err := sql.Open("sqlite", dsn(abs, true))
	if err != nil {
		return 0, fmt.Errorf("open rules database %s: %w", abs, err)
	}
	defer db.Close() // read-only: closing cannot fail in a way that matters
	db.SetMaxOpenConns(1)

	var appID int64
	if err := db.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return 0, describeOpenError(abs, err)
	}
	if err := checkIntegrity(ctx, db, abs); err != nil {
		return 0, err
	}
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return 0, describeOpenError(abs, err)
	}
	switch appID {
	case applicationID:
	case 0:
		// A new database has no tag and no schema yet. Anything else
		// without our tag is some other program's database.
		var objects int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&objects); err != nil {
			return 0, describeOpenError(abs, err)
		}
		if objects != 0 || version != 0 {
			return 0, fmt.Errorf("%s is not a Bastion rules database: a SQLite database without Bastion's application id (it was left untouched)", abs)
		}
	default:
		return 0, fmt.Errorf("%s is not a Bastion rules database: SQLite application id %#x (it was left untouched)", abs, appID)
	}
	if version > int64(known) {
		return 0, fmt.Errorf("rules database %s has schema version %d, newer than this Bastion knows (%d); it was left untouched", abs, version, known)
	}
	if version < 0 {
		return 0, fmt.Errorf("rules database %s has invalid schema version %d; it was left untouched", abs, version)
	}
	return version, nil
}

// init readies a probed database at the given version: WAL mode, then a
// backup and the migrations if the schema is older than this build's.
func (s *Store) init(ctx context.Context, abs string, version int64, steps []string) error {
	// Persistent in the file; a new database becomes WAL here.
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return describeOpenError(abs, err)
	}
	if mode != "wal" {
		return fmt.Errorf("rules database %s: cannot use write-ahead logging (journal mode stays %q)", abs, mode)
	}
	if version > 0 && version < int64(len(steps)) {
		if err := s.backup(ctx, abs, version); err != nil {
			return err
		}
	}
	if err := migrate(ctx, s.db, int(version), steps); err != nil {
		return fmt.Errorf("rules database %s: %w", abs, err)
	}
	return nil
}

// checkIntegrity runs SQLite's quick_check: every page, record and
// constraint of every table is read and checked (it skips only verifying
// that indexes match their tables, which integrity_check adds at several
// times the cost).
func checkIntegrity(ctx context.Context, db *sql.DB, abs string) error {
	rows, err := db.QueryContext(ctx, "PRAGMA quick_check(20)")
	if err != nil {
		return describeOpenError(abs, err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var msg string
		if err := rows.Scan(&msg); err != nil {
			return describeOpenError(abs, err)
		}
		problems = append(problems, msg)
	}
	if err := rows.Err(); err != nil {
		return describeOpenError(abs, err)
	}
	if len(problems) == 1 && problems[0] == "ok" {
		return nil
	}
	return fmt.Errorf("rules database %s failed its integrity check and was left untouched (restore it from a backup or move it aside): %s",
		abs, strings.Join(problems, "; "))
}

// describeOpenError names the file and says what SQLite's verdict means.
func describeOpenError(abs string, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "SQLITE_NOTADB") || strings.Contains(msg, "file is not a database"):
		return fmt.Errorf("%s is not a Bastion rules database (it was left untouched): %w", abs, err)
	case strings.Contains(msg, "SQLITE_CORRUPT") || strings.Contains(msg, "malformed"):
		return fmt.Errorf("rules database %s is damaged and was left untouched (restore it from a backup or move it aside): %w", abs, err)
	}
	return fmt.Errorf("open rules database %s: %w", abs, err)
}

// backup copies a database about to be migrated to "<file>.v<version>.bak",
// so that a faulty migration cannot lose the user's rules. An existing
// backup is kept, not overwritten.
func (s *Store) backup(ctx context.Context, abs string, version int64) error {
	dst := fmt.Sprintf("%s.v%d.bak", abs, version)
	// VACUUM INTO needs a missing or empty target; creating it first
	// gives it mode 0600.
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("back up rules database %s before migrating it: %w", abs, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("back up rules database %s before migrating it: %w", abs, err)
	}
	if _, err := s.db.ExecContext(ctx, "VACUUM INTO ?", dst); err != nil {
		_ = os.Remove(dst) // a partial copy is no backup
		return fmt.Errorf("back up rules database %s to %s before migrating it: %w", abs, dst, err)
	}
	// VACUUM INTO does not sync its output; the migration that follows
	// is synced, so sync the backup first.
	if err := syncFile(dst); err != nil {
		return fmt.Errorf("back up rules database %s before migrating it: %w", abs, err)
	}
	return nil
}

func syncFile(name string) error {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("sync %s: %w", name, err)
	}
	return f.Close()
}

// Close closes the database. An acknowledged write is already durable;
// Close only releases the file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close rules database %s: %w", s.path, err)
	}
	return nil
}

// Path is the path the Store was opened with.
func (s *Store) Path() string { return s.path }

// newID returns 16 random lower-case hex characters.
func newID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
