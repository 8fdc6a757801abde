package bench

import (
	"os"
	"path/filepath"
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

func TestCPUModel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpuinfo")
	data := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n"
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := cpuModel(path); got != "AMD EPYC 7B13" {
		t.Errorf("cpuModel = %q, want %q", got, "AMD EPYC 7B13")
	}
	if got := cpuModel(filepath.Join(t.TempDir(), "missing")); got != "" {
		t.Errorf("cpuModel of a missing file = %q, want empty", got)
	}
}

func TestRatioOf(t *testing.T) {
	a := &KernelCase{Rates: []float64{10, 30, 20, 5}}
	b := &KernelCase{Rates: []float64{10, 10, 10, 0}} // a round with no baseline is left out
	got := ratioOf(a, b)
	if want := (Ratio{Median: 2, Min: 1, Max: 3}); got != want {
		t.Errorf("ratioOf = %+v, want %+v", got, want)
	}
	if got := ratioOf(a, &KernelCase{}); got != (Ratio{}) {
		t.Errorf("ratioOf with no rounds = %+v, want zero", got)
	}
}

func TestKernelCountersAndCalls(t *testing.T) {
	c := KernelCounters{Allowed: 10, Denied: 5, Rejected: 1, Lost: 2, Packets: 12}.Sub(KernelCounters{Allowed: 4, Denied: 1, Lost: 1, Packets: 4})
	if want := (KernelCounters{Allowed: 6, Denied: 4, Rejected: 1, Lost: 1, Packets: 8}); c != want {
		t.Errorf("Sub = %+v, want %+v", c, want)
	}
	if c.Sent() != 11 {
		t.Errorf("Sent = %d, want 11", c.Sent())
	}
	if n := (LoopRun{OK: 3, Errors: map[string]int{"EPERM": 4, "ECONNREFUSED": 1}}).Calls(); n != 8 {
		t.Errorf("Calls = %d, want 8", n)
	}
}
