package apiconv

import (
	"net/netip"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/flow"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

func TestRoundTrips(t *testing.T) {
	for _, a := range []flow.Action{flow.ActionNone, flow.ActionAllow, flow.ActionDeny, flow.ActionReject} {
		if got := Action(ActionProto(a)); got != a {
			t.Errorf("action %v round-trips to %v", a, got)
		}
	}
	for p := range 256 {
		p := flow.Proto(p)
		if got := Proto(ProtoProto(p)); got != p {
			t.Errorf("proto %v round-trips to %v", p, got)
		}
	}
	// A grpcurl user sees a name where the API has one, and always the
	// number.
	for _, tc := range []struct {
		p    flow.Proto
		name agentv1.Protocol
	}{
		{flow.UDPLite, agentv1.Protocol_PROTOCOL_UDPLITE}, {flow.SCTP, agentv1.Protocol_PROTOCOL_SCTP},
		{flow.DCCP, agentv1.Protocol_PROTOCOL_DCCP}, {flow.GRE, agentv1.Protocol_PROTOCOL_GRE},
		{253, agentv1.Protocol_PROTOCOL_OTHER}, {flow.TCP, agentv1.Protocol_PROTOCOL_TCP},
	} {
		f := FlowProto(flow.Tuple{Proto: tc.p})
		if f.GetProtocol() != tc.name || f.GetProtocolNumber() != uint32(tc.p) || FlowProtoName(f) != tc.p.String() {
			t.Errorf("%v: flow says %v, number %d, name %q", tc.p, f.GetProtocol(), f.GetProtocolNumber(), FlowProtoName(f))
		}
	}
	// Without a number (an older client), the name decides.
	if got := Proto(agentv1.Protocol_PROTOCOL_UDPLITE, 0); got != flow.UDPLite {
		t.Errorf("PROTOCOL_UDPLITE without a number reads as %v", got)
	}
	for _, tu := range []flow.Tuple{
		{Proto: flow.TCP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("192.0.2.1"), SrcPort: 40000, DstPort: 443},
		{Proto: flow.UDP, Src: netip.MustParseAddr("fe80::1"), Dst: netip.MustParseAddr("2001:db8::1"), SrcPort: 5353, DstPort: 53},
		{Proto: flow.ICMP, Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.2"), SrcPort: 7},
		{Proto: flow.UDPLite, Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.2"), SrcPort: 7, DstPort: 9},
		{Proto: 253, Src: netip.MustParseAddr("::1"), Dst: netip.MustParseAddr("::2")},
	} {
		if got := Tuple(FlowProto(tu)); got != tu {
			t.Errorf("tuple %v round-trips to %v", tu, got)
		}
	}
	p := flow.Process{PID: 1, TGID: 2, PPID: 3, UID: 4, GID: 5, Comm: "c", Exe: "/e", Args: []string{"a", "b"}, Source: "s"}
	if got := Process(ProcessProto(p)); !reflect.DeepEqual(got, p) {
		t.Errorf("process round-trips to %+v", got)
	}
}

func TestHostileValuesBecomeZero(t *testing.T) {
	got := Tuple(&agentv1.Flow{Protocol: 99, ProtocolNumber: 256, SrcIp: "nope", DstIp: "::ffff:192.0.2.1", SrcPort: 1 << 20, DstPort: 80})
	want := flow.Tuple{Dst: netip.MustParseAddr("192.0.2.1"), DstPort: 80}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if f := FlowProto(flow.Tuple{}); f.GetIpVersion() != 0 || f.GetDstIp() != "" {
		t.Fatalf("zero tuple gives %+v", f)
	}
	if Process(nil).Known() || Tuple(nil) != (flow.Tuple{}) {
		t.Fatal("nil messages must convert to zero values")
	}
}

func TestHost(t *testing.T) {
	for in, want := range map[string]string{
		"www.Example.TEST.": "www.example.test", "": "", "a b": "", "evil\x1b[31m.test": "", "x..y": "",
	} {
		if got := Host(in); got != want {
			t.Errorf("Host(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProcessProtoIsValidUTF8(t *testing.T) {
	args := []string{"ok", "bad\xffbyte", "\xc0"}
	p := ProcessProto(flow.Process{Comm: "c\xfe", Exe: "/tmp/\xff/x", Args: args})
	if _, err := proto.Marshal(p); err != nil {
		t.Fatalf("marshal a process with invalid UTF-8: %v", err)
	}
	if p.GetExe() != "/tmp/\ufffd/x" || p.GetComm() != "c\ufffd" || p.GetArgs()[1] != "bad\ufffdbyte" || p.GetArgs()[2] != "\ufffd" {
		t.Errorf("got exe %q comm %q args %q", p.GetExe(), p.GetComm(), p.GetArgs())
	}
	if args[1] != "bad\xffbyte" {
		t.Error("ProcessProto modified the caller's args")
	}
	valid := []string{"curl", "-s"}
	if got := ProcessProto(flow.Process{Args: valid}).GetArgs(); &got[0] != &valid[0] {
		t.Error("valid args were copied")
	}
}
