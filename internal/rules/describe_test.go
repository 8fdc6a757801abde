package rules

import (
	"testing"
	"time"

	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

func TestDestinationText(t *testing.T) {
	for _, tc := range []struct {
		r            *rulesv1.Rule
		where, ports string
	}{
		{&rulesv1.Rule{}, "", ""},
		{&rulesv1.Rule{Host: "example.com", Dst: "192.0.2.1/32", DstPortMin: 443, DstPortMax: 443}, "example.com", "443"},
		{&rulesv1.Rule{Dst: "192.0.2.1/32"}, "192.0.2.1", ""},
		{&rulesv1.Rule{Dst: "2001:db8::1/128", DstPortMin: 22}, "2001:db8::1", "22"},
		{&rulesv1.Rule{Dst: "10.0.0.0/8", DstPortMin: 8000, DstPortMax: 8999}, "10.0.0.0/8", "8000-8999"},
	} {
		where, ports := DestinationText(tc.r)
		if where != tc.where || ports != tc.ports {
			t.Errorf("DestinationText(%v) = %q, %q; want %q, %q", tc.r, where, ports, tc.where, tc.ports)
		}
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		45 * time.Second:                "45s",
		14*time.Minute + 59*time.Second: "14m59s",
		15 * time.Minute:                "15m",
		2*time.Hour + 5*time.Minute:     "2h5m",
		3 * time.Hour:                   "3h",
		76*time.Hour + 10*time.Minute:   "3d4h",
	} {
		if got := ShortDuration(d); got != want {
			t.Errorf("ShortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
