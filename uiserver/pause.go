package uiserver

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// A pause of protection: for a while, the user's connections that no rule
// decides are allowed once each and logged, instead of asked about. It
// concerns only this service's user (the service decides nobody else's
// connections), stores no rule, and ends by itself.

// maxPause bounds one pause: protection must come back the same day.
const maxPause = 24 * time.Hour

// decidedByPause is the history's decided_by of a connection allowed
// while protection was paused.
const decidedByPause = "paused"

// pauseState is guarded by Service.mu.
type pauseState struct {
	until time.Time // zero while protection is on
	stop  func() bool
}

// pausedLocked reports whether protection is paused at now.
func (s *Service) pausedLocked(now time.Time) bool {
	return !s.pause.until.IsZero() && now.Before(s.pause.until)
}

// PausedUntil is when the pause ends, zero while protection is on.
func (s *Service) PausedUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.pausedLocked(s.clock.Now()) {
		return time.Time{}
	}
	return s.pause.until
}

// PauseProtection pauses protection for d: the open prompts and every new
// connection no rule decides are allowed (once, logged), until d passes
// or ResumeProtection. A new pause replaces the running one.
func (s *Service) PauseProtection(d time.Duration) (time.Time, error) {
	if d <= 0 || d > maxPause {
		return time.Time{}, invalidf("a pause must last more than 0 and at most %s, not %s", maxPause, d)
	}
	now := s.clock.Now()
	until := now.Add(d)
	s.mu.Lock()
	if s.pause.stop != nil {
		s.pause.stop()
	}
	s.pause.until = until
	s.pause.stop = s.clock.AfterFunc(d, func() { s.resume(until) })
	open := make([]*prompt, 0, len(s.prompts))
	for _, p := range s.prompts {
		open = append(open, p)
	}
	for _, p := range open {
		s.removePromptLocked(p)
		s.broadcastLocked(withdrawn(p, decidedByPause))
	}
	s.mu.Unlock()
	s.log.Info("protection paused", "until", until.Format(time.RFC3339), "open_prompts", len(open))
	for _, p := range open {
		s.decideEntries(p.agent, p.key, entriesOf(p), flow.ActionAllow, decidedByPause, "")
	}
	return until, nil
}

// ResumeProtection ends a pause now; without one it does nothing.
func (s *Service) ResumeProtection() {
	s.mu.Lock()
	until := s.pause.until
	s.mu.Unlock()
	s.resume(until)
}

// resume ends the pause that lasts until until (and not a newer one).
func (s *Service) resume(until time.Time) {
	s.mu.Lock()
	if until.IsZero() || !s.pause.until.Equal(until) {
		s.mu.Unlock()
		return
	}
	if s.pause.stop != nil {
		s.pause.stop()
	}
	s.pause = pauseState{}
	s.mu.Unlock()
	s.log.Info("protection resumed")
}

func (a *apiServer) PauseProtection(_ context.Context, req *uiv1.PauseProtectionRequest) (*uiv1.PauseProtectionResponse, error) {
	if req.GetDuration() == nil {
		return nil, toStatus(invalidf("duration is required"))
	}
	until, err := a.svc.PauseProtection(req.GetDuration().AsDuration())
	if err != nil {
		return nil, toStatus(err)
	}
	return &uiv1.PauseProtectionResponse{PausedUntil: timestamppb.New(until)}, nil
}

func (a *apiServer) ResumeProtection(context.Context, *uiv1.ResumeProtectionRequest) (*uiv1.ResumeProtectionResponse, error) {
	a.svc.ResumeProtection()
	return &uiv1.ResumeProtectionResponse{}, nil
}

func (a *apiServer) PutOffPrompt(ctx context.Context, req *uiv1.PutOffPromptRequest) (*uiv1.PutOffPromptResponse, error) {
	if err := checkID("prompt_id", req.GetPromptId()); err != nil {
		return nil, toStatus(err)
	}
	act, id, err := a.svc.PutOffPrompt(ctx, req.GetPromptId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &uiv1.PutOffPromptResponse{Applied: rules.ActionProto(act), DecideLaterId: id}, nil
}

// pausedUntilProto is GetStatus's paused_until: nil while protection is on.
func (s *Service) pausedUntilProto() *timestamppb.Timestamp {
	if t := s.PausedUntil(); !t.IsZero() {
		return timestamppb.New(t)
	}
	return nil
}
