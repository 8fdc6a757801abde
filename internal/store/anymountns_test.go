package store

import (
	"testing"
	"time"

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

func TestHistoryKeepsExeIdentity(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, Options{})
	p := flow.Process{TGID: 7, UID: 1000, Exe: "/usr/bin/curl", ExeIdentity: flow.ExeOtherNS, MntNS: 4026532999}
	if err := s.AppendHistory(ctx, HistoryEntry{Time: time.Now(), Process: p, Action: flow.ActionDeny}); err != nil {
		t.Fatal(err)
	}
	h, err := s.History(ctx, 1)
	if err != nil || len(h) != 1 || h[0].Process.ExeIdentity != flow.ExeOtherNS || h[0].Process.MntNS != p.MntNS {
		t.Fatalf("history read back %+v, %v; want identity %s in mount namespace %d", h, err, p.ExeIdentity, p.MntNS)
	}
}
