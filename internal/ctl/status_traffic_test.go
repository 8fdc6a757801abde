package ctl

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// TestStatusTrafficAccounting: the status says in one line whether traffic
// is counted, and what that follows and costs.
func TestStatusTrafficAccounting(t *testing.T) {
	for _, tc := range []struct {
		name string
		ta   *agentv1.TrafficAccounting
		want string
	}{
		{"active", &agentv1.TrafficAccounting{State: "active", Tracked: 3, MemoryBytes: 1728, Interval: durationpb.New(5 * time.Second),
			SamplesSent: 40, SamplesDropped: 2, Lost: 1},
			"traffic accounting: active, counts read every 5s; 3 connections followed (~2 KiB), samples sent 40, dropped 2; connections lost 1\n"},
		{"unavailable", &agentv1.TrafficAccounting{State: "unavailable (set nf_conntrack_acct: permission denied\x1b[2J)"},
			"traffic accounting: unavailable (set nf_conntrack_acct: permission denied\\x1b[2J)\n"},
		{"older agent", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			c := &cli{out: &out}
			c.printTrafficAccounting(&agentv1.GetStatusResponse{TrafficAccounting: tc.ta})
			if out.String() != tc.want {
				t.Errorf("printed\n%q\nwant\n%q", out.String(), tc.want)
			}
		})
	}
}
