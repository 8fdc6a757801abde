package ctl

// The traffic chart of `bastionctl program`, drawn with block characters.
// The scale is honest: linear from zero, its top labelled with the amount
// it stands for; an empty column is blank and a column with any traffic
// shows at least the lowest bar.

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// chartRows is the bar chart's height in lines; each line has 8 steps.
const chartRows = 6

// eighths are the bars of one line, from empty to full.
var eighths = []rune(" ▁▂▃▄▅▆▇█")

// chartColumn is one column of the chart: one or more of the service's
// buckets added up.
type chartColumn struct {
	start, end      time.Time
	bytes           uint64
	allowed, denied uint64
}

// chartColumns merges buckets (oldest first, each bucket long) into at
// most maxCols columns of k buckets each.
func chartColumns(buckets []*uiv1.TrafficBucket, bucket time.Duration, maxCols int) ([]chartColumn, int) {
	if maxCols < 1 {
		maxCols = 1
	}
	k := (len(buckets) + maxCols - 1) / maxCols
	k = max(k, 1)
	var cols []chartColumn
	for i, b := range buckets {
		start := b.GetStart().AsTime()
		if i%k == 0 {
			cols = append(cols, chartColumn{start: start})
		}
		c := &cols[len(cols)-1]
		c.end = start.Add(bucket)
		c.bytes += b.GetBytesSent() + b.GetBytesReceived()
		c.allowed += b.GetAllowed()
		c.denied += b.GetDenied()
	}
	return cols, k
}

// niceTop is the smallest 1, 2 or 5 times a power of ten that is at least
// v (1 for 0).
func niceTop(v uint64) uint64 {
	for p := uint64(1); ; p *= 10 {
		for _, m := range []uint64{1, 2, 5} {
			if m*p >= v {
				return m * p
			}
		}
		if p > ^uint64(0)/100 {
			return v
		}
	}
}

// level is v on a scale of steps steps whose top is top: 0 only for 0,
// at least 1 for anything else.
func level(v, top uint64, steps int) int {
	if v == 0 || top == 0 {
		return 0
	}
	l := int((float64(v)*float64(steps) + float64(top) - 1) / float64(top))
	return min(max(l, 1), steps)
}

// durationWords is d for a heading: "1 minute", "15 minutes", "3 hours".
func durationWords(d time.Duration) string {
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	if d >= time.Hour && d%time.Hour == 0 {
		return plural(int64(d/time.Hour), "hour")
	}
	return plural(int64(d/time.Minute), "minute")
}

// rangeWords names a chart range: "the last hour".
func rangeWords(r uiv1.ChartRange) string {
	switch r {
	case uiv1.ChartRange_CHART_RANGE_HOUR:
		return "the last hour"
	case uiv1.ChartRange_CHART_RANGE_WEEK:
		return "the last 7 days"
	}
	return "the last 24 hours"
}

// nextMark is the first time at or after t that the time axis labels, and
// the label: quarter hours for an hour, 6-hour marks for a day, midnights
// for a week.
// A week's columns of less than a seventh of a day name the day alone.
func nextMark(t time.Time, r uiv1.ChartRange, col time.Duration, loc *time.Location) (time.Time, string) {
	t = t.In(loc)
	midnight := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, loc)
	if r == uiv1.ChartRange_CHART_RANGE_WEEK {
		if !t.Equal(midnight) {
			midnight = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, loc)
		}
		if col*7 > 24*time.Hour {
			return midnight, midnight.Format("Mon")
		}
		return midnight, midnight.Format("Mon 2")
	}
	step := 6 * time.Hour
	if r == uiv1.ChartRange_CHART_RANGE_HOUR {
		step = 15 * time.Minute
	}
	n := (t.Sub(midnight) + step - 1) / step
	m := midnight.Add(n * step)
	return m, m.Format("15:04")
}

// writeChart draws resp's chart, width runes wide at most.
func writeChart(w io.Writer, resp *uiv1.GetProgramResponse, r uiv1.ChartRange, width int, loc *time.Location) {
	buckets := resp.GetChart()
	bucket := resp.GetBucket().AsDuration()
	if len(buckets) == 0 || bucket <= 0 {
		fmt.Fprintf(w, "Traffic over %s: the rules service sent no chart.\n", rangeWords(r))
		return
	}
	var sent, recv, allowed, denied uint64
	for _, b := range buckets {
		sent += b.GetBytesSent()
		recv += b.GetBytesReceived()
		allowed += b.GetAllowed()
		denied += b.GetDenied()
	}
	const gutter = 9 // "  1.0 GB " and the axis
	cols, k := chartColumns(buckets, bucket, width-gutter-2)
	colDur := time.Duration(k) * bucket
	fmt.Fprintf(w, "Traffic over %s, one column = %s:\n", rangeWords(r), durationWords(colDur))
	if sent+recv == 0 && allowed+denied == 0 {
		fmt.Fprintln(w, "  no connections.")
		return
	}
	var peak, peakAllowed, peakDenied uint64
	for _, c := range cols {
		peak, peakAllowed, peakDenied = max(peak, c.bytes), max(peakAllowed, c.allowed), max(peakDenied, c.denied)
	}
	if peak == 0 {
		fmt.Fprintf(w, "%*s  no bytes counted\n", gutter-1, "0")
	}
	top := niceTop(peak)
	for row := chartRows - 1; row >= 0 && peak > 0; row-- {
		label, axis := "", "│"
		switch row {
		case chartRows - 1:
			label, axis = humanBytes(top), "┤"
		case chartRows/2 - 1:
			if top%2 == 0 { // no half bytes
				label, axis = humanBytes(top/2), "┤"
			}
		}
		var line strings.Builder
		for _, c := range cols {
			fill := level(c.bytes, top, chartRows*8) - row*8
			line.WriteRune(eighths[min(max(fill, 0), 8)])
		}
		fmt.Fprintf(w, "%*s %s%s\n", gutter-1, label, axis, strings.TrimRight(line.String(), " "))
	}
	if peak > 0 {
		fmt.Fprintf(w, "%*s └%s\n", gutter-1, "0", strings.Repeat("─", len(cols)))
	}
	fmt.Fprintf(w, "%*s  %s\n", gutter-1, "", timeAxis(cols, r, colDur, loc))
	spark := func(name string, peak uint64, value func(chartColumn) uint64) {
		var line strings.Builder
		for _, c := range cols {
			line.WriteRune(eighths[level(value(c), peak, 8)])
		}
		fmt.Fprintf(w, "%*s  %s\n", gutter-1, name, strings.TrimRight(line.String(), " "))
	}
	if allowed > 0 {
		spark("allowed", peakAllowed, func(c chartColumn) uint64 { return c.allowed })
	}
	if denied > 0 {
		spark("denied", peakDenied, func(c chartColumn) uint64 { return c.denied })
	}
	legend := "The bars are bytes sent and received"
	if allowed > 0 {
		legend += "; a full allowed bar is " + connectionsWord(peakAllowed)
	}
	if denied > 0 {
		legend += "; a full denied bar is " + connectionsWord(peakDenied)
	}
	fmt.Fprintln(w, legend+".")
	fmt.Fprintf(w, "In all: sent %s, received %s; %d allowed, %d denied.\n", humanBytes(sent), humanBytes(recv), allowed, denied)
}

// timeAxis is the line of time labels under the columns: each at the
// column its time falls in, when it does not overlap the one before.
func timeAxis(cols []chartColumn, r uiv1.ChartRange, col time.Duration, loc *time.Location) string {
	var b strings.Builder
	pos := 0 // runes written
	for i, c := range cols {
		m, label := nextMark(c.start, r, col, loc)
		if !m.Before(c.end) || i < pos {
			continue
		}
		if i > 0 && i == pos {
			continue // touching the previous label
		}
		b.WriteString(strings.Repeat(" ", i-pos))
		b.WriteString(label)
		pos = i + utf8.RuneCountInString(label)
	}
	return b.String()
}

// connectionsWord is "1 connection", "8 connections".
func connectionsWord(n uint64) string {
	if n == 1 {
		return "1 connection"
	}
	return fmt.Sprintf("%d connections", n)
}
