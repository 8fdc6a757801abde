package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Per-program aggregates: what each program did, by minute (kept a day),
// by hour and by destination (kept for the history's retention). They are
// written by Record, one transaction per Batch, and read by programs.go.

// Traffic is what one allowed connection carried since its previous
// sample, as the agent's WatchTraffic reports it.
type Traffic struct {
	// Time is when the counts were read; the bytes count in its bucket.
	Time time.Time
	// FirstSeen is when the connection's first packet was decided.
	FirstSeen time.Time
	Process   flow.Process
	Tuple     flow.Tuple
	Host      string

	BytesSent, BytesReceived     uint64
	PacketsSent, PacketsReceived uint64
}

// Bucket sizes.
const (
	minuteSeconds = 60
	hourSeconds   = 3600
	// MinuteRetention is how long minute buckets are kept.
	MinuteRetention = 24 * time.Hour
)

// programKey names a program: its exe, or (only when the exe is unknown)
// its comm. A comm never poses as an exe: they are different fields.
type programKey struct{ exe, commKey string }

func programKeyOf(p flow.Process) programKey {
	if p.Exe != "" {
		return programKey{exe: p.Exe}
	}
	return programKey{commKey: p.Comm}
}

// counts are a bucket's or a destination's counters; never negative.
type counts struct {
	allowed, denied              int64
	bytesSent, bytesReceived     int64
	packetsSent, packetsReceived int64
}

func (c *counts) add(d counts) {
	c.allowed = satAdd(c.allowed, d.allowed)
	c.denied = satAdd(c.denied, d.denied)
	c.bytesSent = satAdd(c.bytesSent, d.bytesSent)
	c.bytesReceived = satAdd(c.bytesReceived, d.bytesReceived)
	c.packetsSent = satAdd(c.packetsSent, d.packetsSent)
	c.packetsReceived = satAdd(c.packetsReceived, d.packetsReceived)
}

// satAdd adds two non-negative counts, stopping at math.MaxInt64.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// clampCount turns a count from the agent into one the store can hold.
func clampCount(n uint64) int64 {
	if n > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(n)
}

type bucketKey struct {
	prog  programKey
	start int64 // Unix seconds
}

type destKey struct {
	prog       programKey
	host, name string // name: the host when known, else the address
	proto      flow.Proto
	port       uint16
}

type destAgg struct {
	counts
	address     string
	first, last int64 // Unix nanoseconds
	// The latest decision in the batch, if any.
	decided         bool
	decidedAt       int64
	decidedBy, rule string
	action          flow.Action
}

type progAgg struct {
	comm string
	last int64 // Unix nanoseconds
}

// Batch gathers decisions and traffic in memory for one Record: the
// rules service fills one for a second or two and then writes it in one
// transaction, because the store fsyncs every commit (synchronous=FULL)
// and a commit per connection could not keep up with a flood of them.
// Its size is the caller's to bound (Len). A Batch is not safe for
// concurrent use.
type Batch struct {
	history  []HistoryEntry
	programs map[programKey]*progAgg
	minutes  map[bucketKey]*counts
	hours    map[bucketKey]*counts
	dests    map[destKey]*destAgg
	samples  int
}

// NewBatch returns an empty Batch.
func NewBatch() *Batch {
	return &Batch{
		programs: make(map[programKey]*progAgg),
		minutes:  make(map[bucketKey]*counts),
		hours:    make(map[bucketKey]*counts),
		dests:    make(map[destKey]*destAgg),
	}
}

// Len is the number of decisions and traffic samples added.
func (b *Batch) Len() int { return len(b.history) + b.samples }

// History returns the decisions added, in order. The slice is the batch's.
func (b *Batch) History() []HistoryEntry { return b.history }

// AddDecision adds a decision: to the history, and to its program's
// buckets and destination as one more connection allowed or denied.
func (b *Batch) AddDecision(e HistoryEntry) error { return b.addDecision(e, false) }

// AddRepeatedDecision adds a decision about a connection already counted
// (a retransmitted SYN, a datagram sent again on a denied flow): to the
// history and to its destination's latest decision, but not as another
// connection.
func (b *Batch) AddRepeatedDecision(e HistoryEntry) error { return b.addDecision(e, true) }

func (b *Batch) addDecision(e HistoryEntry, repeated bool) error {
	at, err := unixNano(e.Time)
	if err != nil || at <= 0 {
		return fmt.Errorf("add decision: time %v out of range", e.Time)
	}
	if _, err := connValues(e.Process, e.Tuple, e.Host); err != nil {
		return fmt.Errorf("add decision: %w", err)
	}
	var c counts
	switch {
	case repeated:
	case e.Action == flow.ActionAllow:
		c.allowed = 1
	case e.Action == flow.ActionDeny, e.Action == flow.ActionReject:
		c.denied = 1
	}
	b.history = append(b.history, e)
	d := b.touch(e.Process, e.Tuple, e.Host, at, at, c)
	if !d.decided || at >= d.decidedAt {
		d.decided, d.decidedAt = true, at
		d.decidedBy, d.rule, d.action = e.DecidedBy, e.RuleID, e.Action
	}
	return nil
}

// AddTraffic adds a traffic sample's counts to its program's buckets and
// destination.
func (b *Batch) AddTraffic(t Traffic) error {
	at, err := unixNano(t.Time)
	if err != nil || at <= 0 {
		return fmt.Errorf("add traffic: time %v out of range", t.Time)
	}
	first, err := unixNano(t.FirstSeen)
	if err != nil || first <= 0 || first > at {
		first = at
	}
	b.samples++
	b.touch(t.Process, t.Tuple, t.Host, first, at, counts{
		bytesSent: clampCount(t.BytesSent), bytesReceived: clampCount(t.BytesReceived),
		packetsSent: clampCount(t.PacketsSent), packetsReceived: clampCount(t.PacketsReceived),
	})
	return nil
}

// touch adds c at time at (first: when the connection began) to the
// program's buckets and destination, and returns the destination.
func (b *Batch) touch(p flow.Process, t flow.Tuple, host string, first, at int64, c counts) *destAgg {
	pk := programKeyOf(p)
	pa := b.programs[pk]
	if pa == nil {
		pa = &progAgg{}
		b.programs[pk] = pa
	}
	if at >= pa.last {
		pa.last = at
		if p.Comm != "" {
			pa.comm = p.Comm
		}
	}
	sec := at / int64(time.Second)
	addBucket(b.minutes, bucketKey{pk, sec - sec%minuteSeconds}, c)
	addBucket(b.hours, bucketKey{pk, sec - sec%hourSeconds}, c)

	addr := addrString(t.Dst)
	dk := destKey{prog: pk, host: host, name: host, proto: t.Proto, port: t.DstPort}
	if host == "" {
		dk.name = addr
	}
	d := b.dests[dk]
	if d == nil {
		d = &destAgg{first: first, last: at}
		b.dests[dk] = d
	}
	d.allowed = satAdd(d.allowed, c.allowed)
	d.denied = satAdd(d.denied, c.denied)
	d.bytesSent = satAdd(d.bytesSent, c.bytesSent)
	d.bytesReceived = satAdd(d.bytesReceived, c.bytesReceived)
	d.first = min(d.first, first)
	if at >= d.last {
		d.last = at
		if addr != "" {
			d.address = addr
		}
	}
	if d.address == "" {
		d.address = addr
	}
	return d
}

func addBucket(m map[bucketKey]*counts, k bucketKey, c counts) {
	if b := m[k]; b != nil {
		b.add(c)
		return
	}
	cc := c
	m[k] = &cc
}

// The aggregate tables and what orders their rows from oldest to newest
// for the row bounds.
var boundedTables = []struct{ table, oldest string }{
	{"history", "SELECT seq FROM history ORDER BY seq LIMIT ?"},
	{"traffic_minute", "SELECT program, start FROM traffic_minute ORDER BY start LIMIT ?"},
	{"traffic_hour", "SELECT program, start FROM traffic_hour ORDER BY start LIMIT ?"},
	{"destinations", "SELECT id FROM destinations ORDER BY last_seen LIMIT ?"},
	{"programs", "SELECT id FROM programs ORDER BY last_seen LIMIT ?"},
}

// rowCounts are the rows of the bounded tables, so that Record trims a
// table only when it is over its bound, at a cost of the rows it drops
// rather than of the rows it keeps. Loaded by counting; nil when unknown.
type rowCounts map[string]int64

// Record writes b in one transaction: its decisions to the history, its
// decisions and traffic to the programs' buckets and destinations. The
// oldest rows beyond each table's bound are dropped in the same
// transaction. On error nothing of b is written.
func (s *Store) Record(ctx context.Context, b *Batch) (err error) {
	if b.Len() == 0 {
		return nil
	}
	s.aggMu.Lock()
	defer s.aggMu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("record activity: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the first error is the one to report
			s.rows = nil
		}
	}()
	if s.rows == nil {
		if s.rows, err = countRows(ctx, tx); err != nil {
			return fmt.Errorf("record activity: %w", err)
		}
	}
	rows := make(rowCounts, len(s.rows))
	for k, v := range s.rows {
		rows[k] = v
	}
	ids, err := upsertPrograms(ctx, tx, b.programs, rows)
	if err != nil {
		return fmt.Errorf("record activity: %w", err)
	}
	for _, bt := range []struct {
		table string
		m     map[bucketKey]*counts
	}{{"traffic_minute", b.minutes}, {"traffic_hour", b.hours}} {
		if err := upsertBuckets(ctx, tx, bt.table, bt.m, ids, rows); err != nil {
			return fmt.Errorf("record activity: %w", err)
		}
	}
	if err := upsertDestinations(ctx, tx, b.dests, ids, rows); err != nil {
		return fmt.Errorf("record activity: %w", err)
	}
	if err := insertHistory(ctx, tx, b.history); err != nil {
		return fmt.Errorf("record activity: %w", err)
	}
	rows["history"] += int64(len(b.history))
	cascaded, err := s.trim(ctx, tx, rows)
	if err != nil {
		return fmt.Errorf("record activity: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("record activity: %w", err)
	}
	s.rows = rows
	if cascaded {
		s.rows = nil // dropping programs dropped their rows too; count again
	}
	return nil
}

// bounds are the row bounds of the bounded tables.
func (s *Store) bounds() map[string]int64 {
	return map[string]int64{
		"history": int64(s.opts.MaxHistory), "traffic_minute": int64(s.opts.MaxMinuteBuckets),
		"traffic_hour": int64(s.opts.MaxHourBuckets), "destinations": int64(s.opts.MaxDestinations),
		"programs": int64(s.opts.MaxPrograms),
	}
}

// trim drops the oldest rows of every table over its bound, updating rows.
// cascaded reports that programs were dropped, with their other rows.
func (s *Store) trim(ctx context.Context, tx *sql.Tx, rows rowCounts) (cascaded bool, err error) {
	bounds := s.bounds()
	for _, bt := range boundedTables {
		over := rows[bt.table] - bounds[bt.table]
		if over <= 0 {
			continue
		}
		// Table names and key columns are constants, never input.
		keys := "seq"
		switch bt.table {
		case "traffic_minute", "traffic_hour":
			keys = "(program, start)"
		case "destinations", "programs":
			keys = "id"
		}
		res, err := tx.ExecContext(ctx, "DELETE FROM "+bt.table+" WHERE "+keys+" IN ("+bt.oldest+")", over)
		if err != nil {
			return false, fmt.Errorf("trim %s: %w", bt.table, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return false, fmt.Errorf("trim %s: %w", bt.table, err)
		}
		rows[bt.table] -= n
		if bt.table == "programs" && n > 0 {
			cascaded = true
		}
	}
	return cascaded, nil
}

func countRows(ctx context.Context, tx *sql.Tx) (rowCounts, error) {
	rows := make(rowCounts, len(boundedTables))
	for _, bt := range boundedTables {
		var n int64
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+bt.table).Scan(&n); err != nil {
			return nil, fmt.Errorf("count %s: %w", bt.table, err)
		}
		rows[bt.table] = n
	}
	return rows, nil
}

func upsertPrograms(ctx context.Context, tx *sql.Tx, progs map[programKey]*progAgg, rows rowCounts) (map[programKey]int64, error) {
	ids := make(map[programKey]int64, len(progs))
	for k, p := range progs {
		var id int64
		err := tx.QueryRowContext(ctx, "SELECT id FROM programs WHERE exe = ? AND comm_key = ?", k.exe, k.commKey).Scan(&id)
		switch {
		case err == nil:
			if _, err := tx.ExecContext(ctx, `UPDATE programs SET
				comm = CASE WHEN ?1 <> '' AND ?2 >= last_seen THEN ?1 ELSE comm END,
				last_seen = max(last_seen, ?2) WHERE id = ?3`, p.comm, p.last, id); err != nil {
				return nil, fmt.Errorf("update program: %w", err)
			}
		case errors.Is(err, sql.ErrNoRows):
			res, err := tx.ExecContext(ctx, "INSERT INTO programs (exe, comm_key, comm, last_seen) VALUES (?,?,?,?)",
				k.exe, k.commKey, p.comm, p.last)
			if err != nil {
				return nil, fmt.Errorf("add program: %w", err)
			}
			if id, err = res.LastInsertId(); err != nil {
				return nil, fmt.Errorf("add program: %w", err)
			}
			rows["programs"]++
		default:
			return nil, fmt.Errorf("find program: %w", err)
		}
		ids[k] = id
	}
	return ids, nil
}

// satSQL adds parameter ?N to col, stopping at the largest integer: a
// plain sum would overflow into a REAL that a STRICT table refuses.
func satSQL(col string, n int) string {
	return fmt.Sprintf("%[1]s = min(%[1]s, 9223372036854775807 - ?%[2]d) + ?%[2]d", col, n)
}

func upsertBuckets(ctx context.Context, tx *sql.Tx, table string, m map[bucketKey]*counts, ids map[programKey]int64, rows rowCounts) error {
	// table is one of two constants, never input.
	update, err := tx.PrepareContext(ctx, "UPDATE "+table+" SET "+
		satSQL("allowed", 1)+", "+satSQL("denied", 2)+", "+satSQL("bytes_sent", 3)+", "+
		satSQL("bytes_received", 4)+", "+satSQL("packets_sent", 5)+", "+satSQL("packets_received", 6)+
		" WHERE program = ?7 AND start = ?8")
	if err != nil {
		return fmt.Errorf("update %s: %w", table, err)
	}
	defer update.Close()
	insert, err := tx.PrepareContext(ctx, "INSERT INTO "+table+
		" (allowed, denied, bytes_sent, bytes_received, packets_sent, packets_received, program, start) VALUES (?,?,?,?,?,?,?,?)")
	if err != nil {
		return fmt.Errorf("insert %s: %w", table, err)
	}
	defer insert.Close()
	for k, c := range m {
		args := []any{c.allowed, c.denied, c.bytesSent, c.bytesReceived, c.packetsSent, c.packetsReceived, ids[k.prog], k.start}
		res, err := update.ExecContext(ctx, args...)
		if err != nil {
			return fmt.Errorf("update %s: %w", table, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("update %s: %w", table, err)
		} else if n > 0 {
			continue
		}
		if _, err := insert.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("insert %s: %w", table, err)
		}
		rows[table]++
	}
	return nil
}

func upsertDestinations(ctx context.Context, tx *sql.Tx, m map[destKey]*destAgg, ids map[programKey]int64, rows rowCounts) error {
	update, err := tx.PrepareContext(ctx, "UPDATE destinations SET "+
		satSQL("allowed", 1)+", "+satSQL("denied", 2)+", "+satSQL("bytes_sent", 3)+", "+satSQL("bytes_received", 4)+`,
		address = CASE WHEN ?6 >= last_seen AND ?5 <> '' THEN ?5 ELSE address END,
		first_seen = min(first_seen, ?7),
		last_seen = max(last_seen, ?6),
		decided_by = CASE WHEN ?8 THEN ?9 ELSE decided_by END,
		rule_id = CASE WHEN ?8 THEN ?10 ELSE rule_id END,
		action = CASE WHEN ?8 THEN ?11 ELSE action END
		WHERE program = ?12 AND host = ?13 AND name = ?14 AND proto = ?15 AND port = ?16`)
	if err != nil {
		return fmt.Errorf("update destinations: %w", err)
	}
	defer update.Close()
	insert, err := tx.PrepareContext(ctx, `INSERT INTO destinations
		(allowed, denied, bytes_sent, bytes_received, address, last_seen, first_seen, decided_by, rule_id, action,
		 program, host, name, proto, port) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`)
	if err != nil {
		return fmt.Errorf("insert destinations: %w", err)
	}
	defer insert.Close()
	for k, d := range m {
		key := []any{ids[k.prog], k.host, k.name, int64(k.proto), int64(k.port)}
		args := append([]any{d.allowed, d.denied, d.bytesSent, d.bytesReceived, d.address, d.last, d.first,
			d.decided, d.decidedBy, d.rule, int64(d.action)}, key...)
		res, err := update.ExecContext(ctx, args...)
		if err != nil {
			return fmt.Errorf("update destinations: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("update destinations: %w", err)
		} else if n > 0 {
			continue
		}
		ins := append([]any{d.allowed, d.denied, d.bytesSent, d.bytesReceived, d.address, d.last, d.first,
			d.decidedBy, d.rule, int64(d.action)}, key...)
		if _, err := insert.ExecContext(ctx, ins...); err != nil {
			return fmt.Errorf("insert destinations: %w", err)
		}
		rows["destinations"]++
	}
	return nil
}

func insertHistory(ctx context.Context, tx *sql.Tx, es []HistoryEntry) error {
	if len(es) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, historyInsert)
	if err != nil {
		return fmt.Errorf("append history: %w", err)
	}
	defer stmt.Close()
	for _, e := range es {
		args, err := historyArgs(e)
		if err != nil {
			return fmt.Errorf("append history: %w", err)
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("append history: %w", err)
		}
	}
	return nil
}

// Prune drops what is older than its retention at now: minute buckets
// after MinuteRetention; hour buckets, history entries, destinations and
// programs not seen within retention.
func (s *Store) Prune(ctx context.Context, now time.Time, retention time.Duration) (err error) {
	if retention <= 0 {
		return fmt.Errorf("prune: retention %s is not positive", retention)
	}
	nowSec := now.Unix()
	minuteCut := nowSec - int64(MinuteRetention/time.Second)
	minuteCut -= minuteCut % minuteSeconds
	hourCut := nowSec - int64(retention/time.Second)
	hourCut -= hourCut % hourSeconds
	cut, err := unixNano(now.Add(-retention))
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	s.aggMu.Lock()
	defer s.aggMu.Unlock()
	rows := s.rows
	s.rows = nil // unknown until this commits
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the first error is the one to report
		}
	}()
	for _, q := range []struct {
		table, sql string
		arg        int64
	}{
		{"traffic_minute", "DELETE FROM traffic_minute WHERE start < ?", minuteCut},
		{"traffic_hour", "DELETE FROM traffic_hour WHERE start < ?", hourCut},
		{"history", "DELETE FROM history WHERE time < ?", cut},
		{"destinations", "DELETE FROM destinations WHERE last_seen < ?", cut},
		{"programs", "DELETE FROM programs WHERE last_seen < ?", cut},
	} {
		res, err := tx.ExecContext(ctx, q.sql, q.arg)
		if err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		if q.table == "programs" && n > 0 {
			rows = nil // their other rows went with them: count again
		}
		if rows != nil {
			rows[q.table] -= n
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	s.rows = rows
	return nil
}
