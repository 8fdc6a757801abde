// Package store keeps one user's Bastion state on disk: the user's stored
// rules (Duration and Forever lifetimes only; Once and Session rules never
// reach disk), their hit counters, a bounded history of decisions, a
// bounded list of connections the user chose to decide later, and
// per-program aggregates: connections allowed and denied, bytes and
// packets by minute (kept a day) and by hour, and per destination (kept,
// with the history, for the retention the caller prunes with). Every table
// has a row bound (Options); the oldest rows beyond it are dropped.
//
// Decisions and traffic are written in batches (Batch, Record): one
// transaction, so one fsync, for everything a second or two brought.
//
// The state lives in one SQLite database (modernc.org/sqlite, pure Go) that
// the per-user rules service opens with Open. Its schema is versioned by
// PRAGMA user_version and tagged with a Bastion application_id; migrations
// are an append-only list of SQL steps applied in one transaction, after a
// copy of the old file is kept beside it.
//
// Durability: the database runs in WAL mode with synchronous=FULL, so a
// write whose call has returned without error (an acknowledged write) is in
// the file and fsynced: it survives the process being killed and the
// machine losing power. A write that had not returned is either wholly
// present or wholly absent. All access goes through one connection, so
// writes are serialized within a process; other processes are serialized by
// SQLite's locks and wait up to the busy timeout.
//
// Trust boundary: the database file belongs to the user who runs the rules
// service and is not a security boundary against that user — they may edit
// it by hand, and a crash or a full disk may damage it. What the store must
// guarantee is that it never silently loses or invents data: Open checks
// the file's integrity and refuses, with an error naming the file, one that
// is damaged, is not a SQLite database, is another program's database, or
// was written by a newer Bastion; it never overwrites or deletes such a
// file. Values read back are validated like values written, so a hand edit
// that breaks a rule surfaces as an error rather than a wrong rule, and one
// that breaks a count, a bucket or a destination as an error rather than a
// wrong figure. Program paths, comms, host names and command lines in the
// history and the aggregates come from other programs and the network:
// they are data, bound as SQL parameters, never part of a statement. Rules
// read from here still pass through the rules engine's own validation
// before they decide anything.
package store
