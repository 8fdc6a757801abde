package rules

import (
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/flow"
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
		{"bad protocol", func(p *rulesv1.Rule) { p.Protocol = 77 }, "protocol: unknown value 77"},
		{"other without number", func(p *rulesv1.Rule) { p.Protocol = rulesv1.Protocol_PROTOCOL_OTHER }, "PROTOCOL_OTHER needs a protocol_number"},
		{"number out of range", func(p *rulesv1.Rule) { p.Protocol, p.ProtocolNumber = rulesv1.Protocol_PROTOCOL_OTHER, 256 }, "number 256 out of range"},
		{"number without name", func(p *rulesv1.Rule) { p.ProtocolNumber = 6 }, "number 6 without PROTOCOL_OTHER"},
		{"name and number disagree", func(p *rulesv1.Rule) { p.Protocol, p.ProtocolNumber = rulesv1.Protocol_PROTOCOL_TCP, 17 }, "tcp is number 6, not 17"},
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
	for _, tc := range []struct {
		p    rulesv1.Protocol
		num  uint32
		want flow.Proto
	}{
		{rulesv1.Protocol_PROTOCOL_UDPLITE, 0, flow.UDPLite}, {rulesv1.Protocol_PROTOCOL_UDPLITE, 136, flow.UDPLite},
		{rulesv1.Protocol_PROTOCOL_OTHER, 253, 253}, {rulesv1.Protocol_PROTOCOL_OTHER, 6, flow.TCP},
	} {
		p := valid()
		p.Protocol, p.ProtocolNumber = tc.p, tc.num
		if r, err := FromProto(p); err != nil || r.Proto != tc.want {
			t.Errorf("%v/%d: FromProto = %v, %v; want %v", tc.p, tc.num, r.Proto, err, tc.want)
		}
	}
	if _, err := FromProto(nil); err == nil {
		t.Error("FromProto(nil) succeeded")
	}
}
