package ctl

// Amounts and times as people read them: bytes in kB/MB/GB, "5m ago",
// and the --since/--until values they type.

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// humanBytes writes n bytes in decimal units, with three significant
// figures at most: "0 B", "512 B", "1.2 kB", "45 MB", "2.0 GB".
func humanBytes(n uint64) string {
	if n < 1000 {
		return strconv.FormatUint(n, 10) + " B"
	}
	units := []string{"kB", "MB", "GB", "TB", "PB", "EB"}
	v := float64(n)
	for i, u := range units {
		v /= 1000
		if v < 999.5 || i == len(units)-1 {
			if v < 9.95 {
				return fmt.Sprintf("%.1f %s", v, u)
			}
			return fmt.Sprintf("%.0f %s", v, u)
		}
	}
	return strconv.FormatUint(n, 10) + " B"
}

// ago says how long before now t was: "just now", "45s ago", "17m ago",
// "5h ago", "3d ago"; "never" for the zero time.
func ago(t, now time.Time) string {
	if t.IsZero() || t.Unix() <= 0 {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 10*time.Second:
		return "just now" // and a clock a little ahead
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

// whenHelp says what --since and --until take.
const whenHelp = "a duration back from now (90m, 2h, 7d, 2w) or a time (today, yesterday, 14:00, 2026-03-01, 2026-03-01 14:00, RFC 3339)"

// parseWhen reads a --since/--until value: a duration back from now
// ("90m", "2h", "7d", "2w"), "today" or "yesterday" (local midnight), a
// clock time today ("14:00"), a date or a date and time in loc, or RFC
// 3339. The time may not be in the future.
func parseWhen(s string, now time.Time, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	midnight := time.Date(now.In(loc).Year(), now.In(loc).Month(), now.In(loc).Day(), 0, 0, 0, 0, loc)
	var t time.Time
	switch s {
	case "today":
		t = midnight
	case "yesterday":
		t = midnight.AddDate(0, 0, -1)
	default:
		if d, ok := parseBackDuration(s); ok {
			if d <= 0 {
				return time.Time{}, fmt.Errorf("%q is not a time back from now; give %s", s, whenHelp)
			}
			return now.Add(-d), nil
		}
		var err error
		if t, err = parseClock(s, midnight, loc); err != nil {
			return time.Time{}, fmt.Errorf("%q is neither a duration nor a time; give %s", s, whenHelp)
		}
	}
	if t.After(now) {
		return time.Time{}, fmt.Errorf("%q is in the future", s)
	}
	return t, nil
}

// parseBackDuration reads a Go duration, or a whole number of days ("7d")
// or weeks ("2w").
func parseBackDuration(s string) (time.Duration, bool) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, true
	}
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		num, ok := strings.CutSuffix(s, suffix)
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(num, 10, 32)
		if err != nil || float64(n)*float64(unit) > math.MaxInt64 {
			return 0, false
		}
		return time.Duration(n) * unit, true
	}
	return 0, false
}

// parseClock reads a date, a date and time, or a time today (after
// midnight) in loc, or an RFC 3339 time.
func parseClock(s string, midnight time.Time, loc *time.Location) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02", "2006-01-02 15:04", "2006-01-02T15:04", time.DateTime, "2006-01-02T15:04:05"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	for _, layout := range []string{"15:04", "15:04:05"} {
		if c, err := time.Parse(layout, s); err == nil {
			return time.Date(midnight.Year(), midnight.Month(), midnight.Day(), c.Hour(), c.Minute(), c.Second(), 0, loc), nil
		}
	}
	return time.Time{}, fmt.Errorf("not a time")
}

// periodText names the period since t for a heading: "today (since
// 00:00)", "since 14:00 today", "since 2026-02-28 12:00".
func periodText(since, now time.Time, loc *time.Location) string {
	since, now = since.In(loc), now.In(loc)
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, loc)
	switch {
	case since.Equal(midnight):
		return "today (since 00:00)"
	case !since.Before(midnight):
		return "since " + since.Format("15:04") + " today"
	}
	return "since " + since.Format("2006-01-02 15:04")
}
