package policy

import (
	"testing"

	"github.com/bastion-fw/bastion/internal/flow"
)

func TestParseUIDRange(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    UIDRange
		wantErr bool
	}{
		{in: "0", want: UIDRange{0, 0}},
		{in: "1000-1999", want: UIDRange{1000, 1999}},
		{in: " 5 - 7 ", want: UIDRange{5, 7}},
		{in: "0-4294967295", want: UIDRange{0, 4294967295}},
		{in: "7-5", wantErr: true},
		{in: "", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "-5", wantErr: true},
		{in: "4294967296", wantErr: true},
	} {
		got, err := ParseUIDRange(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("ParseUIDRange(%q) = %v, %v; want %v, err=%v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestDefaultPolicy(t *testing.T) {
	p := Default()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	// An unanswered connection fails at once (reset or ICMP unreachable)
	// rather than leaving the program to its own time-out.
	if p.TimeoutAction != flow.ActionReject {
		t.Errorf("default timeout action %v, want reject", p.TimeoutAction)
	}
	for _, tc := range []struct {
		uid  uint32
		mode Mode
		log  bool
	}{
		{0, ModeAllow, true},
		{999, ModeAllow, true},
		{1000, ModeAsk, false},
		{65534, ModeAsk, false},
		{4294967295, ModeAllow, false},
	} {
		r := p.For(tc.uid)
		if r.Mode != tc.mode || r.Log != tc.log {
			t.Errorf("For(%d) = %+v; want mode %v log %v", tc.uid, r, tc.mode, tc.log)
		}
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"ask": ModeAsk, "allow": ModeAllow, "deny": ModeDeny, "drop": ModeDeny, "reject": ModeReject} {
		got, err := ParseMode(in)
		if err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseMode("maybe"); err == nil {
		t.Error("ParseMode(maybe) succeeded")
	}
	if ModeReject.Action() != flow.ActionReject || ModeAsk.Action() != flow.ActionNone {
		t.Error("Mode.Action mapping is wrong")
	}
}
