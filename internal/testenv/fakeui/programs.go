package fakeui

import (
	"context"
	"path"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Program is one program's traffic as the fake service reports it: its
// summary for today, its destinations, and its traffic in minute buckets
// (the last 24 hours) and hour buckets (the last week), each starting on
// its minute or hour. ListPrograms and GetProgram count the rules that
// name it from the service's rules, so that adding, deleting or editing a
// rule shows.
type Program struct {
	Summary      *uiv1.ProgramSummary
	Destinations []*uiv1.Destination
	Minutes      []*uiv1.TrafficBucket
	Hours        []*uiv1.TrafficBucket
}

// key is how the program is named: its executable, else its comm.
func (p *Program) key() string {
	if p.Summary.GetExe() != "" {
		return p.Summary.GetExe()
	}
	return p.Summary.GetComm()
}

// SetPrograms replaces the programs ListPrograms and GetProgram report.
func (s *Service) SetPrograms(ps ...*Program) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.programs = nil
	for _, p := range ps {
		c := &Program{Summary: proto.Clone(p.Summary).(*uiv1.ProgramSummary)}
		for _, d := range p.Destinations {
			c.Destinations = append(c.Destinations, proto.Clone(d).(*uiv1.Destination))
		}
		c.Minutes = slices.Clone(p.Minutes)
		c.Hours = slices.Clone(p.Hours)
		s.programs = append(s.programs, c)
	}
}

// EditProgram changes the summary of the program named exe (its path, or
// its comm when it has none) with edit, as new traffic would; it reports
// whether there is such a program.
func (s *Service) EditProgram(exe string, edit func(*uiv1.ProgramSummary)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.programs {
		if p.key() == exe {
			edit(p.Summary)
			return true
		}
	}
	return false
}

// rulesForLocked are the rules whose program pattern matches exe. The
// real service matches with the rules package; path.Match reads the same
// globs (and their backslash escapes) for the sample rules.
func (s *Service) rulesForLocked(exe string) []*rulesv1.Rule {
	var out []*rulesv1.Rule
	if exe == "" {
		return nil
	}
	for _, r := range s.rules {
		if r.GetExe() == "" {
			continue
		}
		if ok, _ := path.Match(r.GetExe(), exe); ok || r.GetExe() == exe {
			out = append(out, proto.Clone(r).(*rulesv1.Rule))
		}
	}
	return out
}

func (s *Service) summaryLocked(p *Program) *uiv1.ProgramSummary {
	sum := proto.Clone(p.Summary).(*uiv1.ProgramSummary)
	sum.Rules = uint32(len(s.rulesForLocked(sum.GetExe())))
	return sum
}

// ListPrograms implements uiv1.UIServiceServer: every program, most
// recently active first. The summaries are those given to SetPrograms,
// whatever the period asked for.
func (s *Service) ListPrograms(_ context.Context, req *uiv1.ListProgramsRequest) (*uiv1.ListProgramsResponse, error) {
	s.record("ListPrograms", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	since := req.GetSince()
	if since == nil {
		now := s.now()
		since = timestamppb.New(time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, now.Location()))
	}
	resp := &uiv1.ListProgramsResponse{Since: since}
	for _, p := range s.programs {
		resp.Programs = append(resp.Programs, s.summaryLocked(p))
	}
	slices.SortStableFunc(resp.Programs, func(a, b *uiv1.ProgramSummary) int {
		return b.GetLastActivity().AsTime().Compare(a.GetLastActivity().AsTime())
	})
	return resp, nil
}

// GetProgram implements uiv1.UIServiceServer.
func (s *Service) GetProgram(_ context.Context, req *uiv1.GetProgramRequest) (*uiv1.GetProgramResponse, error) {
	s.record("GetProgram", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	name := req.GetProgram()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "name a program: its executable's path or its name")
	}
	// A path names its program; a name, the programs with that comm or
	// base name, which must be one.
	var found []*Program
	for _, p := range s.programs {
		switch {
		case strings.Contains(name, "/"):
			if p.Summary.GetExe() == name {
				found = append(found, p)
			}
		case p.Summary.GetComm() == name || (p.Summary.GetExe() != "" && path.Base(p.Summary.GetExe()) == name):
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return nil, status.Errorf(codes.NotFound, "no program %q made connections", name)
	case 1:
	default:
		return nil, status.Errorf(codes.FailedPrecondition, "%q names %d programs; give the executable's path", name, len(found))
	}
	p := found[0]
	resp := &uiv1.GetProgramResponse{Program: s.summaryLocked(p), Rules: s.rulesForLocked(p.Summary.GetExe())}
	for _, d := range p.Destinations {
		resp.Destinations = append(resp.Destinations, proto.Clone(d).(*uiv1.Destination))
	}
	slices.SortStableFunc(resp.Destinations, func(a, b *uiv1.Destination) int {
		return b.GetLastSeen().AsTime().Compare(a.GetLastSeen().AsTime())
	})
	resp.Chart, resp.Bucket = chart(p, req.GetRange(), s.now())
	return resp, nil
}

// chart sums p's buckets into every bucket of the range ending now,
// oldest first: an hour of minutes, a day of quarter hours (from the
// minutes) or a week of hours.
func chart(p *Program, r uiv1.ChartRange, now time.Time) ([]*uiv1.TrafficBucket, *durationpb.Duration) {
	step, n, from := 15*time.Minute, 96, p.Minutes
	switch r {
	case uiv1.ChartRange_CHART_RANGE_HOUR:
		step, n = time.Minute, 60
	case uiv1.ChartRange_CHART_RANGE_WEEK:
		step, n, from = time.Hour, 168, p.Hours
	}
	first := now.Truncate(step).Add(-time.Duration(n-1) * step)
	out := make([]*uiv1.TrafficBucket, n)
	for i := range out {
		out[i] = &uiv1.TrafficBucket{Start: timestamppb.New(first.Add(time.Duration(i) * step))}
	}
	for _, b := range from {
		i := int(b.GetStart().AsTime().Sub(first) / step)
		if b.GetStart().AsTime().Before(first) || i >= n {
			continue
		}
		o := out[i]
		o.BytesSent += b.GetBytesSent()
		o.BytesReceived += b.GetBytesReceived()
		o.Allowed += b.GetAllowed()
		o.Denied += b.GetDenied()
	}
	return out, durationpb.New(step)
}
