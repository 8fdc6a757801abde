package packet

import (
	"errors"
	"testing"

	"github.com/bastion-fw/bastion/internal/flow"
	pt "github.com/bastion-fw/bastion/internal/packet/packettest"
)

func TestParse(t *testing.T) {
	t4 := func(p flow.Proto, sp, dp uint16) flow.Tuple {
		return flow.Tuple{Proto: p, Src: pt.Src4, Dst: pt.Dst4, SrcPort: sp, DstPort: dp}
	}
	t6 := func(p flow.Proto, sp, dp uint16) flow.Tuple {
		return flow.Tuple{Proto: p, Src: pt.Src6, Dst: pt.Dst6, SrcPort: sp, DstPort: dp}
	}
	syn := pt.IPv4(6, 0x4000, nil, pt.TCP(40000, 443, SYN))
	tests := []struct {
		name    string
		pkt     []byte
		want    flow.Tuple
		flags   TCPFlags
		icmp    [2]uint8
		frag    bool
		off     int // TransportOffset, checked when not 0
		wantErr error
	}{
		{name: "v4 tcp syn", pkt: syn, want: t4(flow.TCP, 40000, 443), flags: SYN},
		{name: "v4 tcp synack with options", pkt: pt.IPv4(6, 0, []byte{1, 1, 1, 0}, pt.TCP(443, 40000, SYN|ACK)), want: t4(flow.TCP, 443, 40000), flags: SYN | ACK},
		{name: "v4 tcp rst fin", pkt: pt.IPv4(6, 0, nil, pt.TCP(1, 2, RST|FIN|ACK)), want: t4(flow.TCP, 1, 2), flags: RST | FIN | ACK},
		{name: "v4 udp", pkt: pt.IPv4(17, 0, nil, pt.UDP(5353, 53)), want: t4(flow.UDP, 5353, 53)},
		{name: "v4 udp with padding", pkt: append(pt.IPv4(17, 0, nil, pt.UDP(1, 2)), pt.Zeros(10)...), want: t4(flow.UDP, 1, 2)},
		{name: "v4 icmp echo request", pkt: pt.IPv4(1, 0, nil, pt.ICMP(8, 0, 0x1234)), want: t4(flow.ICMP, 0x1234, 0), icmp: [2]uint8{8, 0}},
		{name: "v4 icmp echo reply", pkt: pt.IPv4(1, 0, nil, pt.ICMP(0, 0, 7)), want: t4(flow.ICMP, 7, 0), icmp: [2]uint8{0, 0}},
		{name: "v4 icmp unreachable", pkt: pt.IPv4(1, 0, nil, pt.ICMP(3, 3, 99)), want: t4(flow.ICMP, 0, 0), icmp: [2]uint8{3, 3}},
		{name: "v4 unreachable 4 bytes", pkt: pt.IPv4(1, 0, nil, pt.ICMP(3, 1, 0)[:4]), want: t4(flow.ICMP, 0, 0), icmp: [2]uint8{3, 1}},
		{name: "v4 first fragment", pkt: pt.IPv4(17, 0x2000, nil, pt.UDP(9, 10)), want: t4(flow.UDP, 9, 10), frag: true},
		{name: "v4 non-first fragment", pkt: pt.IPv4(17, 0x0003, nil, pt.Zeros(16)), want: t4(flow.UDP, 0, 0), frag: true, wantErr: ErrFragment},
		{name: "v4 gre no ports", pkt: pt.IPv4(47, 0, nil, pt.Zeros(8)), want: t4(47, 0, 0)},
		{name: "v4 icmpv6 inside is opaque", pkt: pt.IPv4(58, 0, nil, pt.ICMP(128, 0, 5)), want: t4(flow.ICMPv6, 0, 0)},
		{name: "v4 headers only (capture cut)", pkt: syn[:40], want: t4(flow.TCP, 40000, 443), flags: SYN},
		{name: "empty", pkt: nil, wantErr: ErrTruncated},
		{name: "v4 short header", pkt: syn[:19], wantErr: ErrTruncated},
		{name: "v4 ihl too small", pkt: func() []byte { b := append([]byte(nil), syn...); b[0] = 0x44; return b }(), wantErr: ErrMalformed},
		{name: "v4 ihl beyond data", pkt: func() []byte { b := append([]byte(nil), syn[:24]...); b[0] = 0x4f; return b }(), wantErr: ErrTruncated},
		{name: "v4 total length below ihl", pkt: func() []byte { b := append([]byte(nil), syn...); b[3] = 10; b[2] = 0; return b }(), wantErr: ErrMalformed},
		{name: "v4 total length cuts tcp", pkt: func() []byte { b := append([]byte(nil), syn...); b[2], b[3] = 0, 30; return b }(), want: t4(flow.TCP, 0, 0), wantErr: ErrTruncated},
		{name: "v4 tcp bad data offset", pkt: func() []byte { b := append([]byte(nil), syn...); b[32] = 0x40; return b }(), want: t4(flow.TCP, 0, 0), wantErr: ErrMalformed},
		{name: "v4 truncated udp", pkt: pt.IPv4(17, 0, nil, pt.UDP(1, 2))[:27], want: t4(flow.UDP, 0, 0), wantErr: ErrTruncated},
		{name: "v4 truncated echo", pkt: pt.IPv4(1, 0, nil, pt.ICMP(8, 0, 1))[:26], want: t4(flow.ICMP, 0, 0), icmp: [2]uint8{8, 0}, wantErr: ErrTruncated},
		{name: "v4 truncated icmp", pkt: pt.IPv4(1, 0, nil, pt.ICMP(8, 0, 1))[:23], want: t4(flow.ICMP, 0, 0), wantErr: ErrTruncated},
		{name: "version 5", pkt: []byte{0x50, 0, 0, 0}, wantErr: ErrUnsupported},
		{name: "v4 udplite ports", pkt: pt.IPv4(136, 0, nil, pt.UDP(4000, 5000)), want: t4(flow.UDPLite, 4000, 5000)},
		{name: "v4 sctp ports", pkt: pt.IPv4(132, 0, nil, append(pt.UDP(2905, 2906), pt.Zeros(4)...)), want: t4(flow.SCTP, 2905, 2906)},
		{name: "v4 dccp ports", pkt: pt.IPv4(33, 0, nil, append(pt.UDP(5001, 5002), pt.Zeros(8)...)), want: t4(flow.DCCP, 5001, 5002)},
		{name: "v4 sctp truncated common header", pkt: pt.IPv4(132, 0, nil, pt.UDP(1, 2)), want: t4(flow.SCTP, 0, 0), wantErr: ErrTruncated},
		{name: "v4 dccp truncated generic header", pkt: pt.IPv4(33, 0, nil, pt.Zeros(11)), want: t4(flow.DCCP, 0, 0), wantErr: ErrTruncated},
		{name: "v4 udplite truncated", pkt: pt.IPv4(136, 0, nil, pt.Zeros(7)), want: t4(flow.UDPLite, 0, 0), wantErr: ErrTruncated},
		{name: "v4 unassigned 253 no ports", pkt: pt.IPv4(253, 0, nil, pt.Zeros(2)), want: t4(253, 0, 0)},
		{name: "v4 protocol 0 no ports", pkt: pt.IPv4(0, 0, nil, nil), want: t4(0, 0, 0)},
		{name: "v4 icmp timestamp no ports", pkt: pt.IPv4(1, 0, nil, pt.ICMP(13, 0, 7)), want: t4(flow.ICMP, 0, 0), icmp: [2]uint8{13, 0}},
		{name: "v4 icmp error no ports", pkt: pt.IPv4(1, 0, nil, pt.ICMP(3, 3, 0)), want: t4(flow.ICMP, 0, 0), icmp: [2]uint8{3, 3}},
		{name: "v6 udplite ports", pkt: pt.IPv6(136, nil, pt.UDP(4000, 5000)), want: t6(flow.UDPLite, 4000, 5000)},
		{name: "v6 sctp after dest opts", pkt: pt.IPv6(132, []pt.Ext{{Type: 60, Body: pt.Zeros(6)}}, append(pt.UDP(9, 10), pt.Zeros(4)...)), want: t6(flow.SCTP, 9, 10), off: 48},
		{name: "v6 unassigned 253 no ports", pkt: pt.IPv6(253, nil, pt.Zeros(8)), want: t6(253, 0, 0)},
		{name: "v6 no next header", pkt: pt.IPv6(59, nil, nil), want: t6(59, 0, 0)},
		{name: "v6 neighbour solicitation no ports", pkt: pt.IPv6(58, nil, pt.ICMP(135, 0, 0)), want: t6(flow.ICMPv6, 0, 0), icmp: [2]uint8{135, 0}},

		{name: "v6 tcp syn", pkt: pt.IPv6(6, nil, pt.TCP(50000, 80, SYN)), want: t6(flow.TCP, 50000, 80), flags: SYN},
		{name: "v6 udp", pkt: pt.IPv6(17, nil, pt.UDP(1000, 53)), want: t6(flow.UDP, 1000, 53)},
		{name: "v6 echo request", pkt: pt.IPv6(58, nil, pt.ICMP(128, 0, 0xbeef)), want: t6(flow.ICMPv6, 0xbeef, 0), icmp: [2]uint8{128, 0}},
		{name: "v6 echo reply", pkt: pt.IPv6(58, nil, pt.ICMP(129, 0, 3)), want: t6(flow.ICMPv6, 3, 0), icmp: [2]uint8{129, 0}},
		{name: "v6 neighbour solicitation", pkt: pt.IPv6(58, nil, pt.ICMP(135, 0, 3)), want: t6(flow.ICMPv6, 0, 0), icmp: [2]uint8{135, 0}},
		{name: "v6 icmp v4 type is opaque", pkt: pt.IPv6(1, nil, pt.ICMP(8, 0, 3)), want: t6(flow.ICMP, 0, 0)},
		{name: "v6 hop-by-hop, routing, dest opts", pkt: pt.IPv6(17, []pt.Ext{{Type: 0, Body: pt.Zeros(6)}, {Type: 43, Body: pt.Zeros(14)}, {Type: 60, Body: pt.Zeros(6)}}, pt.UDP(7, 8)), want: t6(flow.UDP, 7, 8)},
		{name: "v6 ah then tcp", pkt: pt.IPv6(6, []pt.Ext{{Type: 51, Body: pt.Zeros(14)}}, pt.TCP(1, 2, SYN)), want: t6(flow.TCP, 1, 2), flags: SYN, off: 56},
		// As Linux sends a socket's IPV6_HOPOPTS and IPV6_DSTOPTS: the
		// lengths differ, so a wrong hdrlen formula lands mid-option.
		{name: "v6 hop-by-hop 8, dest opts 24, tcp syn", pkt: pt.IPv6(6, []pt.Ext{{Type: 0, Body: pt.Zeros(6)}, {Type: 60, Body: append([]byte{0x1e, 20}, pt.Zeros(20)...)}}, pt.TCP(40000, 443, SYN)), want: t6(flow.TCP, 40000, 443), flags: SYN, off: 72},
		{name: "v6 ah 24 bytes then udp", pkt: pt.IPv6(17, []pt.Ext{{Type: 51, Body: pt.Zeros(22)}}, pt.UDP(7, 8)), want: t6(flow.UDP, 7, 8), off: 64},
		{name: "v6 hop, ah, dest opts, echo", pkt: pt.IPv6(58, []pt.Ext{{Type: 0, Body: pt.Zeros(6)}, {Type: 51, Body: pt.Zeros(14)}, {Type: 60, Body: pt.Zeros(14)}}, pt.ICMP(128, 0, 9)), want: t6(flow.ICMPv6, 9, 0), icmp: [2]uint8{128, 0}, off: 80},
		{name: "v6 eight ext headers (the limit)", pkt: pt.IPv6(17, []pt.Ext{{Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}}, pt.UDP(1, 2)), want: t6(flow.UDP, 1, 2), off: 104},
		{name: "v6 first fragment", pkt: pt.IPv6(17, []pt.Ext{{Type: 44, Body: []byte{0, 1, 0, 0, 0, 1}}}, pt.UDP(7, 8)), want: t6(flow.UDP, 7, 8), frag: true},
		{name: "v6 non-first fragment", pkt: pt.IPv6(17, []pt.Ext{{Type: 44, Body: []byte{0, 0x18, 0, 0, 0, 1}}}, pt.Zeros(8)), want: t6(flow.UDP, 0, 0), frag: true, wantErr: ErrFragment},
		{name: "v6 last fragment after hop-by-hop", pkt: pt.IPv6(6, []pt.Ext{{Type: 0, Body: pt.Zeros(6)}, {Type: 44, Body: []byte{0x05, 0xc8, 0, 0, 0, 1}}}, pt.Zeros(8)), want: t6(flow.TCP, 0, 0), frag: true, wantErr: ErrFragment},
		{name: "v6 first fragment between options", pkt: pt.IPv6(6, []pt.Ext{{Type: 0, Body: pt.Zeros(6)}, {Type: 44, Body: []byte{0, 1, 0, 0, 0, 1}}, {Type: 60, Body: pt.Zeros(6)}}, pt.TCP(5, 6, SYN)), want: t6(flow.TCP, 5, 6), flags: SYN, frag: true, off: 64},
		{name: "v6 no next header", pkt: pt.IPv6(59, nil, nil), want: t6(59, 0, 0)},
		{name: "v6 esp opaque", pkt: pt.IPv6(50, nil, pt.Zeros(8)), want: t6(50, 0, 0)},
		{name: "v6 short header", pkt: pt.IPv6(6, nil, nil)[:39], wantErr: ErrTruncated},
		{name: "v6 truncated ext header", pkt: pt.IPv6(17, []pt.Ext{{Type: 60, Body: pt.Zeros(6)}}, pt.UDP(1, 2))[:44], want: t6(60, 0, 0), wantErr: ErrTruncated},
		{name: "v6 ext length beyond data", pkt: func() []byte {
			b := pt.IPv6(17, []pt.Ext{{Type: 60, Body: pt.Zeros(6)}}, pt.UDP(1, 2))
			b[41] = 200
			return b
		}(), want: t6(60, 0, 0), wantErr: ErrTruncated},
		{name: "v6 hop-by-hop not first", pkt: pt.IPv6(17, []pt.Ext{{Type: 60, Body: pt.Zeros(6)}, {Type: 0, Body: pt.Zeros(6)}}, pt.UDP(1, 2)), want: t6(0, 0, 0), wantErr: ErrMalformed},
		{name: "v6 too many ext headers", pkt: pt.IPv6(17, []pt.Ext{{Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}}, pt.UDP(1, 2)), want: t6(60, 0, 0), wantErr: ErrMalformed},
		{name: "v6 payload length cuts udp", pkt: func() []byte { b := pt.IPv6(17, nil, pt.UDP(1, 2)); b[5] = 4; return b }(), want: t6(flow.UDP, 0, 0), wantErr: ErrTruncated},
		{name: "v6 truncated tcp", pkt: pt.IPv6(6, nil, pt.TCP(1, 2, SYN))[:59], want: t6(flow.TCP, 0, 0), wantErr: ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, info, err := Parse(tt.pkt)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Parse error = %v, want %v", err, tt.wantErr)
				}
				t.Logf("error: %v", err)
			} else if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got != tt.want {
				t.Errorf("tuple = %v, want %v", got, tt.want)
			}
			if info.TCPFlags != tt.flags {
				t.Errorf("flags = %v, want %v", info.TCPFlags, tt.flags)
			}
			if [2]uint8{info.ICMPType, info.ICMPCode} != tt.icmp {
				t.Errorf("icmp type/code = %d/%d, want %v", info.ICMPType, info.ICMPCode, tt.icmp)
			}
			if info.Fragment != tt.frag {
				t.Errorf("fragment = %v, want %v", info.Fragment, tt.frag)
			}
			if tt.off != 0 && info.TransportOffset != tt.off {
				t.Errorf("transport offset = %d, want %d", info.TransportOffset, tt.off)
			}
		})
	}
}

func TestErrorMessages(t *testing.T) {
	tests := []struct {
		pkt  []byte
		want string
	}{
		{pt.IPv4(6, 0, nil, nil)[:12], "packet: truncated IPv4 header: have 12 of 20 bytes"},
		{pt.IPv4(6, 0, nil, pt.TCP(1, 2, SYN))[:30], "packet: truncated TCP header: have 10 of 20 bytes"},
		{pt.IPv6(6, nil, nil)[:10], "packet: truncated IPv6 header: have 10 of 40 bytes"},
		{[]byte{0x10}, "packet: unsupported IP version 1"},
	}
	for _, tt := range tests {
		_, _, err := Parse(tt.pkt)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Parse error = %v, want %q", err, tt.want)
		}
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	for _, pkt := range [][]byte{
		pt.IPv4(6, 0, nil, pt.TCP(1, 2, SYN)),
		pt.IPv6(17, []pt.Ext{{Type: 0, Body: pt.Zeros(6)}, {Type: 44, Body: pt.Zeros(6)}}, pt.UDP(1, 2)),
		pt.IPv6(58, nil, pt.ICMP(128, 0, 1)),
	} {
		if n := testing.AllocsPerRun(100, func() { _, _, _ = Parse(pkt) }); n != 0 {
			t.Errorf("Parse allocates %v times per packet, want 0", n)
		}
	}
}

func TestTCPFlagsString(t *testing.T) {
	for f, want := range map[TCPFlags]string{0: "-", SYN: "S", SYN | ACK: "SA", FIN | RST | ACK: "FRA"} {
		if got := f.String(); got != want {
			t.Errorf("%#x.String() = %q, want %q", uint8(f), got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	seeds := [][]byte{
		pt.IPv4(6, 0x4000, nil, pt.TCP(40000, 443, SYN)),
		pt.IPv4(6, 0, []byte{1, 1, 1, 0}, pt.TCP(1, 2, SYN|ACK)),
		pt.IPv4(17, 0, nil, pt.UDP(5353, 53)),
		pt.IPv4(1, 0, nil, pt.ICMP(8, 0, 0x1234)),
		pt.IPv4(17, 0x2001, nil, pt.Zeros(8)),
		pt.IPv4(136, 0, nil, pt.UDP(4000, 5000)),
		pt.IPv4(132, 0, nil, append(pt.UDP(2905, 2906), pt.Zeros(4)...)),
		pt.IPv4(33, 0, nil, append(pt.UDP(5001, 5002), pt.Zeros(8)...)),
		pt.IPv4(253, 0, nil, pt.Zeros(4)),
		pt.IPv6(136, nil, pt.UDP(1, 2)),
		pt.IPv6(58, nil, pt.ICMP(135, 0, 0)),
		pt.IPv6(6, nil, pt.TCP(50000, 80, SYN)),
		pt.IPv6(17, []pt.Ext{{Type: 0, Body: pt.Zeros(6)}, {Type: 43, Body: pt.Zeros(14)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 44, Body: pt.Zeros(6)}}, pt.UDP(7, 8)),
		pt.IPv6(58, []pt.Ext{{Type: 51, Body: pt.Zeros(14)}}, pt.ICMP(128, 0, 9)),
		pt.IPv6(17, []pt.Ext{{Type: 44, Body: []byte{0, 0x18, 0, 0, 0, 1}}}, pt.Zeros(8)),
		pt.IPv6(6, []pt.Ext{{Type: 0, Body: pt.Zeros(6)}, {Type: 60, Body: append([]byte{0x1e, 20}, pt.Zeros(20)...)}}, pt.TCP(40000, 443, SYN)),
		pt.IPv6(6, []pt.Ext{{Type: 0, Body: pt.Zeros(6)}, {Type: 44, Body: []byte{0, 1, 0, 0, 0, 1}}, {Type: 60, Body: pt.Zeros(6)}}, pt.TCP(5, 6, SYN)),
		pt.IPv6(17, []pt.Ext{{Type: 51, Body: pt.Zeros(22)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}, {Type: 60, Body: pt.Zeros(6)}}, pt.UDP(1, 2)),
		{0x45},
		{},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := append([]byte(nil), b...)
		tup, info, err := Parse(b)
		if string(orig) != string(b) {
			t.Fatal("Parse modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) &&
				!errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrFragment) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			return
		}
		if !tup.Src.IsValid() || !tup.Dst.IsValid() {
			t.Fatalf("success without addresses: %v", tup)
		}
		if tup.Src.Is4() != (b[0]>>4 == 4) {
			t.Fatalf("address family does not match version: %v", tup)
		}
		switch tup.Proto {
		case flow.TCP, flow.UDP, flow.UDPLite, flow.SCTP, flow.DCCP:
			if info.TransportOffset == 0 || info.TransportOffset+8 > len(b) {
				t.Fatalf("transport offset %d out of range for %d bytes", info.TransportOffset, len(b))
			}
		}
		if tup.Proto != flow.TCP && info.TCPFlags != 0 {
			t.Fatalf("TCP flags on %v", tup.Proto)
		}
		// Parsing is a pure function of the bytes.
		tup2, info2, err2 := Parse(b)
		if tup2 != tup || info2 != info || err2 != nil {
			t.Fatal("Parse is not deterministic")
		}
	})
}

func BenchmarkParse(b *testing.B) {
	pkts := map[string][]byte{
		"v4-tcp-syn":   pt.IPv4(6, 0x4000, nil, pt.TCP(40000, 443, SYN)),
		"v6-udp":       pt.IPv6(17, nil, pt.UDP(1000, 53)),
		"v6-ext-chain": pt.IPv6(17, []pt.Ext{{Type: 0, Body: pt.Zeros(6)}, {Type: 43, Body: pt.Zeros(14)}, {Type: 60, Body: pt.Zeros(6)}}, pt.UDP(7, 8)),
		"v4-truncated": pt.IPv4(6, 0, nil, nil),
	}
	for name, pkt := range pkts {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(pkt)))
			for b.Loop() {
				_, _, _ = Parse(pkt)
			}
		})
	}
}
