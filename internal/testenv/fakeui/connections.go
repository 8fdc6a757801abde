package fakeui

import (
	"context"
	"path"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Bounds of QueryConnectionsRequest.limit, as ui.proto states them.
const (
	defaultConnLimit = 1000
	maxConnLimit     = 100000
)

// SetQueryConnectionsError makes QueryConnections fail with err (nil:
// answer again), as a rules service whose store fails, or an older one
// without the method (codes.Unimplemented).
func (s *Service) SetQueryConnectionsError(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connErr = err
}

// QueryConnections implements uiv1.UIServiceServer over the history
// (AddHistory and the prompts answered), newest first, honouring every
// field of the filter, the limit and truncated as ui.proto documents them.
// Host and text match without regard to case.
func (s *Service) QueryConnections(_ context.Context, req *uiv1.QueryConnectionsRequest) (*uiv1.QueryConnectionsResponse, error) {
	s.record("QueryConnections", req)
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = defaultConnLimit
	case limit > maxConnLimit:
		return nil, status.Errorf(codes.InvalidArgument, "limit %d is more than %d", limit, maxConnLimit)
	}
	f := req.GetFilter()
	if f.GetSince() != nil && f.GetUntil() != nil && f.GetUntil().AsTime().Before(f.GetSince().AsTime()) {
		return nil, status.Error(codes.InvalidArgument, "until is before since")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.connErr != nil {
		return nil, s.connErr
	}
	resp := &uiv1.QueryConnectionsResponse{}
	// The history is kept oldest first.
	for i := len(s.history) - 1; i >= 0; i-- {
		e := s.history[i]
		if !filterMatches(f, e) {
			continue
		}
		if len(resp.Entries) == limit {
			resp.Truncated = true
			break
		}
		resp.Entries = append(resp.Entries, e)
	}
	return resp, nil
}

// filterMatches reports whether history entry e is one that filter f
// selects: every field set must match; unset fields match all.
func filterMatches(f *uiv1.ConnectionFilter, e *uiv1.HistoryEntry) bool {
	if p := f.GetProgram(); p != "" && !programIs(e.GetProcess(), p) {
		return false
	}
	fl := e.GetFlow()
	if h := strings.ToLower(f.GetHost()); h != "" &&
		!strings.Contains(strings.ToLower(e.GetHost()), h) && !strings.Contains(strings.ToLower(fl.GetDstIp()), h) {
		return false
	}
	switch f.GetAction() {
	case rulesv1.Action_ACTION_UNSPECIFIED:
	case rulesv1.Action_ACTION_DENY: // deny, and reject
		if a := e.GetAction(); a != rulesv1.Action_ACTION_DENY && a != rulesv1.Action_ACTION_REJECT {
			return false
		}
	default:
		if e.GetAction() != f.GetAction() {
			return false
		}
	}
	t := e.GetTime().AsTime()
	if f.GetSince() != nil && t.Before(f.GetSince().AsTime()) {
		return false
	}
	if f.GetUntil() != nil && !t.Before(f.GetUntil().AsTime()) {
		return false
	}
	if id := f.GetRuleId(); id != "" && e.GetRuleId() != id && e.GetDecidedBy() != "rule:"+id {
		return false
	}
	if text := strings.ToLower(f.GetText()); text != "" {
		p := e.GetProcess()
		fields := []string{p.GetExe(), p.GetComm(), strings.Join(p.GetArgs(), " "), e.GetHost(), fl.GetDstIp(), e.GetDecidedBy()}
		if !containsAny(fields, text) {
			return false
		}
	}
	return true
}

func containsAny(fields []string, sub string) bool {
	for _, s := range fields {
		if strings.Contains(strings.ToLower(s), sub) {
			return true
		}
	}
	return false
}

// programIs reports whether p is the program named: an executable's path
// (starting with "/") names it exactly; a name matches its comm or its
// path's last element.
func programIs(p *agentv1.Process, program string) bool {
	if strings.HasPrefix(program, "/") {
		return p.GetExe() == program
	}
	return p.GetComm() == program || (p.GetExe() != "" && path.Base(p.GetExe()) == program)
}
