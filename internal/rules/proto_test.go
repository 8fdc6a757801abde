package rules

import (
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

func TestProtoRoundTrip(t *testing.T) {
	for _, r := range sampleRules() {
		p := ToProto(r)
		// Through the wire bytes too.
		b, err := proto.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var back rulesv1.Rule
		if err := proto.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		got, err := FromProto(&back)
		if err != nil {
			t.Fatalf("FromProto(ToProto(%q)): %v", r.ID, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
		}
	}
}

func TestFromProtoRejects(t *testing.T) {
	valid := func() *rulesv1.Rule {
		return &rulesv1.Rule{Action: rulesv1.Action_ACTION_ALLOW, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}
	}
	tests := []struct {
		name    string
		mod     func(*rulesv1.Rule)
		wantErr string
	}{
		{"no action", func(p *rulesv1.Rule) { p.Action = 0 }, "action: unknown value 0"},
		{"bad lifetime", func(p *rulesv1.Rule) { p.Lifetime = 9 }, "lifetime: unknown value 9"},
		{"bad protocol", func(p *rulesv1.Rule) { p.Protocol = 7 }, "protocol: unknown value 7"},
		{"bad dst", func(p *rulesv1.Rule) { p.Dst = "10.0.0.300" }, "dst: "},
		{"port too big", func(p *rulesv1.Rule) { p.DstPortMin, p.DstPortMax = 1, 70000 }, "ports: 1-70000 out of range"},
		{"bad timestamp", func(p *rulesv1.Rule) { p.Created = &timestamppb.Timestamp{Nanos: -1} }, "created: "},
		{"invalid rule", func(p *rulesv1.Rule) { p.Exe = "curl" }, `exe: "curl" is not an absolute path`},
		{"duration without expiry", func(p *rulesv1.Rule) { p.Lifetime = rulesv1.Lifetime_LIFETIME_DURATION }, "expires: a duration rule needs"},
	}
	for _, tt := range tests {
		p := valid()
		tt.mod(p)
		_, err := FromProto(p)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: FromProto error = %v, want it to contain %q", tt.name, err, tt.wantErr)
		}
	}
	if _, err := FromProto(valid()); err != nil {
		t.Errorf("valid: %v", err)
	}
	if _, err := FromProto(nil); err == nil {
		t.Error("FromProto(nil) succeeded")
	}
}
