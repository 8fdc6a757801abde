package ctl

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0 B", 999: "999 B", 1000: "1.0 kB", 1234: "1.2 kB", 9949: "9.9 kB", 9950: "10 kB", 45_300_000: "45 MB",
		999_499: "999 kB", 999_500: "1.0 MB", 2_100_000_000: "2.1 GB", 1 << 63: "9.2 EB", ^uint64(0): "18 EB",
	} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestAgo(t *testing.T) {
	for d, want := range map[time.Duration]string{-time.Minute: "just now", 5 * time.Second: "just now", 45 * time.Second: "45s ago",
		17*time.Minute + 40*time.Second: "17m ago", 26 * time.Hour: "26h ago", 72 * time.Hour: "3d ago"} {
		if got := ago(testNow.Add(-d), testNow); got != want {
			t.Errorf("ago(%s) = %q, want %q", d, got, want)
		}
	}
	if got := ago(time.Unix(0, 0), testNow); got != "never" {
		t.Errorf("ago(the epoch, an unset timestamp) = %q", got)
	}
}

func TestParseWhen(t *testing.T) {
	loc := time.FixedZone("UTC+2", 2*3600) // testNow is 14:00 there
	at := func(y int, m time.Month, d, h, min int) time.Time { return time.Date(y, m, d, h, min, 0, 0, loc) }
	for in, want := range map[string]time.Time{
		"90m":                  testNow.Add(-90 * time.Minute),
		"2h":                   testNow.Add(-2 * time.Hour),
		"7d":                   testNow.Add(-7 * 24 * time.Hour),
		"2w":                   testNow.Add(-14 * 24 * time.Hour),
		"today":                at(2026, 3, 1, 0, 0),
		"yesterday":            at(2026, 2, 28, 0, 0),
		"13:30":                at(2026, 3, 1, 13, 30),
		"2026-02-20":           at(2026, 2, 20, 0, 0),
		"2026-02-20 08:15":     at(2026, 2, 20, 8, 15),
		"2026-02-20T08:15":     at(2026, 2, 20, 8, 15),
		"2026-02-20 08:15:00":  at(2026, 2, 20, 8, 15),
		"2026-02-20T08:15:00Z": time.Date(2026, 2, 20, 8, 15, 0, 0, time.UTC),
	} {
		got, err := parseWhen(in, testNow, loc)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "-2h", "0s", "15:00", "2026-03-02", "1.5d", "99999999999w", "25:00"} {
		if got, err := parseWhen(in, testNow, loc); err == nil {
			t.Errorf("parseWhen(%q) = %v, want an error", in, got)
		}
	}
}

func TestPeriodText(t *testing.T) {
	for since, want := range map[time.Time]string{
		time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC):   "today (since 00:00)",
		time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC):  "since 09:30 today",
		time.Date(2026, 2, 27, 9, 30, 0, 0, time.UTC): "since 2026-02-27 09:30",
	} {
		if got := periodText(since, testNow, time.UTC); got != want {
			t.Errorf("periodText(%v) = %q, want %q", since, got, want)
		}
	}
}

func TestChartScale(t *testing.T) {
	for v, want := range map[uint64]uint64{0: 1, 1: 1, 2: 2, 3: 5, 7: 10, 10: 10, 11: 20, 45_300_000: 50_000_000, ^uint64(0): ^uint64(0)} {
		if got := niceTop(v); got != want {
			t.Errorf("niceTop(%d) = %d, want %d", v, got, want)
		}
	}
	for _, tc := range []struct {
		v, top uint64
		want   int
	}{{0, 10, 0}, {1, 1_000_000, 1}, {5, 10, 24}, {10, 10, 48}, {11, 10, 48}, {3, 0, 0}} {
		if got := level(tc.v, tc.top, 48); got != tc.want {
			t.Errorf("level(%d, %d) = %d, want %d", tc.v, tc.top, got, tc.want)
		}
	}
}

// TestChartIsHonest draws a chart whose columns are 0, a quarter, a half
// and all of the top, and checks that the bars' heights are in those
// proportions, that the top label is the amount a full bar stands for,
// and that columns merge by adding up their buckets.
func TestChartIsHonest(t *testing.T) {
	start := testNow.Add(-4 * time.Hour)
	bytes := []uint64{0, 0, 250_000, 250_000, 500_000, 500_000, 1_000_000, 1_000_000} // pairs merge into 0, 0.5, 1, 2 MB
	resp := &uiv1.GetProgramResponse{Bucket: durationpb.New(30 * time.Minute)}
	for i, b := range bytes {
		resp.Chart = append(resp.Chart, &uiv1.TrafficBucket{Start: timestamppb.New(start.Add(time.Duration(i) * 30 * time.Minute)), BytesReceived: b})
	}
	var out strings.Builder
	writeChart(&out, resp, uiv1.ChartRange_CHART_RANGE_DAY, 9+2+4, time.UTC) // room for 4 columns
	lines := strings.Split(out.String(), "\n")
	if !strings.Contains(lines[0], "one column = 1 hour:") {
		t.Fatalf("merged columns are not named:\n%s", out.String())
	}
	height := make([]int, 4) // in eighths of a line
	for _, l := range lines[1 : 1+chartRows] {
		_, bars, _ := strings.Cut(l, "┤")
		if bars == "" {
			_, bars, _ = strings.Cut(l, "│")
		}
		for i, r := range []rune(bars) {
			height[i] += slices.Index(eighths, r)
		}
	}
	if !strings.HasPrefix(lines[1], "  2.0 MB ┤") || !strings.HasPrefix(lines[4], "  1.0 MB ┤") {
		t.Errorf("the scale's labels:\n%s", out.String())
	}
	want := []int{0, 12, 24, 48} // 0, a quarter, a half, all of 6 lines of 8
	for i := range want {
		if height[i] != want[i] {
			t.Errorf("column %d is %d eighths high, want %d:\n%s", i, height[i], want[i], out.String())
		}
	}
}

// TestChartWithoutBytes: denied connections only, nothing at all, and an
// answer without a chart each say so in words instead of drawing an
// empty scale.
func TestChartWithoutBytes(t *testing.T) {
	bucket := func(i int, denied uint64) *uiv1.TrafficBucket {
		return &uiv1.TrafficBucket{Start: timestamppb.New(testNow.Add(time.Duration(i-60) * time.Minute)), Denied: denied}
	}
	hour := func(denied uint64) *uiv1.GetProgramResponse {
		resp := &uiv1.GetProgramResponse{Bucket: durationpb.New(time.Minute)}
		for i := range 60 {
			resp.Chart = append(resp.Chart, bucket(i, map[bool]uint64{true: denied}[i == 59]))
		}
		return resp
	}
	for _, tc := range []struct {
		name     string
		resp     *uiv1.GetProgramResponse
		says     []string
		saysNot  string
		maxLines int
	}{
		{"denied only", hour(3), []string{"0  no bytes counted", "denied", "a full denied bar is 3 connections.", "In all: sent 0 B, received 0 B; 0 allowed, 3 denied."}, "┤", 6},
		{"nothing", hour(0), []string{"Traffic over the last hour, one column = 1 minute:\n  no connections.\n"}, "┤", 2},
		{"no chart", &uiv1.GetProgramResponse{}, []string{"Traffic over the last hour: the rules service sent no chart.\n"}, "┤", 1},
	} {
		var out strings.Builder
		writeChart(&out, tc.resp, uiv1.ChartRange_CHART_RANGE_HOUR, 80, time.UTC)
		for _, s := range tc.says {
			if !strings.Contains(out.String(), s) {
				t.Errorf("%s: the chart does not say %q:\n%s", tc.name, s, out.String())
			}
		}
		if strings.Contains(out.String(), tc.saysNot) || strings.Count(out.String(), "\n") > tc.maxLines {
			t.Errorf("%s: the chart draws a scale, or more than %d lines:\n%s", tc.name, tc.maxLines, out.String())
		}
	}
}
