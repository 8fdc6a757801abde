package store

import (
	"context"
	"database/sql"
	"fmt"
)

// applicationID tags a SQLite file as a Bastion rules database (PRAGMA
// application_id, bytes 68-71 of the header): "BaST".
const applicationID = 0x42615354

// migrations returns the schema's versions: step i takes a database from
// user_version i to i+1.
//
// Append only. A step that has shipped is never edited, because databases
// already at its version would never run the edited text; change the schema
// with a new step instead. TestMigrationsAppendOnly holds the shipped steps
// to testdata/migrations.golden.
func migrations() []string {
	return []string{
		// 1: rules.
		`CREATE TABLE rules (
		id         TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
		enabled    INTEGER NOT NULL CHECK (enabled IN (0, 1)),
		action     INTEGER NOT NULL CHECK (action BETWEEN 1 AND 3),
		exe        TEXT    NOT NULL DEFAULT '',
		cmdline    TEXT    NOT NULL DEFAULT '',
		exe_sha256 TEXT    NOT NULL DEFAULT '',
		dst        TEXT    NOT NULL DEFAULT '',
		port_min   INTEGER NOT NULL DEFAULT 0 CHECK (port_min BETWEEN 0 AND 65535),
		port_max   INTEGER NOT NULL DEFAULT 0 CHECK (port_max BETWEEN port_min AND 65535),
		host       TEXT    NOT NULL DEFAULT '',
		proto      INTEGER NOT NULL DEFAULT 0 CHECK (proto BETWEEN 0 AND 255),
		lifetime   INTEGER NOT NULL CHECK (lifetime IN (2, 4)),
		expires    INTEGER NOT NULL DEFAULT 0,
		created    INTEGER NOT NULL,
		hits       INTEGER NOT NULL DEFAULT 0 CHECK (hits >= 0),
		last_hit   INTEGER NOT NULL DEFAULT 0,
		note       TEXT    NOT NULL DEFAULT ''
	) STRICT;`,

		// 2: decision history and decide-later list. Rows are ordered by seq,
		// the insertion order, not by time: the wall clock may step back.
		`CREATE TABLE history (
		seq        INTEGER PRIMARY KEY,
		time       INTEGER NOT NULL,
		pid        INTEGER NOT NULL DEFAULT 0,
		tgid       INTEGER NOT NULL DEFAULT 0,
		ppid       INTEGER NOT NULL DEFAULT 0,
		uid        INTEGER NOT NULL DEFAULT 0,
		gid        INTEGER NOT NULL DEFAULT 0,
		comm       TEXT    NOT NULL DEFAULT '',
		exe        TEXT    NOT NULL DEFAULT '',
		args       TEXT,   -- JSON array; NULL when unknown
		start_time INTEGER NOT NULL DEFAULT 0,
		source     TEXT    NOT NULL DEFAULT '',
		proto      INTEGER NOT NULL DEFAULT 0,
		src        TEXT    NOT NULL DEFAULT '',
		dst        TEXT    NOT NULL DEFAULT '',
		src_port   INTEGER NOT NULL DEFAULT 0,
		dst_port   INTEGER NOT NULL DEFAULT 0,
		host       TEXT    NOT NULL DEFAULT '',
		action     INTEGER NOT NULL DEFAULT 0,
		decided_by TEXT    NOT NULL DEFAULT '',
		rule_id    TEXT    NOT NULL DEFAULT ''
	) STRICT;
	CREATE TABLE decide_later (
		seq        INTEGER PRIMARY KEY,
		id         TEXT    NOT NULL UNIQUE CHECK (id <> ''),
		time       INTEGER NOT NULL,
		pid        INTEGER NOT NULL DEFAULT 0,
		tgid       INTEGER NOT NULL DEFAULT 0,
		ppid       INTEGER NOT NULL DEFAULT 0,
		uid        INTEGER NOT NULL DEFAULT 0,
		gid        INTEGER NOT NULL DEFAULT 0,
		comm       TEXT    NOT NULL DEFAULT '',
		exe        TEXT    NOT NULL DEFAULT '',
		args       TEXT,
		start_time INTEGER NOT NULL DEFAULT 0,
		source     TEXT    NOT NULL DEFAULT '',
		proto      INTEGER NOT NULL DEFAULT 0,
		src        TEXT    NOT NULL DEFAULT '',
		dst        TEXT    NOT NULL DEFAULT '',
		src_port   INTEGER NOT NULL DEFAULT 0,
		dst_port   INTEGER NOT NULL DEFAULT 0,
		host       TEXT    NOT NULL DEFAULT '',
		applied    INTEGER NOT NULL DEFAULT 0
	) STRICT;`,

		// 3: rules for a host file in every mount namespace; whether a
		// recorded process's executable was the host's file, and its mount
		// namespace (flow.ExeIdentity, flow.Process.MntNS).
		`ALTER TABLE rules ADD COLUMN any_mount_ns INTEGER NOT NULL DEFAULT 0 CHECK (any_mount_ns IN (0, 1));
	ALTER TABLE history ADD COLUMN exe_identity INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE history ADD COLUMN mnt_ns INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE decide_later ADD COLUMN exe_identity INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE decide_later ADD COLUMN mnt_ns INTEGER NOT NULL DEFAULT 0;`,

		// 4: per-program aggregates (traffic.go). A program is its exe, or
		// its comm when the exe is unknown (comm_key is then the comm, else
		// empty, so that a comm can never pose as a path). Bucket starts
		// are Unix seconds; other times Unix nanoseconds, as in history.
		// Every count is >= 0; reads check it again. The indexes on
		// destinations cover the counts of destinations seen since a
		// time (all programs', one program's) and the pruning; the
		// history gets the ones its queries and its pruning by age use.
		`CREATE TABLE programs (
		id        INTEGER PRIMARY KEY,
		exe       TEXT    NOT NULL,
		comm_key  TEXT    NOT NULL,
		comm      TEXT    NOT NULL DEFAULT '',
		last_seen INTEGER NOT NULL,
		UNIQUE (exe, comm_key),
		CHECK (exe = '' OR comm_key = '')
	) STRICT;
	CREATE INDEX programs_last_seen ON programs (last_seen);
	CREATE TABLE traffic_minute (
		program          INTEGER NOT NULL REFERENCES programs (id) ON DELETE CASCADE,
		start            INTEGER NOT NULL CHECK (start % 60 = 0),
		allowed          INTEGER NOT NULL DEFAULT 0 CHECK (allowed >= 0),
		denied           INTEGER NOT NULL DEFAULT 0 CHECK (denied >= 0),
		bytes_sent       INTEGER NOT NULL DEFAULT 0 CHECK (bytes_sent >= 0),
		bytes_received   INTEGER NOT NULL DEFAULT 0 CHECK (bytes_received >= 0),
		packets_sent     INTEGER NOT NULL DEFAULT 0 CHECK (packets_sent >= 0),
		packets_received INTEGER NOT NULL DEFAULT 0 CHECK (packets_received >= 0),
		PRIMARY KEY (program, start)
	) STRICT, WITHOUT ROWID;
	CREATE INDEX traffic_minute_start ON traffic_minute (start);
	CREATE TABLE traffic_hour (
		program          INTEGER NOT NULL REFERENCES programs (id) ON DELETE CASCADE,
		start            INTEGER NOT NULL CHECK (start % 3600 = 0),
		allowed          INTEGER NOT NULL DEFAULT 0 CHECK (allowed >= 0),
		denied           INTEGER NOT NULL DEFAULT 0 CHECK (denied >= 0),
		bytes_sent       INTEGER NOT NULL DEFAULT 0 CHECK (bytes_sent >= 0),
		bytes_received   INTEGER NOT NULL DEFAULT 0 CHECK (bytes_received >= 0),
		packets_sent     INTEGER NOT NULL DEFAULT 0 CHECK (packets_sent >= 0),
		packets_received INTEGER NOT NULL DEFAULT 0 CHECK (packets_received >= 0),
		PRIMARY KEY (program, start)
	) STRICT, WITHOUT ROWID;
	CREATE INDEX traffic_hour_start ON traffic_hour (start);
	CREATE TABLE destinations (
		id             INTEGER PRIMARY KEY,
		program        INTEGER NOT NULL REFERENCES programs (id) ON DELETE CASCADE,
		host           TEXT    NOT NULL,
		address        TEXT    NOT NULL,
		name           TEXT    NOT NULL,
		proto          INTEGER NOT NULL CHECK (proto BETWEEN 0 AND 255),
		port           INTEGER NOT NULL CHECK (port BETWEEN 0 AND 65535),
		allowed        INTEGER NOT NULL DEFAULT 0 CHECK (allowed >= 0),
		denied         INTEGER NOT NULL DEFAULT 0 CHECK (denied >= 0),
		bytes_sent     INTEGER NOT NULL DEFAULT 0 CHECK (bytes_sent >= 0),
		bytes_received INTEGER NOT NULL DEFAULT 0 CHECK (bytes_received >= 0),
		first_seen     INTEGER NOT NULL,
		last_seen      INTEGER NOT NULL,
		decided_by     TEXT    NOT NULL DEFAULT '',
		rule_id        TEXT    NOT NULL DEFAULT '',
		action         INTEGER NOT NULL DEFAULT 0 CHECK (action BETWEEN 0 AND 3),
		UNIQUE (program, host, name, proto, port),
		CHECK (host = '' OR host = name)
	) STRICT;
	CREATE INDEX destinations_last_seen ON destinations (last_seen, program);
	CREATE INDEX destinations_program ON destinations (program, last_seen);
	CREATE INDEX history_time ON history (time);
	CREATE INDEX history_exe ON history (exe, comm);`,
	}
}

// migrate brings db from version from to len(steps) in one transaction, so
// a failure (or a crash) leaves the database at version from, untouched.
func migrate(ctx context.Context, db *sql.DB, from int, steps []string) (err error) {
	if from >= len(steps) {
		return nil
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the migration's error is the one to report
		}
	}()
	if from == 0 {
		// Tag the file as ours in the same transaction that creates the
		// schema, so a file holding Bastion tables always carries the tag.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", applicationID)); err != nil {
			return fmt.Errorf("set application id: %w", err)
		}
	}
	for v := from; v < len(steps); v++ {
		if _, err := tx.ExecContext(ctx, steps[v]); err != nil {
			return fmt.Errorf("migrate schema from version %d to %d: %w", v, v+1, err)
		}
	}
	// user_version lives in the file header, which the transaction covers.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(steps))); err != nil {
		return fmt.Errorf("set schema version %d: %w", len(steps), err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit migration to version %d: %w", len(steps), err)
	}
	return nil
}
