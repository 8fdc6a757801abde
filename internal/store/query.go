package store

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// HistoryFilter selects history entries; its zero value selects all.
type HistoryFilter struct {
	// Program, when set, keeps its entries only.
	Program *Program
	// Host is a substring of the host name or of the address.
	Host string
	// Actions, when not empty, are the actions kept.
	Actions []flow.Action
	// Since and Until bound the entries' times (inclusive); zero is
	// unbounded.
	Since, Until time.Time
	RuleID       string
	// Text is a substring of the executable, comm, command line, host,
	// address or decided_by, compared without regard to ASCII case.
	Text string
}

// QueryHistory returns the newest limit entries f selects, newest first,
// and whether more matched.
func (s *Store) QueryHistory(ctx context.Context, f HistoryFilter, limit int) ([]HistoryEntry, bool, error) {
	if limit <= 0 || limit >= math.MaxInt32 {
		return nil, false, fmt.Errorf("query history: limit %d out of range", limit)
	}
	var (
		where []string
		args  []any
	)
	if p := f.Program; p != nil {
		if p.Exe != "" {
			where, args = append(where, "exe = ?"), append(args, p.Exe)
		} else {
			where, args = append(where, "exe = '' AND comm = ?"), append(args, p.Comm)
		}
	}
	if f.Host != "" {
		where = append(where, "(instr(lower(host), lower(?)) > 0 OR instr(lower(dst), lower(?)) > 0)")
		args = append(args, f.Host, f.Host)
	}
	if len(f.Actions) > 0 {
		where = append(where, "action IN ("+strings.TrimSuffix(strings.Repeat("?,", len(f.Actions)), ",")+")")
		for _, a := range f.Actions {
			args = append(args, int64(a))
		}
	}
	for _, t := range []struct {
		at time.Time
		op string
	}{{f.Since, ">="}, {f.Until, "<="}} {
		if t.at.IsZero() {
			continue
		}
		n, err := unixNano(t.at)
		if err != nil {
			return nil, false, fmt.Errorf("query history: %w", err)
		}
		where, args = append(where, "time "+t.op+" ?"), append(args, n)
	}
	if f.RuleID != "" {
		where, args = append(where, "rule_id = ?"), append(args, f.RuleID)
	}
	if f.Text != "" {
		// args is a JSON array: joining its elements with spaces turns
		// it into the command line, near enough for a search.
		where = append(where, `instr(lower(exe || char(10) || comm || char(10) || replace(coalesce(args, ''), '","', ' ') || char(10) ||
			host || char(10) || dst || char(10) || decided_by), lower(?)) > 0`)
		args = append(args, f.Text)
	}
	q := "SELECT seq, time, " + connColumns + ", action, decided_by, rule_id FROM history"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq DESC LIMIT ?"
	args = append(args, limit+1)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, false, fmt.Errorf("query history: %w", err)
	}
	defer rows.Close()
	var out []HistoryEntry
	for rows.Next() {
		e, seq, err := scanHistory(rows.Scan)
		if err != nil {
			return nil, false, fmt.Errorf("query history: entry %d: %w", seq, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("query history: %w", err)
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// scanHistory scans and checks one row of history columns (seq, time,
// connColumns, action, decided_by, rule_id).
func scanHistory(scan func(...any) error) (HistoryEntry, int64, error) {
	var (
		e      HistoryEntry
		seq, t int64
		c      connRow
		action int64
	)
	dest := append([]any{&seq, &t}, c.dest()...)
	dest = append(dest, &action, &e.DecidedBy, &e.RuleID)
	if err := scan(dest...); err != nil {
		return e, seq, err
	}
	var err error
	if e.Process, e.Tuple, e.Host, err = c.decode(); err != nil {
		return e, seq, err
	}
	if action < 0 || action > math.MaxUint8 {
		return e, seq, fmt.Errorf("invalid action %d in the database", action)
	}
	e.Time = fromUnixNano(t)
	e.Action = flow.Action(action)
	return e, seq, nil
}
