package store

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"net/netip"
	"path"
	"strings"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Program names a program the aggregates know.
type Program struct {
	id int64
	// Exe is the executable's path; empty when unknown, and then Comm
	// names the program.
	Exe string
	// Comm is the last process name seen for it.
	Comm string
}

// ProgramSummary is what a program did since a time.
type ProgramSummary struct {
	Program
	Allowed, Denied              uint64
	BytesSent, BytesReceived     uint64
	PacketsSent, PacketsReceived uint64
	// Destinations seen since the time.
	Destinations int
	// LastSeen is the program's latest activity, whenever it was.
	LastSeen time.Time
}

// Destination is what a program did with one destination.
type Destination struct {
	// Host is the name when known; else empty, and Address names it.
	Host string
	// Address is the last address it had.
	Address                  string
	Proto                    flow.Proto
	Port                     uint16
	Allowed, Denied          uint64
	BytesSent, BytesReceived uint64
	FirstSeen, LastSeen      time.Time
	// What decided the latest connection.
	DecidedBy, RuleID string
	Action            flow.Action
}

// ChartRange is the span of a program's traffic chart.
type ChartRange int

// The chart ranges: 60 one-minute buckets, 96 fifteen-minute buckets, 168
// one-hour buckets, the last one holding now.
const (
	ChartHour ChartRange = iota + 1
	ChartDay
	ChartWeek
)

// Bucket is one bar of a traffic chart.
type Bucket struct {
	Start                    time.Time
	Allowed, Denied          uint64
	BytesSent, BytesReceived uint64
}

// Programs returns the programs active since since, with what they did
// since then (from minute buckets when since is within the last day at
// now, else from hour buckets from the hour holding since), most recently
// active first.
func (s *Store) Programs(ctx context.Context, since, now time.Time) ([]ProgramSummary, error) {
	sinceNS, err := unixNano(since)
	if err != nil {
		return nil, fmt.Errorf("list programs: %w", err)
	}
	progs, err := s.programs(ctx, "WHERE last_seen >= ? ORDER BY last_seen DESC", sinceNS)
	if err != nil {
		return nil, fmt.Errorf("list programs: %w", err)
	}
	if len(progs) == 0 {
		return nil, nil
	}
	byID := make(map[int64]*ProgramSummary, len(progs))
	table, start := bucketsSince(since, now)
	for i := range progs {
		p := &progs[i]
		byID[p.id] = p
		// One range of the primary key per program: reading the
		// buckets of all programs by start would cost a lookup per row.
		if err := s.sumBuckets(ctx, table, p, start); err != nil {
			return nil, fmt.Errorf("list programs: %s: %w", p.name(), err)
		}
	}
	drows, err := s.db.QueryContext(ctx, "SELECT program, count(*) FROM destinations WHERE last_seen >= ? GROUP BY program", sinceNS)
	if err != nil {
		return nil, fmt.Errorf("list programs: %w", err)
	}
	defer drows.Close()
	for drows.Next() {
		var id, n int64
		if err := drows.Scan(&id, &n); err != nil {
			return nil, fmt.Errorf("list programs: %w", err)
		}
		if p := byID[id]; p != nil {
			p.Destinations = int(n)
		}
	}
	if err := drows.Err(); err != nil {
		return nil, fmt.Errorf("list programs: %w", err)
	}
	return progs, nil
}

// FindProgram returns the program name names: an executable's path (it
// has a '/'), or a name that is the comm or the path's last element of
// exactly one program. It fails with ErrNotFound or ErrAmbiguous.
func (s *Store) FindProgram(ctx context.Context, name string) (Program, error) {
	var (
		progs []ProgramSummary
		err   error
	)
	if name == "" {
		return Program{}, fmt.Errorf("program with no name: %w", ErrNotFound)
	}
	if strings.Contains(name, "/") {
		progs, err = s.programs(ctx, "WHERE exe = ? AND comm_key = ''", name)
	} else {
		// Every program, at most MaxPrograms: a name may be any
		// path's last element.
		progs, err = s.programs(ctx, "ORDER BY last_seen DESC")
	}
	if err != nil {
		return Program{}, fmt.Errorf("find program %q: %w", name, err)
	}
	var found []Program
	for _, p := range progs {
		if p.Exe == name || p.Comm == name || (p.Exe != "" && path.Base(p.Exe) == name) {
			found = append(found, p.Program)
		}
	}
	switch len(found) {
	case 0:
		return Program{}, fmt.Errorf("program %q: %w", name, ErrNotFound)
	case 1:
		return found[0], nil
	}
	var names []string
	for i, p := range found {
		if i == 5 {
			names = append(names, fmt.Sprintf("and %d more", len(found)-i))
			break
		}
		if p.Exe != "" {
			names = append(names, p.Exe)
		} else {
			names = append(names, "comm "+p.Comm)
		}
	}
	return Program{}, fmt.Errorf("program %q names %d programs (%s): %w", name, len(found), strings.Join(names, ", "), ErrAmbiguous)
}

// ProgramSummary returns what p did since since, as Programs does.
func (s *Store) ProgramSummary(ctx context.Context, p Program, since, now time.Time) (ProgramSummary, error) {
	sinceNS, err := unixNano(since)
	if err != nil {
		return ProgramSummary{}, fmt.Errorf("read program: %w", err)
	}
	progs, err := s.programs(ctx, "WHERE id = ?", p.id)
	if err != nil {
		return ProgramSummary{}, fmt.Errorf("read program: %w", err)
	}
	if len(progs) == 0 {
		return ProgramSummary{}, fmt.Errorf("read program %s: %w", p.name(), ErrNotFound)
	}
	sum := progs[0]
	table, start := bucketsSince(since, now)
	if err := s.sumBuckets(ctx, table, &sum, start); err != nil {
		return ProgramSummary{}, fmt.Errorf("read program %s: %w", p.name(), err)
	}
	var n int64
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM destinations WHERE program = ? AND last_seen >= ?", p.id, sinceNS).Scan(&n); err != nil {
		return ProgramSummary{}, fmt.Errorf("read program %s: %w", p.name(), err)
	}
	sum.Destinations = int(n)
	return sum, nil
}

// Destinations returns p's newest limit destinations, most recently seen
// first, and how many it has in all.
func (s *Store) Destinations(ctx context.Context, p Program, limit int) ([]Destination, int, error) {
	var total int
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM destinations WHERE program = ?", p.id).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("read destinations of %s: %w", p.name(), err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, host, address, name, proto, port, allowed, denied, bytes_sent, bytes_received,
		first_seen, last_seen, decided_by, rule_id, action FROM destinations WHERE program = ? ORDER BY last_seen DESC, id DESC LIMIT ?`, p.id, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("read destinations of %s: %w", p.name(), err)
	}
	defer rows.Close()
	var out []Destination
	for rows.Next() {
		var (
			d                           Destination
			id, proto, port, action     int64
			name                        string
			allowed, denied, sent, recv int64
			first, last                 int64
		)
		if err := rows.Scan(&id, &d.Host, &d.Address, &name, &proto, &port, &allowed, &denied, &sent, &recv,
			&first, &last, &d.DecidedBy, &d.RuleID, &action); err != nil {
			return nil, 0, fmt.Errorf("read destinations of %s: %w", p.name(), err)
		}
		if err := checkDestination(d, name, proto, port, action, first, last, allowed, denied, sent, recv); err != nil {
			return nil, 0, fmt.Errorf("read destination %d of %s: %w", id, p.name(), err)
		}
		d.Proto, d.Port, d.Action = flow.Proto(proto), uint16(port), flow.Action(action)
		d.Allowed, d.Denied, d.BytesSent, d.BytesReceived = uint64(allowed), uint64(denied), uint64(sent), uint64(recv)
		d.FirstSeen, d.LastSeen = fromUnixNano(first), fromUnixNano(last)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("read destinations of %s: %w", p.name(), err)
	}
	return out, total, nil
}

// checkDestination checks a destination row read back: a hand edit that
// breaks one surfaces as an error, not as a wrong destination.
func checkDestination(d Destination, name string, proto, port, action, first, last int64, cs ...int64) error {
	for _, c := range cs {
		if c < 0 {
			return fmt.Errorf("invalid count %d in the database", c)
		}
	}
	switch {
	case proto < 0 || proto > math.MaxUint8:
		return fmt.Errorf("invalid protocol %d in the database", proto)
	case port < 0 || port > math.MaxUint16:
		return fmt.Errorf("invalid port %d in the database", port)
	case action < 0 || action > int64(flow.ActionReject):
		return fmt.Errorf("invalid action %d in the database", action)
	case first <= 0 || last < first:
		return fmt.Errorf("invalid first and last seen (%d, %d) in the database", first, last)
	case d.Host != "" && d.Host != name:
		return fmt.Errorf("invalid destination name %q for host %q in the database", name, d.Host)
	}
	if d.Host == "" && name != "" {
		if _, err := netip.ParseAddr(name); err != nil {
			return fmt.Errorf("invalid destination address %q in the database", name)
		}
	}
	if d.Address != "" {
		if _, err := netip.ParseAddr(d.Address); err != nil {
			return fmt.Errorf("invalid destination address %q in the database", d.Address)
		}
	}
	return nil
}

// Chart returns p's traffic over r at now: every bucket of the range,
// empty ones included, oldest first, and the buckets' length.
func (s *Store) Chart(ctx context.Context, p Program, r ChartRange, now time.Time) ([]Bucket, time.Duration, error) {
	var (
		table string
		step  int64 // seconds per chart bucket
		n     int64
	)
	switch r {
	case ChartHour:
		table, step, n = "traffic_minute", 60, 60
	case ChartDay:
		table, step, n = "traffic_minute", 15*60, 96
	case ChartWeek:
		table, step, n = "traffic_hour", 3600, 168
	default:
		return nil, 0, fmt.Errorf("chart of %s: unknown range %d", p.name(), r)
	}
	nowSec := now.Unix()
	last := nowSec - floorMod(nowSec, step)
	first := last - (n-1)*step
	out := make([]Bucket, n)
	for i := range out {
		out[i].Start = time.Unix(first+int64(i)*step, 0).UTC()
	}
	bs, err := s.buckets(ctx, table, p.id, first, last+step)
	if err != nil {
		return nil, 0, fmt.Errorf("chart of %s: %w", p.name(), err)
	}
	for _, b := range bs {
		o := &out[(b.start-first)/step]
		o.Allowed = satAddU(o.Allowed, b.Allowed)
		o.Denied = satAddU(o.Denied, b.Denied)
		o.BytesSent = satAddU(o.BytesSent, b.BytesSent)
		o.BytesReceived = satAddU(o.BytesReceived, b.BytesReceived)
	}
	return out, time.Duration(step) * time.Second, nil
}

func floorMod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

func satAddU(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

// bucketsSince is where a summary since since at now is read from: the
// minute buckets while they cover it, else the hour buckets.
func bucketsSince(since, now time.Time) (table string, start int64) {
	sec := since.Unix()
	if !since.Before(now.Add(-MinuteRetention)) {
		return "traffic_minute", sec - floorMod(sec, minuteSeconds)
	}
	return "traffic_hour", sec - floorMod(sec, hourSeconds)
}

const bucketColumns = "allowed, denied, bytes_sent, bytes_received, packets_sent, packets_received"

// bucketRow is one stored bucket.
type bucketRow struct {
	start int64
	Bucket
	PacketsSent, PacketsReceived uint64
}

func scanBucket(rows *sql.Rows, table string, id *int64) (bucketRow, error) {
	var (
		b  bucketRow
		cs [6]int64
	)
	if err := rows.Scan(id, &b.start, &cs[0], &cs[1], &cs[2], &cs[3], &cs[4], &cs[5]); err != nil {
		return b, err
	}
	size := int64(minuteSeconds)
	if table == "traffic_hour" {
		size = hourSeconds
	}
	if b.start%size != 0 {
		return b, fmt.Errorf("invalid bucket start %d in %s in the database", b.start, table)
	}
	for _, c := range cs {
		if c < 0 {
			return b, fmt.Errorf("invalid count %d in %s in the database", c, table)
		}
	}
	b.Start = time.Unix(b.start, 0).UTC()
	b.Allowed, b.Denied, b.BytesSent, b.BytesReceived = uint64(cs[0]), uint64(cs[1]), uint64(cs[2]), uint64(cs[3])
	b.PacketsSent, b.PacketsReceived = uint64(cs[4]), uint64(cs[5])
	return b, nil
}

// buckets returns program id's buckets of table starting in [from, to).
func (s *Store) buckets(ctx context.Context, table string, id, from, to int64) ([]bucketRow, error) {
	// table is one of two constants, never input.
	rows, err := s.db.QueryContext(ctx, "SELECT program, start, "+bucketColumns+" FROM "+table+
		" WHERE program = ? AND start >= ? AND start < ? ORDER BY start", id, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []bucketRow
	for rows.Next() {
		var pid int64
		b, err := scanBucket(rows, table, &pid)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// sumBuckets adds p's buckets of table from start on to p. SQLite sums
// them, after checking them as scanBucket does; a sum that may not fit in
// an int64 (its floating-point total says so, or SQLite reports an
// overflow) is done again row by row, saturating.
func (s *Store) sumBuckets(ctx context.Context, table string, p *ProgramSummary, start int64) error {
	size := int64(minuteSeconds)
	if table == "traffic_hour" {
		size = hourSeconds
	}
	var bad, neg, big int64
	var c [6]int64
	// table is one of two constants, never input.
	err := s.db.QueryRowContext(ctx, `SELECT coalesce(sum(start % ?1 <> 0), 0),
		coalesce(sum(min(allowed, denied, bytes_sent, bytes_received, packets_sent, packets_received) < 0), 0),
		coalesce(sum(allowed), 0), coalesce(sum(denied), 0), coalesce(sum(bytes_sent), 0), coalesce(sum(bytes_received), 0),
		coalesce(sum(packets_sent), 0), coalesce(sum(packets_received), 0),
		max(total(allowed), total(denied), total(bytes_sent), total(bytes_received), total(packets_sent), total(packets_received)) >= 9e18
		FROM `+table+` WHERE program = ?2 AND start >= ?3`, size, p.id, start).Scan(&bad, &neg, &c[0], &c[1], &c[2], &c[3], &c[4], &c[5], &big)
	if (err != nil && strings.Contains(err.Error(), "integer overflow")) || (err == nil && big != 0) {
		bs, err := s.buckets(ctx, table, p.id, start, math.MaxInt64)
		if err != nil {
			return err
		}
		for _, b := range bs {
			p.add(b)
		}
		return nil
	}
	switch {
	case err != nil:
		return err
	case bad > 0:
		return fmt.Errorf("invalid bucket start in %s in the database", table)
	case neg > 0:
		return fmt.Errorf("invalid negative count in %s in the database", table)
	}
	p.add(bucketRow{Bucket: Bucket{Allowed: uint64(c[0]), Denied: uint64(c[1]), BytesSent: uint64(c[2]), BytesReceived: uint64(c[3])},
		PacketsSent: uint64(c[4]), PacketsReceived: uint64(c[5])})
	return nil
}

func (p *ProgramSummary) add(b bucketRow) {
	p.Allowed = satAddU(p.Allowed, b.Allowed)
	p.Denied = satAddU(p.Denied, b.Denied)
	p.BytesSent = satAddU(p.BytesSent, b.BytesSent)
	p.BytesReceived = satAddU(p.BytesReceived, b.BytesReceived)
	p.PacketsSent = satAddU(p.PacketsSent, b.PacketsSent)
	p.PacketsReceived = satAddU(p.PacketsReceived, b.PacketsReceived)
}

// programs reads programs, with a WHERE and ORDER clause (constants).
func (s *Store) programs(ctx context.Context, clause string, args ...any) ([]ProgramSummary, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, exe, comm_key, comm, last_seen FROM programs "+clause, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ProgramSummary
	for rows.Next() {
		var (
			p       ProgramSummary
			commKey string
			last    int64
		)
		if err := rows.Scan(&p.id, &p.Exe, &commKey, &p.Comm, &last); err != nil {
			return nil, err
		}
		switch {
		case p.Exe != "" && commKey != "", p.Exe == "" && commKey != p.Comm:
			return nil, fmt.Errorf("program %d: invalid name (%q, %q, %q) in the database", p.id, p.Exe, commKey, p.Comm)
		case last <= 0:
			return nil, fmt.Errorf("program %d: invalid last activity %d in the database", p.id, last)
		}
		p.LastSeen = fromUnixNano(last)
		out = append(out, p)
	}
	return out, rows.Err()
}

func (p Program) name() string {
	if p.Exe != "" {
		return p.Exe
	}
	return "comm " + p.Comm
}
