package uiserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
	"github.com/bastion-fw/bastion/internal/store"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// The programs view (ListPrograms, GetProgram) and the history search
// (QueryConnections), read from the store's aggregates and history. Each
// call first writes what waits in memory, so that a client reads what it
// was just shown live.

// Limits of the programs view's answers.
const (
	// defaultQueryLimit and maxQueryLimit bound QueryConnections.
	defaultQueryLimit = 1000
	maxQueryLimit     = 100_000
	// maxProgramDestinations is how many destinations GetProgram
	// returns, the most recently seen; the summary counts them all.
	maxProgramDestinations = 5000
	// maxQueryBytes bounds a QueryConnections answer so that it fits in
	// gRPC's default 4 MiB a client accepts: entries beyond it are left
	// out, with truncated set, and the client asks again with until.
	maxQueryBytes = 4<<20 - 64<<10
)

// Times a client may name: the store holds Unix nanoseconds.
var (
	minAPITime = time.Unix(0, 0)
	maxAPITime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// apiTime checks an optional timestamp from a client.
func apiTime(what string, ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, invalidf("%s is not a valid time", what)
	}
	t := ts.AsTime()
	if t.Before(minAPITime) || t.After(maxAPITime) {
		return time.Time{}, invalidf("%s %s is out of range: choose a time from 1970 to 2200", what, t.Format(time.RFC3339))
	}
	return t, nil
}

// localMidnight is the start of today, local time.
func localMidnight(now time.Time) time.Time {
	y, m, d := now.Local().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.Local)
}

// summarySince reads a request's since, defaulting to local midnight.
func (s *Service) summarySince(ts *timestamppb.Timestamp) (since, now time.Time, err error) {
	now = s.wallNow()
	if since, err = apiTime("since", ts); err != nil {
		return time.Time{}, time.Time{}, err
	}
	if since.IsZero() {
		since = localMidnight(now)
	}
	return since, now, nil
}

// findProgram resolves a client's program name, with messages for the
// person who typed it.
func (s *Service) findProgram(ctx context.Context, name string) (store.Program, error) {
	if name == "" {
		return store.Program{}, invalidf("no program given: name one by its executable's path or its name")
	}
	if len(name) > maxStringLen {
		return store.Program{}, invalidf("the program name is longer than %d bytes", maxStringLen)
	}
	p, err := s.store.FindProgram(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Program{}, fmt.Errorf("%w: no program %q has made connections in the kept history", errNotFound, name)
	case errors.Is(err, store.ErrAmbiguous):
		return store.Program{}, invalidf("%v; name it by its executable's path", err)
	case err != nil:
		return store.Program{}, err
	}
	return p, nil
}

func (a *apiServer) ListPrograms(ctx context.Context, req *uiv1.ListProgramsRequest) (*uiv1.ListProgramsResponse, error) {
	s := a.svc
	since, now, err := s.summarySince(req.GetSince())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.flushStats(ctx); err != nil {
		return nil, toStatus(err)
	}
	progs, err := s.store.Programs(ctx, since, now)
	if err != nil {
		return nil, toStatus(err)
	}
	rs, err := s.Rules(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	idx := rules.NewExeIndex(rs)
	resp := &uiv1.ListProgramsResponse{Since: timestamppb.New(since), Programs: make([]*uiv1.ProgramSummary, len(progs))}
	for i, p := range progs {
		resp.Programs[i] = programProto(p, len(idx.Match(p.Exe)))
	}
	return resp, nil
}

func (a *apiServer) GetProgram(ctx context.Context, req *uiv1.GetProgramRequest) (*uiv1.GetProgramResponse, error) {
	s := a.svc
	since, now, err := s.summarySince(req.GetSince())
	if err != nil {
		return nil, toStatus(err)
	}
	var r store.ChartRange
	switch req.GetRange() {
	case uiv1.ChartRange_CHART_RANGE_HOUR:
		r = store.ChartHour
	case uiv1.ChartRange_CHART_RANGE_DAY, uiv1.ChartRange_CHART_RANGE_UNSPECIFIED:
		r = store.ChartDay
	case uiv1.ChartRange_CHART_RANGE_WEEK:
		r = store.ChartWeek
	default:
		return nil, toStatus(invalidf("unknown chart range %d: choose hour, day or week", req.GetRange()))
	}
	if err := s.flushStats(ctx); err != nil {
		return nil, toStatus(err)
	}
	p, err := s.findProgram(ctx, req.GetProgram())
	if err != nil {
		return nil, toStatus(err)
	}
	sum, err := s.store.ProgramSummary(ctx, p, since, now)
	if err != nil {
		return nil, toStatus(err)
	}
	dests, _, err := s.store.Destinations(ctx, p, maxProgramDestinations)
	if err != nil {
		return nil, toStatus(err)
	}
	chart, step, err := s.store.Chart(ctx, p, r, now)
	if err != nil {
		return nil, toStatus(err)
	}
	all, err := s.Rules(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	var mine []rules.Rule
	for _, i := range rules.NewExeIndex(all).Match(p.Exe) {
		mine = append(mine, all[i])
	}
	resp := &uiv1.GetProgramResponse{
		Program:      programProto(sum, len(mine)),
		Rules:        rulesToProto(mine),
		Destinations: make([]*uiv1.Destination, len(dests)),
		Chart:        make([]*uiv1.TrafficBucket, len(chart)),
		Bucket:       durationpb.New(step),
	}
	for i, d := range dests {
		resp.Destinations[i] = destinationProto(d)
	}
	for i, b := range chart {
		resp.Chart[i] = &uiv1.TrafficBucket{Start: timestamppb.New(b.Start), BytesSent: b.BytesSent, BytesReceived: b.BytesReceived,
			Allowed: b.Allowed, Denied: b.Denied}
	}
	return resp, nil
}

func (a *apiServer) QueryConnections(ctx context.Context, req *uiv1.QueryConnectionsRequest) (*uiv1.QueryConnectionsResponse, error) {
	s := a.svc
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = defaultQueryLimit
	case limit > maxQueryLimit:
		return nil, toStatus(invalidf("the limit %d is too large: ask for at most %d connections", req.GetLimit(), maxQueryLimit))
	}
	f, err := s.historyFilter(ctx, req.GetFilter())
	if err != nil {
		return nil, toStatus(err)
	}
	es, truncated, err := s.store.QueryHistory(ctx, f, limit)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &uiv1.QueryConnectionsResponse{Truncated: truncated, Entries: make([]*uiv1.HistoryEntry, 0, len(es))}
	size := 0
	for _, e := range es {
		pe := historyProto(e)
		// The entry's bytes, its tag and its length prefix.
		if size += proto.Size(pe) + 6; size > maxQueryBytes {
			resp.Truncated = true
			break
		}
		resp.Entries = append(resp.Entries, pe)
	}
	return resp, nil
}

// historyFilter checks a client's filter and resolves its program. It
// writes what waits in memory first.
func (s *Service) historyFilter(ctx context.Context, pf *uiv1.ConnectionFilter) (store.HistoryFilter, error) {
	var f store.HistoryFilter
	for _, v := range []struct{ name, v string }{
		{"host", pf.GetHost()}, {"text", pf.GetText()}, {"rule ID", pf.GetRuleId()},
	} {
		if len(v.v) > maxStringLen {
			return f, invalidf("the %s filter is longer than %d bytes", v.name, maxStringLen)
		}
	}
	f.Host, f.Text, f.RuleID = pf.GetHost(), pf.GetText(), pf.GetRuleId()
	switch pf.GetAction() {
	case rulesv1.Action_ACTION_UNSPECIFIED:
	case rulesv1.Action_ACTION_ALLOW:
		f.Actions = []flow.Action{flow.ActionAllow}
	case rulesv1.Action_ACTION_DENY:
		f.Actions = []flow.Action{flow.ActionDeny, flow.ActionReject}
	case rulesv1.Action_ACTION_REJECT:
		f.Actions = []flow.Action{flow.ActionReject}
	default:
		return f, invalidf("unknown action %d: filter by allow, deny (deny and reject) or reject", pf.GetAction())
	}
	var err error
	if f.Since, err = apiTime("since", pf.GetSince()); err != nil {
		return f, err
	}
	if f.Until, err = apiTime("until", pf.GetUntil()); err != nil {
		return f, err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return f, invalidf("the time range ends (%s) before it begins (%s)", f.Until.Format(time.RFC3339), f.Since.Format(time.RFC3339))
	}
	if err := s.flushStats(ctx); err != nil {
		return f, err
	}
	if name := pf.GetProgram(); name != "" {
		p, err := s.findProgram(ctx, name)
		if err != nil {
			return f, err
		}
		f.Program = &p
	}
	return f, nil
}

func programProto(p store.ProgramSummary, nRules int) *uiv1.ProgramSummary {
	return &uiv1.ProgramSummary{
		Exe: p.Exe, Comm: p.Comm, Allowed: p.Allowed, Denied: p.Denied, Destinations: uint32(min(p.Destinations, 1<<31)),
		BytesSent: p.BytesSent, BytesReceived: p.BytesReceived, LastActivity: timestamppb.New(p.LastSeen), Rules: uint32(min(nRules, 1<<31)),
	}
}

func destinationProto(d store.Destination) *uiv1.Destination {
	proto, _ := apiconv.ProtoProto(d.Proto)
	return &uiv1.Destination{
		Host: d.Host, Address: d.Address, Protocol: proto, Port: uint32(d.Port),
		Allowed: d.Allowed, Denied: d.Denied, BytesSent: d.BytesSent, BytesReceived: d.BytesReceived,
		FirstSeen: timestamppb.New(d.FirstSeen), LastSeen: timestamppb.New(d.LastSeen),
		DecidedBy: d.DecidedBy, RuleId: d.RuleID, LastAction: rules.ActionProto(d.Action),
	}
}
