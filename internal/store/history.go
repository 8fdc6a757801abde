package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// HistoryEntry is one decision, as the history shows it.
type HistoryEntry struct {
	Time    time.Time
	Process flow.Process
	Tuple   flow.Tuple
	Host    string
	Action  flow.Action
	// DecidedBy names what decided, e.g. "rule", "prompt", "policy".
	DecidedBy string
	RuleID    string
}

// DecideLaterEntry is a connection the user chose to decide later; Applied
// is what was done to it meanwhile.
type DecideLaterEntry struct {
	ID      string
	Time    time.Time
	Process flow.Process
	Tuple   flow.Tuple
	Host    string
	Applied flow.Action
}

// connColumns are the process and tuple columns history and decide_later
// share, in connValues order.
const connColumns = `pid, tgid, ppid, uid, gid, comm, exe, args, start_time, source,
	proto, src, dst, src_port, dst_port, host, exe_identity, mnt_ns`

// historyInsert adds one history row; historyArgs gives its arguments.
const historyInsert = "INSERT INTO history (time, " + connColumns + ", action, decided_by, rule_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"

// historyArgs are historyInsert's arguments for e.
func historyArgs(e HistoryEntry) ([]any, error) {
	t, err := unixNano(e.Time)
	if err != nil {
		return nil, fmt.Errorf("time: %w", err)
	}
	cv, err := connValues(e.Process, e.Tuple, e.Host)
	if err != nil {
		return nil, err
	}
	args := append([]any{t}, cv...)
	return append(args, int64(e.Action), e.DecidedBy, e.RuleID), nil
}

// AppendHistory adds e to the history, dropping the oldest entries beyond
// the bound (Options.MaxHistory) in the same transaction.
func (s *Store) AppendHistory(ctx context.Context, e HistoryEntry) (err error) {
	args, err := historyArgs(e)
	if err != nil {
		return fmt.Errorf("append history: %w", err)
	}
	s.aggMu.Lock()
	defer s.aggMu.Unlock()
	s.rows = nil // Record counts the history again
	return s.appendBounded(ctx, "append history", historyInsert, args, "history", s.maxHistory)
}

// History returns the newest limit history entries (all that are kept if
// limit <= 0), oldest first.
func (s *Store) History(ctx context.Context, limit int) ([]HistoryEntry, error) {
	if limit <= 0 {
		limit = math.MaxInt32
	}
	rows, err := s.db.QueryContext(ctx, `SELECT * FROM (
		SELECT seq, time, `+connColumns+`, action, decided_by, rule_id
		FROM history ORDER BY seq DESC LIMIT ?) ORDER BY seq`, limit)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	defer rows.Close()
	var out []HistoryEntry
	for rows.Next() {
		e, seq, err := scanHistory(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("read history entry %d: %w", seq, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	return out, nil
}

// AddDecideLater adds e to the decide-later list with a new random ID (16
// hex characters) unless e.ID is set, and returns it as stored. The oldest
// entries beyond the bound (Options.MaxDecideLater) are dropped in the same
// transaction.
func (s *Store) AddDecideLater(ctx context.Context, e DecideLaterEntry) (DecideLaterEntry, error) {
	if e.ID == "" {
		id, err := newID()
		if err != nil {
			return DecideLaterEntry{}, fmt.Errorf("add decide-later entry: %w", err)
		}
		e.ID = id
	}
	e.Time = utc(e.Time)
	t, err := unixNano(e.Time)
	if err != nil {
		return DecideLaterEntry{}, fmt.Errorf("add decide-later entry %s: time: %w", e.ID, err)
	}
	cv, err := connValues(e.Process, e.Tuple, e.Host)
	if err != nil {
		return DecideLaterEntry{}, fmt.Errorf("add decide-later entry %s: %w", e.ID, err)
	}
	args := append([]any{e.ID, t}, cv...)
	args = append(args, int64(e.Applied))
	if err := s.appendBounded(ctx, "add decide-later entry "+e.ID,
		"INSERT INTO decide_later (id, time, "+connColumns+", applied) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
		args, "decide_later", s.maxDecideLater); err != nil {
		return DecideLaterEntry{}, err
	}
	return e, nil
}

// DecideLater returns the decide-later list, oldest first.
func (s *Store) DecideLater(ctx context.Context) ([]DecideLaterEntry, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, time, "+connColumns+", applied FROM decide_later ORDER BY seq")
	if err != nil {
		return nil, fmt.Errorf("read decide-later list: %w", err)
	}
	defer rows.Close()
	var out []DecideLaterEntry
	for rows.Next() {
		var (
			e          DecideLaterEntry
			t, applied int64
			c          connRow
		)
		dest := append([]any{&e.ID, &t}, c.dest()...)
		dest = append(dest, &applied)
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("read decide-later list: %w", err)
		}
		if e.Process, e.Tuple, e.Host, err = c.decode(); err != nil {
			return nil, fmt.Errorf("read decide-later entry %s: %w", e.ID, err)
		}
		if applied < 0 || applied > math.MaxUint8 {
			return nil, fmt.Errorf("read decide-later entry %s: invalid action %d in the database", e.ID, applied)
		}
		e.Time = fromUnixNano(t)
		e.Applied = flow.Action(applied)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read decide-later list: %w", err)
	}
	return out, nil
}

// RemoveDecideLater removes the entry with the given ID; a missing entry
// fails with ErrNotFound.
func (s *Store) RemoveDecideLater(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, "DELETE FROM decide_later WHERE id = ?", id)
	if err != nil {
		return fmt.Errorf("remove decide-later entry %s: %w", id, err)
	}
	return oneRow(res, "remove decide-later entry", id)
}

// appendBounded runs insert and then trims table (ordered by seq) to its
// newest keep rows, in one transaction. Trimming costs an index seek: seq
// is the rowid.
func (s *Store) appendBounded(ctx context.Context, op, insert string, args []any, table string, keep int) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the first error is the one to report
		}
	}()
	if _, err := tx.ExecContext(ctx, insert, args...); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	// table is one of two constants, never input.
	if _, err := tx.ExecContext(ctx, "DELETE FROM "+table+
		" WHERE seq <= (SELECT seq FROM "+table+" ORDER BY seq DESC LIMIT 1 OFFSET ?)", keep); err != nil {
		return fmt.Errorf("%s: trim %s: %w", op, table, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// connValues returns the connColumns of a process, tuple and host.
func connValues(p flow.Process, t flow.Tuple, host string) ([]any, error) {
	var args any // NULL: argv unknown
	if p.Args != nil {
		b, err := json.Marshal(p.Args)
		if err != nil {
			return nil, fmt.Errorf("encode args: %w", err)
		}
		args = string(b)
	}
	if p.StartTime > math.MaxInt64 {
		return nil, fmt.Errorf("start time %d out of range", p.StartTime)
	}
	return []any{
		int64(p.PID), int64(p.TGID), int64(p.PPID), int64(p.UID), int64(p.GID),
		p.Comm, p.Exe, args, int64(p.StartTime), p.Source,
		int64(t.Proto), addrString(t.Src), addrString(t.Dst), int64(t.SrcPort), int64(t.DstPort), host,
		int64(p.ExeIdentity), int64(p.MntNS),
	}, nil
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// connRow scans connColumns.
type connRow struct {
	pid, tgid, ppid, uid, gid int64
	comm, exe                 string
	args                      sql.NullString
	startTime                 int64
	source                    string
	proto                     int64
	src, dst                  string
	srcPort, dstPort          int64
	host                      string
	exeIdentity, mntNS        int64
}

func (c *connRow) dest() []any {
	return []any{&c.pid, &c.tgid, &c.ppid, &c.uid, &c.gid, &c.comm, &c.exe, &c.args, &c.startTime, &c.source,
		&c.proto, &c.src, &c.dst, &c.srcPort, &c.dstPort, &c.host, &c.exeIdentity, &c.mntNS}
}

func (c *connRow) decode() (flow.Process, flow.Tuple, string, error) {
	var (
		p flow.Process
		t flow.Tuple
	)
	for _, v := range []struct {
		name string
		v    int64
		max  int64
	}{
		{"pid", c.pid, math.MaxUint32}, {"tgid", c.tgid, math.MaxUint32}, {"ppid", c.ppid, math.MaxUint32},
		{"uid", c.uid, math.MaxUint32}, {"gid", c.gid, math.MaxUint32}, {"start time", c.startTime, math.MaxInt64},
		{"protocol", c.proto, math.MaxUint8}, {"exe identity", c.exeIdentity, math.MaxUint8}, {"mount namespace", c.mntNS, math.MaxUint32}, {"source port", c.srcPort, math.MaxUint16}, {"destination port", c.dstPort, math.MaxUint16},
	} {
		if v.v < 0 || v.v > v.max {
			return p, t, "", fmt.Errorf("invalid %s %d in the database", v.name, v.v)
		}
	}
	p = flow.Process{
		PID: uint32(c.pid), TGID: uint32(c.tgid), PPID: uint32(c.ppid), UID: uint32(c.uid), GID: uint32(c.gid),
		Comm: c.comm, Exe: c.exe, StartTime: uint64(c.startTime), Source: c.source,
		ExeIdentity: flow.ExeIdentity(c.exeIdentity), MntNS: uint32(c.mntNS),
	}
	if c.args.Valid {
		if err := json.Unmarshal([]byte(c.args.String), &p.Args); err != nil {
			return p, t, "", fmt.Errorf("invalid args in the database: %w", err)
		}
		if p.Args == nil {
			p.Args = []string{} // "null" was never written; keep "known" known
		}
	}
	t = flow.Tuple{Proto: flow.Proto(c.proto), SrcPort: uint16(c.srcPort), DstPort: uint16(c.dstPort)}
	var err error
	if t.Src, err = parseAddr(c.src); err != nil {
		return p, t, "", fmt.Errorf("invalid source address in the database: %w", err)
	}
	if t.Dst, err = parseAddr(c.dst); err != nil {
		return p, t, "", fmt.Errorf("invalid destination address in the database: %w", err)
	}
	return p, t, c.host, nil
}

func parseAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	return netip.ParseAddr(s)
}
