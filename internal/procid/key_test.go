package procid

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/bastion-fw/bastion/internal/flow"
)

func TestSetKey(t *testing.T) {
	tests := []struct {
		name   string
		tup    flow.Tuple
		family uint8
		daddr  string
		dport  uint16
	}{
		{"tcp4", flow.Tuple{Proto: flow.TCP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("1.2.3.4"), SrcPort: 5, DstPort: 443}, afInet, "::ffff:1.2.3.4", 443},
		{"v4-mapped counts as v4", flow.Tuple{Proto: flow.UDP, Src: netip.MustParseAddr("::ffff:10.0.0.1"), Dst: netip.MustParseAddr("::ffff:1.2.3.4"), DstPort: 53}, afInet, "::ffff:1.2.3.4", 53},
		{"tcp6", flow.Tuple{Proto: flow.TCP, Src: netip.MustParseAddr("::1"), Dst: netip.MustParseAddr("2001:db8::1"), DstPort: 80}, afInet6, "2001:db8::1", 80},
		{"icmp dport ignored", flow.Tuple{Proto: flow.ICMP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("1.2.3.4"), SrcPort: 7, DstPort: 9}, afInet, "::ffff:1.2.3.4", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var k procidFlowKey
			setKey(&k, 42, tt.tup)
			if k.Netns != 42 || k.Family != tt.family || k.Proto != uint8(tt.tup.Proto) || k.Sport != tt.tup.SrcPort || k.Dport != tt.dport {
				t.Errorf("key = %+v", k)
			}
			if got := netip.AddrFrom16(k.Daddr); got != netip.MustParseAddr(tt.daddr) {
				t.Errorf("daddr = %v, want %v", got, tt.daddr)
			}
		})
	}
}

func TestSplitArgs(t *testing.T) {
	in := []int8{'a', 0, 'b', 'c', 0, 'd'} // last argument truncated
	if got, want := splitArgs(in), []string{"a", "bc", "d"}; !slices.Equal(got, want) {
		t.Errorf("splitArgs = %q, want %q", got, want)
	}
	if got := splitArgs(nil); got != nil {
		t.Errorf("splitArgs(nil) = %q", got)
	}
	if got := cString([]int8{'x', 'y', 0, 'z'}); got != "xy" {
		t.Errorf("cString = %q", got)
	}
}
