package bench

import (
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		stat    string
		want    int64
		wantErr bool
	}{
		{"1234 (bastion-agent) S 1 1234 1234 0 -1 4194560 500 0 0 0 17 4 0 0 20 0 9 0 100 0 0", 21, false},
		{"99 (a) b) (c) R 1 99 99 0 -1 0 0 0 0 0 7 8 0 0", 15, false},
		{"99 (x) R 1 2", 0, true},
		{"no comm here", 0, true},
	} {
		got, err := parseStatCPU(tc.stat)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseStatCPU(%q) = %d, %v; want %d, error %v", tc.stat, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestPercentileUS(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Microsecond)
	}
	if got := percentileUS(lat, 0.50); got != 50 {
		t.Errorf("p50 = %v, want 50", got)
	}
	if got := percentileUS(lat, 0.99); got != 99 {
		t.Errorf("p99 = %v, want 99", got)
	}
	if got := percentileUS(nil, 0.99); got != 0 {
		t.Errorf("p99 of nothing = %v, want 0", got)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
	bad := DefaultConfig()
	bad.Workers = 0
	if bad.Validate() == nil {
		t.Error("zero workers accepted")
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
