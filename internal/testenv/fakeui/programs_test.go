package fakeui

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

func TestPrograms(t *testing.T) {
	now := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	s := New()
	s.SetClock(func() time.Time { return now })
	s.AddRules(&rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: "/usr/bin/curl"},
		&rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_DENY, Exe: "/usr/bin/*"},
		&rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_DENY})
	minute := now.Truncate(time.Minute)
	s.SetPrograms(
		&Program{Summary: &uiv1.ProgramSummary{Exe: "/usr/bin/curl", Comm: "curl", LastActivity: timestamppb.New(now.Add(-time.Hour))},
			Minutes: []*uiv1.TrafficBucket{
				{Start: timestamppb.New(minute), BytesSent: 10, BytesReceived: 100},
				{Start: timestamppb.New(minute.Add(-time.Minute)), BytesSent: 1, BytesReceived: 2},
				{Start: timestamppb.New(minute.Add(-time.Hour)), BytesSent: 1000}, // out of the hour, in the day
			},
			Hours: []*uiv1.TrafficBucket{{Start: timestamppb.New(now.Truncate(time.Hour).Add(-167 * time.Hour)), BytesReceived: 5}}},
		&Program{Summary: &uiv1.ProgramSummary{Comm: "curl", LastActivity: timestamppb.New(now)}},
	)
	ctx := context.Background()
	list, err := s.ListPrograms(ctx, &uiv1.ListProgramsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetPrograms()) != 2 || list.GetPrograms()[0].GetExe() != "" || list.GetPrograms()[1].GetRules() != 2 {
		t.Errorf("ListPrograms %v, want the newest first and curl's 2 rules", list)
	}
	if !list.GetSince().AsTime().Equal(time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("since %v, want midnight", list.GetSince().AsTime())
	}
	if _, err := s.GetProgram(ctx, &uiv1.GetProgramRequest{Program: "curl"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("GetProgram of a name two programs have: %v", err)
	}
	if _, err := s.GetProgram(ctx, &uiv1.GetProgramRequest{Program: "wget"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetProgram of no program: %v", err)
	}
	for _, tc := range []struct {
		r          uiv1.ChartRange
		n          int
		step       time.Duration
		last, sent uint64
	}{
		{uiv1.ChartRange_CHART_RANGE_HOUR, 60, time.Minute, 10, 11},
		{uiv1.ChartRange_CHART_RANGE_DAY, 96, 15 * time.Minute, 11, 1011},
		{uiv1.ChartRange_CHART_RANGE_WEEK, 168, time.Hour, 0, 0},
	} {
		resp, err := s.GetProgram(ctx, &uiv1.GetProgramRequest{Program: "/usr/bin/curl", Range: tc.r})
		if err != nil {
			t.Fatal(err)
		}
		c := resp.GetChart()
		var sent uint64
		for _, b := range c {
			sent += b.GetBytesSent()
		}
		if len(c) != tc.n || resp.GetBucket().AsDuration() != tc.step || c[len(c)-1].GetBytesSent() != tc.last || sent != tc.sent ||
			!c[len(c)-1].GetStart().AsTime().Equal(now.Truncate(tc.step)) {
			t.Errorf("%v: %d buckets of %v, last %v, sent %d", tc.r, len(c), resp.GetBucket().AsDuration(), c[len(c)-1], sent)
		}
		if tc.r == uiv1.ChartRange_CHART_RANGE_WEEK && c[0].GetBytesReceived() != 5 {
			t.Errorf("week's first bucket %v", c[0])
		}
		if len(resp.GetRules()) != 2 {
			t.Errorf("rules %v", resp.GetRules())
		}
	}
}
