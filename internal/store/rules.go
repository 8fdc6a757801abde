package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
)

// Hit is what RecordHits adds to one rule's counters.
type Hit struct {
	Count uint64    // added to the rule's Hits
	Last  time.Time // the rule's LastHit becomes the later of this and its current value
}

const ruleColumns = `id, enabled, action, exe, cmdline, exe_sha256, dst, port_min, port_max,
	host, proto, lifetime, expires, created, hits, last_hit, note, any_mount_ns`

// Rules returns every stored rule, in the order they were added.
func (s *Store) Rules(ctx context.Context) ([]rules.Rule, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+ruleColumns+" FROM rules ORDER BY rowid")
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	defer rows.Close()
	var rs []rules.Rule
	for rows.Next() {
		r, err := scanRule(rows)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return rs, nil
}

// AddRule stores r and returns it as stored: with a new random ID (16 hex
// characters) if r.ID is empty, Created set to now if zero, and every time
// in UTC. Only Duration and Forever rules may be stored; Once and Session
// rules live in memory only. A rule whose ID exists already fails with
// ErrExists.
func (s *Store) AddRule(ctx context.Context, r rules.Rule) (rules.Rule, error) {
	if r.ID == "" {
		id, err := newID()
		if err != nil {
			return rules.Rule{}, fmt.Errorf("add rule: %w", err)
		}
		r.ID = id
	}
	if r.Created.IsZero() {
		r.Created = time.Now()
	}
	r = normalize(r)
	v, err := ruleValues(r)
	if err != nil {
		return rules.Rule{}, fmt.Errorf("add rule %s: %w", r.ID, err)
	}
	// INSERT ... ON CONFLICT DO NOTHING tells a duplicate ID apart from
	// other failures without parsing SQLite's error text.
	res, err := s.db.ExecContext(ctx, "INSERT INTO rules ("+ruleColumns+
		") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING", v...)
	if err != nil {
		return rules.Rule{}, fmt.Errorf("add rule %s: %w", r.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return rules.Rule{}, fmt.Errorf("add rule %s: %w", r.ID, err)
	} else if n == 0 {
		return rules.Rule{}, fmt.Errorf("add rule %s: %w", r.ID, ErrExists)
	}
	return r, nil
}

// UpdateRule replaces the stored rule with r's ID by r, except for its hit
// counters (Hits, LastHit), which only RecordHits changes, so that an edit
// based on an older read cannot lose hits counted since; and Created, which
// is kept when r.Created is zero. A missing rule fails with ErrNotFound.
func (s *Store) UpdateRule(ctx context.Context, r rules.Rule) error {
	if r.ID == "" {
		return errors.New("update rule: empty id")
	}
	r = normalize(r)
	v, err := ruleValues(r)
	if err != nil {
		return fmt.Errorf("update rule %s: %w", r.ID, err)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE rules SET
		enabled = ?2, action = ?3, exe = ?4, cmdline = ?5, exe_sha256 = ?6, dst = ?7,
		port_min = ?8, port_max = ?9, host = ?10, proto = ?11, lifetime = ?12, expires = ?13,
		created = CASE WHEN ?14 = 0 THEN created ELSE ?14 END, note = ?17, any_mount_ns = ?18
		WHERE id = ?1`, v...)
	if err != nil {
		return fmt.Errorf("update rule %s: %w", r.ID, err)
	}
	return oneRow(res, "update rule", r.ID)
}

// DeleteRule deletes the rule with the given ID; a missing rule fails with
// ErrNotFound.
func (s *Store) DeleteRule(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, "DELETE FROM rules WHERE id = ?", id)
	if err != nil {
		return fmt.Errorf("delete rule %s: %w", id, err)
	}
	return oneRow(res, "delete rule", id)
}

// RecordHits adds each Hit to the rule with its ID, in one transaction.
// IDs of rules that no longer exist are skipped: a rule may be deleted
// while its hits are on their way.
func (s *Store) RecordHits(ctx context.Context, hits map[string]Hit) (err error) {
	if len(hits) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("record hits: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the first error is the one to report
		}
	}()
	stmt, err := tx.PrepareContext(ctx, `UPDATE rules SET
		hits = CASE WHEN hits > 9223372036854775807 - ?2 THEN 9223372036854775807 ELSE hits + ?2 END,
		last_hit = max(last_hit, ?3)
		WHERE id = ?1`)
	if err != nil {
		return fmt.Errorf("record hits: %w", err)
	}
	defer stmt.Close()
	for id, h := range hits {
		n := int64(min(h.Count, math.MaxInt64))
		last, err := unixNano(h.Last)
		if err != nil {
			return fmt.Errorf("record hits of rule %s: last hit: %w", id, err)
		}
		if _, err := stmt.ExecContext(ctx, id, n, last); err != nil {
			return fmt.Errorf("record hits of rule %s: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("record hits: %w", err)
	}
	return nil
}

func oneRow(res sql.Result, op, id string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, id, err)
	}
	if n == 0 {
		return fmt.Errorf("%s %s: %w", op, id, ErrNotFound)
	}
	return nil
}

// normalize gives r's times the form they have when read back: UTC, no
// monotonic reading.
func normalize(r rules.Rule) rules.Rule {
	r.Expires = utc(r.Expires)
	r.Created = utc(r.Created)
	r.LastHit = utc(r.LastHit)
	return r
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Round(0).UTC()
}

// ruleValues checks what the store relies on and returns r's columns in
// ruleColumns order. The rules engine validates the operands themselves;
// the store checks only what would not survive the round trip or what the
// schema's CHECK constraints would refuse with a less helpful message.
func ruleValues(r rules.Rule) ([]any, error) {
	switch r.Lifetime {
	case rules.Duration:
		if r.Expires.IsZero() {
			return nil, errors.New("a Duration rule needs an expiry time")
		}
	case rules.Forever:
	case rules.Once, rules.Session:
		return nil, fmt.Errorf("lifetime %s rules are never stored (they live in memory only)", lifetimeName(r.Lifetime))
	default:
		return nil, fmt.Errorf("invalid lifetime %d", r.Lifetime)
	}
	switch r.Action {
	case flow.ActionAllow, flow.ActionDeny, flow.ActionReject:
	default:
		return nil, fmt.Errorf("invalid action %d", r.Action)
	}
	if r.PortMin > r.PortMax {
		return nil, fmt.Errorf("port range %d-%d is reversed", r.PortMin, r.PortMax)
	}
	dst := ""
	if r.Dst != (netip.Prefix{}) {
		if !r.Dst.IsValid() {
			return nil, errors.New("invalid destination prefix")
		}
		dst = r.Dst.String()
	}
	expires, err := unixNano(r.Expires)
	if err != nil {
		return nil, fmt.Errorf("expires: %w", err)
	}
	created, err := unixNano(r.Created)
	if err != nil {
		return nil, fmt.Errorf("created: %w", err)
	}
	lastHit, err := unixNano(r.LastHit)
	if err != nil {
		return nil, fmt.Errorf("last hit: %w", err)
	}
	return []any{
		r.ID, r.Enabled, int64(r.Action), r.Exe, r.Cmdline, r.ExeSHA256, dst,
		int64(r.PortMin), int64(r.PortMax), r.Host, int64(r.Proto), int64(r.Lifetime),
		expires, created, int64(min(r.Hits, math.MaxInt64)), lastHit, r.Note, r.AnyMountNS,
	}, nil
}

func lifetimeName(l rules.Lifetime) string {
	switch l {
	case rules.Once:
		return "Once"
	case rules.Session:
		return "Session"
	}
	return fmt.Sprint(uint8(l))
}

type scanner interface{ Scan(dest ...any) error }

// scanRule reads a row of ruleColumns. Rows are checked again on the way
// out: the file may have been edited by hand.
func scanRule(row scanner) (rules.Rule, error) {
	var (
		r                                         rules.Rule
		action, portMin, portMax, proto, lifetime int64
		expires, created, hits, lastHit           int64
		dst                                       string
	)
	if err := row.Scan(&r.ID, &r.Enabled, &action, &r.Exe, &r.Cmdline, &r.ExeSHA256, &dst,
		&portMin, &portMax, &r.Host, &proto, &lifetime, &expires, &created, &hits, &lastHit, &r.Note, &r.AnyMountNS); err != nil {
		return rules.Rule{}, fmt.Errorf("read rule: %w", err)
	}
	bad := func(what string, v any) (rules.Rule, error) {
		return rules.Rule{}, fmt.Errorf("read rule %s: invalid %s %v in the database", r.ID, what, v)
	}
	if portMin < 0 || portMin > math.MaxUint16 || portMax < portMin || portMax > math.MaxUint16 {
		return bad("port range", fmt.Sprintf("%d-%d", portMin, portMax))
	}
	if proto < 0 || proto > math.MaxUint8 {
		return bad("protocol", proto)
	}
	if action < int64(flow.ActionAllow) || action > int64(flow.ActionReject) {
		return bad("action", action)
	}
	if lifetime != int64(rules.Duration) && lifetime != int64(rules.Forever) {
		return bad("lifetime", lifetime)
	}
	if hits < 0 {
		return bad("hit count", hits)
	}
	if dst != "" {
		p, err := netip.ParsePrefix(dst)
		if err != nil {
			return bad("destination", fmt.Sprintf("%q", dst))
		}
		r.Dst = p
	}
	r.Action = flow.Action(action)
	r.PortMin, r.PortMax = uint16(portMin), uint16(portMax)
	r.Proto = flow.Proto(proto)
	r.Lifetime = rules.Lifetime(lifetime)
	r.Expires = fromUnixNano(expires)
	r.Created = fromUnixNano(created)
	r.Hits = uint64(hits)
	r.LastHit = fromUnixNano(lastHit)
	return r, nil
}

// unixNano is how times are stored: Unix nanoseconds, 0 for the zero time.
// That bounds them to the years 1678-2262, and the instant of the Unix
// epoch itself reads back as the zero time.
func unixNano(t time.Time) (int64, error) {
	if t.IsZero() {
		return 0, nil
	}
	n := t.UnixNano()
	if !time.Unix(0, n).Equal(t) {
		return 0, fmt.Errorf("time %s is outside the storable range (years 1678-2262)", t.UTC().Format(time.RFC3339))
	}
	return n, nil
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
