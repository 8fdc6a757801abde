package fakeui

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

func TestQueryConnections(t *testing.T) {
	t0 := time.Date(2026, 3, 14, 15, 0, 0, 0, time.UTC)
	curl := &agentv1.Process{Pid: 10, Comm: "curl", Exe: "/usr/bin/curl", Args: []string{"curl", "https://example.com/"}}
	ff := &agentv1.Process{Pid: 20, Comm: "firefox-esr", Exe: "/usr/lib/firefox-esr/firefox-esr"}
	anon := &agentv1.Process{Pid: 30, Comm: "mystery"} // not identified: its comm names it
	fl := func(ip string, port uint32) *agentv1.Flow {
		return &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 4, DstIp: ip, DstPort: port}
	}
	// Oldest first, one a minute; the name is the entry's minute.
	hist := []*uiv1.HistoryEntry{
		{Process: curl, Flow: fl("93.184.215.14", 443), Host: "Example.com", Action: rulesv1.Action_ACTION_ALLOW, DecidedBy: "prompt"},
		{Process: ff, Flow: fl("34.107.221.82", 443), Host: "incoming.telemetry.mozilla.org", Action: rulesv1.Action_ACTION_DENY,
			DecidedBy: "rule:0000000000000004", RuleId: "0000000000000004"},
		{Process: ff, Flow: fl("34.107.221.82", 443), Host: "push.services.mozilla.com", Action: rulesv1.Action_ACTION_REJECT,
			DecidedBy: "deadline"},
		{Process: anon, Flow: fl("10.0.0.7", 53), Action: rulesv1.Action_ACTION_ALLOW, DecidedBy: "cache:c1f3"},
		{Process: curl, Flow: fl("151.101.2.132", 443), Host: "deb.debian.org", Action: rulesv1.Action_ACTION_ALLOW,
			DecidedBy: "rule:0000000000000003"}, // rule_id left empty: decided_by names it
	}
	for i, e := range hist {
		e.Time = timestamppb.New(t0.Add(time.Duration(i) * time.Minute))
	}
	s := New()
	s.AddHistory(hist...)
	at := func(m int) *timestamppb.Timestamp { return timestamppb.New(t0.Add(time.Duration(m) * time.Minute)) }
	tests := []struct {
		name      string
		filter    *uiv1.ConnectionFilter
		limit     uint32
		want      []int // minutes, newest first
		truncated bool
	}{
		{"all", nil, 0, []int{4, 3, 2, 1, 0}, false},
		{"limit", nil, 2, []int{4, 3}, true},
		{"limit exactly met", nil, 5, []int{4, 3, 2, 1, 0}, false},
		{"program by path", &uiv1.ConnectionFilter{Program: "/usr/bin/curl"}, 0, []int{4, 0}, false},
		{"program by path is exact", &uiv1.ConnectionFilter{Program: "/usr/bin/cur"}, 0, nil, false},
		{"program by base name", &uiv1.ConnectionFilter{Program: "firefox-esr"}, 0, []int{2, 1}, false},
		{"program by comm", &uiv1.ConnectionFilter{Program: "mystery"}, 0, []int{3}, false},
		{"host substring any case", &uiv1.ConnectionFilter{Host: "EXAMPLE"}, 0, []int{0}, false},
		{"host by address", &uiv1.ConnectionFilter{Host: "34.107."}, 0, []int{2, 1}, false},
		{"allowed", &uiv1.ConnectionFilter{Action: rulesv1.Action_ACTION_ALLOW}, 0, []int{4, 3, 0}, false},
		{"denied includes rejected", &uiv1.ConnectionFilter{Action: rulesv1.Action_ACTION_DENY}, 0, []int{2, 1}, false},
		{"rejected alone", &uiv1.ConnectionFilter{Action: rulesv1.Action_ACTION_REJECT}, 0, []int{2}, false},
		{"since", &uiv1.ConnectionFilter{Since: at(3)}, 0, []int{4, 3}, false},
		{"until excludes its instant", &uiv1.ConnectionFilter{Until: at(1)}, 0, []int{0}, false},
		{"since and until", &uiv1.ConnectionFilter{Since: at(1), Until: at(3)}, 0, []int{2, 1}, false},
		{"rule by rule_id", &uiv1.ConnectionFilter{RuleId: "0000000000000004"}, 0, []int{1}, false},
		{"rule by decided_by", &uiv1.ConnectionFilter{RuleId: "0000000000000003"}, 0, []int{4}, false},
		{"text in args", &uiv1.ConnectionFilter{Text: "https://example"}, 0, []int{4, 0}, false}, // 4: its host is deb.debian.org
		{"text in decided_by", &uiv1.ConnectionFilter{Text: "Deadline"}, 0, []int{2}, false},
		{"text in address", &uiv1.ConnectionFilter{Text: "10.0.0.7"}, 0, []int{3}, false},
		{"every field at once", &uiv1.ConnectionFilter{Program: "curl", Host: "debian", Action: rulesv1.Action_ACTION_ALLOW,
			Since: at(0), Until: at(5), RuleId: "0000000000000003", Text: "deb."}, 0, []int{4}, false},
		{"filter and limit", &uiv1.ConnectionFilter{Action: rulesv1.Action_ACTION_ALLOW}, 1, []int{4}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.QueryConnections(context.Background(), &uiv1.QueryConnectionsRequest{Filter: tc.filter, Limit: tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			for _, e := range resp.GetEntries() {
				got = append(got, int(e.GetTime().AsTime().Sub(t0)/time.Minute))
			}
			if !slices.Equal(got, tc.want) || resp.GetTruncated() != tc.truncated {
				t.Errorf("got %v truncated %v, want %v truncated %v", got, resp.GetTruncated(), tc.want, tc.truncated)
			}
		})
	}
}

func TestQueryConnectionsRefusesBadRequests(t *testing.T) {
	s := New()
	now := time.Now()
	for name, req := range map[string]*uiv1.QueryConnectionsRequest{
		"limit over 100000":  {Limit: 100001},
		"until before since": {Filter: &uiv1.ConnectionFilter{Since: timestamppb.New(now), Until: timestamppb.New(now.Add(-time.Second))}},
	} {
		if _, err := s.QueryConnections(context.Background(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}
