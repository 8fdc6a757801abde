package fakeui

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// TestConfigRetention: GetConfig and SetConfig carry the history
// retention as the rules service does: 1 to 366 days, and a client that
// sends none leaves it as it was.
func TestConfigRetention(t *testing.T) {
	ctx := context.Background()
	s := New()
	get := func() *uiv1.UserConfig {
		t.Helper()
		resp, err := s.GetConfig(ctx, &uiv1.GetConfigRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetConfig()
	}
	if r := get().GetHistoryRetention().AsDuration(); r != 30*24*time.Hour {
		t.Fatalf("retention %s, want the default 30 days", r)
	}
	set := func(r *durationpb.Duration) error {
		c := &uiv1.UserConfig{SilentAction: rulesv1.Action_ACTION_DENY, PromptTimeout: durationpb.New(30 * time.Second),
			TimeoutAction: rulesv1.Action_ACTION_REJECT, HistorySize: 10, HistoryRetention: r}
		_, err := s.SetConfig(ctx, &uiv1.SetConfigRequest{Config: c})
		return err
	}
	if err := set(durationpb.New(90 * 24 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := set(nil); err != nil {
		t.Fatal(err)
	}
	if r := get().GetHistoryRetention().AsDuration(); r != 90*24*time.Hour {
		t.Errorf("retention %s after a SetConfig without it, want the 90 days set before", r)
	}
	for _, bad := range []time.Duration{0, 23 * time.Hour, 367 * 24 * time.Hour} {
		if err := set(durationpb.New(bad)); status.Code(err) != codes.InvalidArgument {
			t.Errorf("retention %s: %v, want InvalidArgument", bad, err)
		}
	}
	if r := get().GetHistoryRetention().AsDuration(); r != 90*24*time.Hour || get().GetHistorySize() != 10 {
		t.Errorf("retention %s, history %d after refused settings", r, get().GetHistorySize())
	}
}
