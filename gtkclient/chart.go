package gtkclient

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/gotk3/gotk3/cairo"
	"github.com/gotk3/gotk3/gtk"
	"github.com/gotk3/gotk3/pango"

	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// humanBytes is a byte count as people read it, in powers of 1000 like
// the desktop's file managers: "0 B", "512 B", "1.5 kB", "23 MB", "1.2 GB".
func humanBytes(n uint64) string {
	if n < 1000 {
		return strconv.FormatUint(n, 10) + " B"
	}
	units := []string{"kB", "MB", "GB", "TB", "PB", "EB"}
	v := float64(n)
	i := -1
	for v >= 999.5 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if v < 9.95 {
		return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i]
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + " " + units[i]
}

// chartScale is the top of the chart's bytes axis and its step: 1, 2 or
// 5 times a power of ten, with four or five steps, so that the labels are
// round and the bars keep their true proportions (the axis starts at 0).
func chartScale(max uint64) (top, step uint64) {
	if max == 0 {
		return 1000, 250
	}
	raw := float64(max) / 4
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if s := m * mag; s >= raw {
			step = uint64(math.Max(1, s))
			break
		}
	}
	top = step * ((max + step - 1) / step)
	return top, step
}

// chartTick is one labelled time on the chart's time axis: at index
// position pos (in buckets from the first bucket's start).
type chartTick struct {
	pos   float64
	label string
}

// chartTicks are the labelled times of a range whose n buckets of step
// start at first: every 10 minutes for an hour, every 3 hours for a day,
// every midnight for a week, in loc.
func chartTicks(first time.Time, step time.Duration, n int, r uiv1.ChartRange, loc *time.Location) []chartTick {
	end := first.Add(time.Duration(n) * step)
	var (
		every  time.Duration
		layout string
	)
	switch r {
	case uiv1.ChartRange_CHART_RANGE_HOUR:
		every, layout = 10*time.Minute, "15:04"
	case uiv1.ChartRange_CHART_RANGE_WEEK:
		every, layout = 24*time.Hour, "Mon 2"
	default:
		every, layout = 3*time.Hour, "15:04"
	}
	// The first round time at or after first, on the local clock.
	l := first.In(loc)
	t := time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, loc)
	for t.Before(first) {
		next := t.Add(every)
		if every == 24*time.Hour {
			next = t.AddDate(0, 0, 1) // days of 23 or 25 hours
		}
		t = next
	}
	var out []chartTick
	for !t.After(end) {
		out = append(out, chartTick{pos: float64(t.Sub(first)) / float64(step), label: t.In(loc).Format(layout)})
		if every == 24*time.Hour {
			t = t.AddDate(0, 0, 1)
		} else {
			t = t.Add(every)
		}
	}
	return out
}

// rangeWords names a chart range in a sentence: "in the last hour".
func rangeWords(r uiv1.ChartRange) string {
	switch r {
	case uiv1.ChartRange_CHART_RANGE_HOUR:
		return "in the last hour"
	case uiv1.ChartRange_CHART_RANGE_WEEK:
		return "in the last 7 days"
	}
	return "in the last 24 hours"
}

// perBucket names the chart's bucket: "per minute", "per 15 minutes".
func perBucket(step time.Duration) string {
	switch step {
	case time.Minute:
		return "per minute"
	case time.Hour:
		return "per hour"
	case 0:
		return ""
	}
	return "per " + roughDuration(step)
}

// Colours of the chart's two series, as in the Adwaita palette.
var (
	chartReceived = [3]float64{0x35 / 255.0, 0x84 / 255.0, 0xe4 / 255.0} // blue 3
	chartSent     = [3]float64{0xe6 / 255.0, 0x61 / 255.0, 0x00 / 255.0} // orange 5
)

// trafficChart draws a program's traffic over a range: one bar per
// bucket, the bytes received at the bottom and the bytes sent stacked on
// them, over a bytes axis from 0 and a time axis in local time.
type trafficChart struct {
	area    *gtk.DrawingArea
	buckets []*uiv1.TrafficBucket
	step    time.Duration
	rng     uiv1.ChartRange
	loc     *time.Location
	// drawn counts the draws (tests wait on it).
	drawn int
	// left and barW place the bars, as last drawn: bar i spans
	// [left+i*barW, left+(i+1)*barW).
	left, barW float64
}

func newTrafficChart(loc *time.Location) *trafficChart {
	c := &trafficChart{loc: loc}
	c.area, _ = gtk.DrawingAreaNew()
	c.area.SetSizeRequest(-1, 190)
	c.area.SetHExpand(true)
	c.area.Connect("draw", func(da *gtk.DrawingArea, cr *cairo.Context) bool {
		c.draw(cr, float64(da.GetAllocatedWidth()), float64(da.GetAllocatedHeight()))
		c.drawn++
		return true
	})
	// The figures of the bar under the pointer, in its tooltip.
	c.area.SetProperty("has-tooltip", true)
	c.area.Connect("query-tooltip", func(_ *gtk.DrawingArea, x, _ int, _ bool, tip *gtk.Tooltip) bool {
		text := c.tooltipAt(float64(x))
		if text == "" {
			return false
		}
		tip.SetText(text)
		return true
	})
	return c
}

// set shows a new chart.
func (c *trafficChart) set(buckets []*uiv1.TrafficBucket, step time.Duration, r uiv1.ChartRange) {
	c.buckets, c.step, c.rng = buckets, step, r
	c.area.QueueDraw()
}

// totals are the bytes sent and received over the chart, and the largest
// bucket's sum.
func (c *trafficChart) totals() (sent, recv, max uint64) {
	for _, b := range c.buckets {
		sent += b.GetBytesSent()
		recv += b.GetBytesReceived()
		if s := b.GetBytesSent() + b.GetBytesReceived(); s > max {
			max = s
		}
	}
	return sent, recv, max
}

func (c *trafficChart) draw(cr *cairo.Context, w, h float64) {
	sc, _ := c.area.GetStyleContext()
	fg := sc.GetColor(gtk.STATE_FLAG_NORMAL)
	ink := func(alpha float64) {
		cr.SetSourceRGBA(fg.GetRed(), fg.GetGreen(), fg.GetBlue(), fg.GetAlpha()*alpha)
	}
	layout := pango.CairoCreateLayout(cr)
	layout.SetFontDescription(pango.FontDescriptionFromString("Sans 8.5"))
	text := func(s string) (tw, th float64) {
		layout.SetText(s, -1)
		x, y := layout.GetSize()
		return float64(x) / float64(pango.SCALE), float64(y) / float64(pango.SCALE)
	}
	show := func(s string, x, y float64) {
		text(s)
		cr.MoveTo(x, y)
		pango.CairoShowLayout(cr, layout)
	}

	sent, recv, max := c.totals()
	top, step := chartScale(max)
	// The bytes axis's labels decide the left margin.
	left := 0.0
	for v := uint64(0); v <= top; v += step {
		if tw, _ := text(humanBytes(v)); tw > left {
			left = tw
		}
	}
	left += 12
	const right, legendH, timeH = 14.0, 24.0, 22.0
	plotW, plotH := w-left-right, h-legendH-timeH
	if plotW < 40 || plotH < 30 {
		return
	}
	y0 := legendH + plotH // the zero line
	yOf := func(v uint64) float64 { return y0 - float64(v)/float64(top)*plotH }

	// Legend: a swatch and the total of each series, and the unit.
	x := left
	for _, s := range []struct {
		rgb   [3]float64
		label string
	}{{chartReceived, "Received " + humanBytes(recv)}, {chartSent, "Sent " + humanBytes(sent)}} {
		cr.SetSourceRGB(s.rgb[0], s.rgb[1], s.rgb[2])
		cr.Rectangle(x, 6, 10, 10)
		cr.Fill()
		ink(1)
		tw, _ := text(s.label)
		show(s.label, x+14, 3)
		x += 14 + tw + 18
	}
	ink(0.7)
	unit := "bytes " + perBucket(c.step) + ", " + rangeWords(c.rng)
	uw, _ := text(unit)
	show(unit, w-right-uw, 3)

	// Bytes axis: a line and a label at each step.
	cr.SetLineWidth(1)
	for v := uint64(0); v <= top; v += step {
		y := math.Round(yOf(v)) + 0.5
		ink(0.12)
		if v == 0 {
			ink(0.5)
		}
		cr.MoveTo(left, y)
		cr.LineTo(left+plotW, y)
		cr.Stroke()
		ink(0.75)
		label := humanBytes(v)
		tw, th := text(label)
		show(label, left-8-tw, y-th/2)
	}

	n := len(c.buckets)
	if n == 0 {
		return
	}
	bw := plotW / float64(n)
	c.left, c.barW = left, bw
	gap := 0.0
	if bw >= 4 {
		gap = 1
	}
	for i, b := range c.buckets {
		bx := left + float64(i)*bw
		r, s := b.GetBytesReceived(), b.GetBytesSent()
		if r > 0 {
			cr.SetSourceRGB(chartReceived[0], chartReceived[1], chartReceived[2])
			cr.Rectangle(bx, yOf(r), bw-gap, y0-yOf(r))
			cr.Fill()
		}
		if s > 0 {
			cr.SetSourceRGB(chartSent[0], chartSent[1], chartSent[2])
			cr.Rectangle(bx, yOf(r+s), bw-gap, yOf(r)-yOf(r+s))
			cr.Fill()
		}
	}
	if max == 0 {
		ink(0.6)
		msg := "No traffic " + rangeWords(c.rng)
		tw, th := text(msg)
		show(msg, left+(plotW-tw)/2, legendH+(plotH-th)/2)
	}

	// Time axis: a tick and a label at each round time.
	first := c.buckets[0].GetStart().AsTime()
	for _, t := range chartTicks(first, c.step, n, c.rng, c.loc) {
		tx := math.Round(left+t.pos*bw) + 0.5
		ink(0.5)
		cr.MoveTo(tx, y0)
		cr.LineTo(tx, y0+4)
		cr.Stroke()
		ink(0.75)
		tw, _ := text(t.label)
		lx := math.Min(math.Max(tx-tw/2, left-tw/2), w-tw-2)
		show(t.label, lx, y0+5)
	}
}

// tooltipAt is what the bar at x says: its time span, its bytes and its
// connections; "" away from the bars.
func (c *trafficChart) tooltipAt(x float64) string {
	if c.barW <= 0 || x < c.left {
		return ""
	}
	i := int((x - c.left) / c.barW)
	if i < 0 || i >= len(c.buckets) {
		return ""
	}
	b := c.buckets[i]
	from := b.GetStart().AsTime().In(c.loc)
	to := from.Add(c.step)
	span := from.Format("15:04") + "–" + to.Format("15:04")
	if c.rng == uiv1.ChartRange_CHART_RANGE_WEEK {
		span = from.Format("Mon 2 Jan, ") + span
	}
	return fmt.Sprintf("%s\nReceived %s\nSent %s\n%s allowed, %s denied", span, humanBytes(b.GetBytesReceived()),
		humanBytes(b.GetBytesSent()), countText(b.GetAllowed()), countText(b.GetDenied()))
}
