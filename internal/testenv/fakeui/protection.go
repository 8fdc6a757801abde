package fakeui

import (
	"context"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// PutOffPrompt implements uiv1.UIServiceServer: like the real service, it
// applies the silent action (deny here) to the prompt now and lists it
// under decide later.
func (s *Service) PutOffPrompt(_ context.Context, req *uiv1.PutOffPromptRequest) (*uiv1.PutOffPromptResponse, error) {
	s.record("PutOffPrompt", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.prompts, func(q *uiv1.Prompt) bool { return q.GetId() == req.GetPromptId() })
	if i < 0 {
		return nil, status.Errorf(codes.NotFound, "prompt %q is not waiting", req.GetPromptId())
	}
	p := s.prompts[i]
	e := &uiv1.DecideLaterEntry{Id: s.newIDLocked("l"), Time: timestamppb.New(s.now()), Process: p.GetProcess(),
		Flow: p.GetFlow(), Host: p.GetHost(), Applied: rulesv1.Action_ACTION_DENY}
	s.later = append(s.later, e)
	s.history = append(s.history, &uiv1.HistoryEntry{Time: e.GetTime(), Process: p.GetProcess(),
		Flow: p.GetFlow(), Host: p.GetHost(), Action: e.GetApplied(), DecidedBy: "later"})
	s.withdrawLocked(p.GetId(), "later")
	return &uiv1.PutOffPromptResponse{Applied: e.GetApplied(), DecideLaterId: e.GetId()}, nil
}

// PauseProtection implements uiv1.UIServiceServer: it records the pause,
// which GetStatus reports until it ends.
func (s *Service) PauseProtection(_ context.Context, req *uiv1.PauseProtectionRequest) (*uiv1.PauseProtectionResponse, error) {
	s.record("PauseProtection", req)
	d := req.GetDuration().AsDuration()
	if d <= 0 {
		return nil, status.Error(codes.InvalidArgument, "a pause must last more than 0")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pausedUntil = s.now().Add(d)
	return &uiv1.PauseProtectionResponse{PausedUntil: timestamppb.New(s.pausedUntil)}, nil
}

// ResumeProtection implements uiv1.UIServiceServer.
func (s *Service) ResumeProtection(_ context.Context, req *uiv1.ResumeProtectionRequest) (*uiv1.ResumeProtectionResponse, error) {
	s.record("ResumeProtection", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pausedUntil = s.now()
	return &uiv1.ResumeProtectionResponse{}, nil
}
