package store

import (
	"testing"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
)

func TestAnyMountNSStored(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	r, err := s.AddRule(ctx, rules.Rule{Enabled: true, Action: flow.ActionAllow, Lifetime: rules.Forever, Exe: "/usr/bin/firefox", AnyMountNS: true})
	if err != nil {
		t.Fatal(err)
	}
	r.AnyMountNS = false
	r.Note = "flag cleared"
	if err := s.UpdateRule(ctx, r); err != nil {
		t.Fatal(err)
	}
	rs, err := s.Rules(ctx)
	if err != nil || len(rs) != 1 || rs[0].AnyMountNS || rs[0].Note != "flag cleared" {
		t.Fatalf("after update: %+v, %v", rs, err)
	}
	r.AnyMountNS = true
	if err := s.UpdateRule(ctx, r); err != nil {
		t.Fatal(err)
	}
	if rs, err := s.Rules(ctx); err != nil || len(rs) != 1 || !rs[0].AnyMountNS {
		t.Fatalf("any_mount_ns not stored: %+v, %v", rs, err)
	}
}
