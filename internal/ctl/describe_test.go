package ctl

import (
	"testing"

	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

func TestDescribeFlowShowsHost(t *testing.T) {
	v4 := &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 4, DstIp: "192.0.2.80", DstPort: 443}
	v6 := &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_UDP, IpVersion: 6, DstIp: "2001:db8::1", DstPort: 53}
	for _, tc := range []struct {
		f          *agentv1.Flow
		host, want string
	}{
		{v4, "", "tcp 192.0.2.80:443"},
		{v4, "WWW.example.test.", "tcp 192.0.2.80:443 (www.example.test)"},
		{v6, "v6.example.test", "udp [2001:db8::1]:53 (v6.example.test)"},
		{v4, "evil\x1b[2J.test", "tcp 192.0.2.80:443"}, // not a host name: not printed
	} {
		if got := describeFlow(tc.f, tc.host); got != tc.want {
			t.Errorf("describeFlow(%q) = %q, want %q", tc.host, got, tc.want)
		}
	}
}
