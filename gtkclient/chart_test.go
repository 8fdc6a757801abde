package gtkclient

import (
	"slices"
	"testing"
	"time"

	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 999: "999 B", 1000: "1.0 kB", 1499: "1.5 kB", 9949: "9.9 kB", 9950: "10 kB",
		999_499: "999 kB", 999_500: "1.0 MB", 23_400_000: "23 MB", 1_234_567_890: "1.2 GB", 1 << 63: "9.2 EB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestChartScale: the axis starts at 0, reaches the tallest bar, and
// steps in round figures, four or five of them: the bars keep their
// proportions and the labels can be read.
func TestChartScale(t *testing.T) {
	for _, max := range []uint64{0, 1, 7, 999, 1000, 1001, 40_000, 399_999_999, 400_000_000, 401_000_000, 921_000_000, 1 << 40} {
		top, step := chartScale(max)
		if top < max || step == 0 || top%step != 0 {
			t.Errorf("chartScale(%d) = %d, %d", max, top, step)
			continue
		}
		if n := top / step; max >= 8 && (n < 2 || n > 5) { // (a byte is not divided)
			t.Errorf("chartScale(%d): %d steps of %d", max, n, step)
		}
		if max > 0 && top-max >= step {
			t.Errorf("chartScale(%d) = %d: a whole empty step on top", max, top)
		}
		s := step
		for s%10 == 0 {
			s /= 10
		}
		if max > 100 && !slices.Contains([]uint64{1, 2, 25, 5}, s) {
			t.Errorf("chartScale(%d): step %d is not round", max, step)
		}
	}
}

func TestChartTicks(t *testing.T) {
	loc := time.FixedZone("CET", 3600)
	first := time.Date(2026, 3, 14, 14, 10, 0, 0, time.UTC) // 15:10 local
	labels := func(ts []chartTick) []string {
		var out []string
		for _, tk := range ts {
			out = append(out, tk.label)
		}
		return out
	}
	hour := chartTicks(first, time.Minute, 60, uiv1.ChartRange_CHART_RANGE_HOUR, loc)
	if got, want := labels(hour), []string{"15:10", "15:20", "15:30", "15:40", "15:50", "16:00", "16:10"}; !slices.Equal(got, want) {
		t.Errorf("hour ticks %q, want %q", got, want)
	}
	if hour[0].pos != 0 || hour[6].pos != 60 {
		t.Errorf("hour tick positions %v … %v", hour[0].pos, hour[6].pos)
	}
	day := chartTicks(first.Add(-10*time.Minute), 15*time.Minute, 96, uiv1.ChartRange_CHART_RANGE_DAY, loc)
	if got, want := labels(day), []string{"15:00", "18:00", "21:00", "00:00", "03:00", "06:00", "09:00", "12:00", "15:00"}; !slices.Equal(got, want) {
		t.Errorf("day ticks %q, want %q", got, want)
	}
	if day[1].pos != 12 || day[8].pos != 96 { // from 15:00 local
		t.Errorf("18:00 at %v quarters, want 12; the end at %v, want 96", day[1].pos, day[8].pos)
	}
	week := chartTicks(time.Date(2026, 3, 7, 15, 0, 0, 0, time.UTC), time.Hour, 168, uiv1.ChartRange_CHART_RANGE_WEEK, loc)
	if got, want := labels(week), []string{"Sun 8", "Mon 9", "Tue 10", "Wed 11", "Thu 12", "Fri 13", "Sat 14"}; !slices.Equal(got, want) {
		t.Errorf("week ticks %q, want %q", got, want)
	}
	if week[0].pos != 8 { // 16:00 local on the 7th to midnight
		t.Errorf("first midnight at %v hours, want 8", week[0].pos)
	}
}

func TestGroupDestinations(t *testing.T) {
	ds := []*uiv1.Destination{
		{Host: "a.example", Address: "192.0.2.1", Port: 443},
		{Address: "192.0.2.9", Port: 53},
		{Host: "a.example", Address: "192.0.2.2", Port: 80},
		{Host: "b.example", Address: "192.0.2.1", Port: 443},
		{Address: "192.0.2.9", Port: 123},
	}
	got := groupDestinations(ds)
	want := []destGroup{{"a.example", []int{0, 2}}, {"192.0.2.9", []int{1, 4}}, {"b.example", []int{3}}}
	if len(got) != len(want) {
		t.Fatalf("groups %v, want %v", got, want)
	}
	for i := range want {
		if got[i].name != want[i].name || !slices.Equal(got[i].dests, want[i].dests) {
			t.Errorf("group %d = %v, want %v", i, got[i], want[i])
		}
	}
}
