package flow

import "testing"

func TestProtoNames(t *testing.T) {
	for p := range 256 {
		p := Proto(p)
		got, err := ParseProto(p.String())
		if p == 0 {
			if err == nil {
				t.Errorf("ParseProto(%q) = %d, want an error (0 reads as any)", p.String(), got)
			}
			continue
		}
		if err != nil || got != p {
			t.Errorf("ParseProto(%q) = %d, %v; want %d", p.String(), got, err, p)
		}
	}
	for _, tc := range []struct {
		in   string
		want Proto
	}{
		{"udplite", UDPLite}, {"udp-lite", UDPLite}, {"ipv6-icmp", ICMPv6}, {"sctp", SCTP},
		{"253", 253}, {"proto-253", 253}, {"136", UDPLite}, {"gre", GRE},
	} {
		if got, err := ParseProto(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseProto(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "0", "proto-0", "256", "-1", "+6", "tcp6", "proto-", "0x11", "UDP"} {
		if got, err := ParseProto(bad); err == nil {
			t.Errorf("ParseProto(%q) = %d, want an error", bad, got)
		}
	}
}

func TestHasPorts(t *testing.T) {
	want := map[Proto]bool{TCP: true, UDP: true, UDPLite: true, SCTP: true, DCCP: true}
	for p := range 256 {
		if got := Proto(p).HasPorts(); got != want[Proto(p)] {
			t.Errorf("%v.HasPorts() = %v", Proto(p), got)
		}
	}
}
