package procid

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/kernelfeature"
	"github.com/bastion-fw/bastion/internal/packet"
	pt "github.com/bastion-fw/bastion/internal/packet/packettest"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// The kernel-side packet parser (parse_packet in bpf/procid.c) and the
// agent's (internal/packet) must agree on the tuple of every packet: the
// agent looks up the key that setKey builds from packet.Parse's tuple, and a
// disagreement means a miss and the slow /proc fallback, or worse, another
// flow's entry. These tests run the real BPF parser through nf_parse_test
// and BPF_PROG_TEST_RUN on crafted packets, extension-header chains that no
// ordinary socket sends included, and hold it against packet.Parse.

// parseProg runs nf_parse_test.
type parseProg struct {
	prog    *ebpf.Program
	results *ebpf.Map
}

func loadParseProg(tb testing.TB) *parseProg {
	tb.Helper()
	testenv.RequireKernelFeature(tb, kernelfeature.BTF, kernelfeature.NetfilterLink)
	spec, err := loadProcid()
	if err != nil {
		tb.Fatal(err)
	}
	var objs struct {
		Prog    *ebpf.Program `ebpf:"nf_parse_test"`
		Results *ebpf.Map     `ebpf:"parse_results"`
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		tb.Fatalf("load nf_parse_test: %v", err) // the kernel offers netfilter programs: must load
	}
	tb.Cleanup(func() { objs.Prog.Close(); objs.Results.Close() })
	return &parseProg{prog: objs.Prog, results: objs.Results}
}

// run parses pkt in the kernel. BPF_PROG_TEST_RUN refuses packets shorter
// than an IPv4 header or longer than about a page; ok is false for them.
func (p *parseProg) run(tb testing.TB, pkt []byte) (r procidParseResult, ok bool) {
	tb.Helper()
	if len(pkt) < 20 || len(pkt) > 2048 {
		return r, false
	}
	if err := p.results.Update(uint32(0), &r, ebpf.UpdateAny); err != nil {
		tb.Fatal(err)
	}
	if _, err := p.prog.Run(&ebpf.RunOptions{Data: pkt}); err != nil {
		tb.Fatalf("run nf_parse_test on % x: %v", pkt, err)
	}
	if err := p.results.Lookup(uint32(0), &r); err != nil {
		tb.Fatal(err)
	}
	return r, true
}

// recordable reports whether nf_local_out records a flow for a packet that
// packet.Parse read as tup and info (before its first-packet filters).
func recordable(tup flow.Tuple, info packet.Info, err error) bool {
	return err == nil
}

// checkAgree fails tb unless the kernel parser and packet.Parse agree on
// pkt: both record it under the same key, or neither does.
func checkAgree(tb testing.TB, p *parseProg, pkt []byte) (recorded bool) {
	tb.Helper()
	r, ok := p.run(tb, pkt)
	if !ok {
		return false
	}
	tup, info, err := packet.Parse(pkt)
	want := recordable(tup, info, err)
	if got := r.Ret == 0; got != want {
		tb.Fatalf("packet % x: kernel parser records it: %v; packet.Parse: %v, %+v, %v", pkt, got, tup, info, err)
	}
	if !want {
		return false
	}
	var k procidFlowKey
	setKey(&k, 0, tup)
	if r.Key != k {
		tb.Fatalf("packet % x: kernel key %+v, agent key %+v (tuple %v)", pkt, r.Key, k, tup)
	}
	if tup.Proto == flow.TCP && r.TcpFlags != uint8(info.TCPFlags) {
		tb.Fatalf("packet % x: kernel TCP flags %#x, packet.Parse %v", pkt, r.TcpFlags, info.TCPFlags)
	}
	return true
}

var (
	hbh8   = pt.Ext{Type: 0, Body: pt.Zeros(6)}   // Hop-by-Hop, hdrlen 0
	dst8   = pt.Ext{Type: 60, Body: pt.Zeros(6)}  // Destination Options, hdrlen 0
	dst24  = pt.Ext{Type: 60, Body: pt.Zeros(22)} // hdrlen 2
	rt24   = pt.Ext{Type: 43, Body: pt.Zeros(22)} // Routing, hdrlen 2
	ah24   = pt.Ext{Type: 51, Body: pt.Zeros(22)} // AH, hdrlen 4: (4+2)*4 = 24 bytes
	dst256 = pt.Ext{Type: 60, Body: pt.Zeros(254)}
)

type parseCase struct {
	name  string
	pkt   []byte
	want  flow.Tuple // zero: not recorded
	flags packet.TCPFlags
}

func parseCases() []parseCase {
	t6 := func(p flow.Proto, sp, dp uint16) flow.Tuple {
		return flow.Tuple{Proto: p, Src: pt.Src6, Dst: pt.Dst6, SrcPort: sp, DstPort: dp}
	}
	t4 := func(p flow.Proto, sp, dp uint16) flow.Tuple {
		return flow.Tuple{Proto: p, Src: pt.Src4, Dst: pt.Dst4, SrcPort: sp, DstPort: dp}
	}
	syn := pt.TCP(40000, 443, packet.SYN)
	nine := make([]pt.Ext, 9)
	for i := range nine {
		nine[i] = dst8
	}
	mapped := netip.MustParseAddr("::ffff:192.0.2.7")
	badDoff := pt.TCP(1, 2, packet.SYN)
	badDoff[12] = 4 << 4
	return []parseCase{
		{name: "v6 udp", pkt: pt.IPv6(17, nil, pt.UDP(5353, 53)), want: t6(flow.UDP, 5353, 53)},
		{name: "v6 tcp syn", pkt: pt.IPv6(6, nil, syn), want: t6(flow.TCP, 40000, 443), flags: packet.SYN},
		{name: "v6 echo request", pkt: pt.IPv6(58, nil, pt.ICMP(128, 0, 0xbeef)), want: t6(flow.ICMPv6, 0xbeef, 0)},
		{name: "v6 hop-by-hop udp", pkt: pt.IPv6(17, []pt.Ext{hbh8}, pt.UDP(1000, 53)), want: t6(flow.UDP, 1000, 53)},
		{name: "v6 dest opts 24 tcp", pkt: pt.IPv6(6, []pt.Ext{dst24}, syn), want: t6(flow.TCP, 40000, 443), flags: packet.SYN},
		{name: "v6 dest opts 256 udp", pkt: pt.IPv6(17, []pt.Ext{dst256}, pt.UDP(7, 8)), want: t6(flow.UDP, 7, 8)},
		{name: "v6 hop, routing, dest udp", pkt: pt.IPv6(17, []pt.Ext{hbh8, rt24, dst8}, pt.UDP(7, 8)), want: t6(flow.UDP, 7, 8)},
		{name: "v6 ah tcp", pkt: pt.IPv6(6, []pt.Ext{ah24}, syn), want: t6(flow.TCP, 40000, 443), flags: packet.SYN},
		{name: "v6 hop, ah, dest echo", pkt: pt.IPv6(58, []pt.Ext{hbh8, ah24, dst8}, pt.ICMP(128, 0, 9)), want: t6(flow.ICMPv6, 9, 0)},
		{name: "v6 first fragment udp", pkt: pt.IPv6(17, []pt.Ext{pt.Fragment(0, true)}, pt.UDP(7, 8)), want: t6(flow.UDP, 7, 8)},
		{name: "v6 hop, first fragment, dest tcp", pkt: pt.IPv6(6, []pt.Ext{hbh8, pt.Fragment(0, true), dst8}, syn), want: t6(flow.TCP, 40000, 443), flags: packet.SYN},
		{name: "v6 eight extension headers", pkt: pt.IPv6(17, nine[:8], pt.UDP(7, 8)), want: t6(flow.UDP, 7, 8)},
		{name: "v6 v4-mapped destination", pkt: pt.IPv6From(pt.Src6, mapped, 17, nil, pt.UDP(7, 8)),
			want: flow.Tuple{Proto: flow.UDP, Src: pt.Src6, Dst: mapped, SrcPort: 7, DstPort: 8}},
		{name: "v6 tcp synack", pkt: pt.IPv6(6, []pt.Ext{dst8}, pt.TCP(443, 40000, packet.SYN|packet.ACK)), want: t6(flow.TCP, 443, 40000), flags: packet.SYN | packet.ACK},

		{name: "v6 non-first fragment", pkt: pt.IPv6(17, []pt.Ext{pt.Fragment(3, true)}, pt.Zeros(16))},
		{name: "v6 last fragment", pkt: pt.IPv6(17, []pt.Ext{hbh8, pt.Fragment(185, false)}, pt.Zeros(16))},
		{name: "v6 nine extension headers", pkt: pt.IPv6(17, nine, pt.UDP(7, 8))},
		{name: "v6 hop-by-hop not first", pkt: pt.IPv6(17, []pt.Ext{dst8, hbh8}, pt.UDP(7, 8))},
		{name: "v6 extension header past the end", pkt: func() []byte { b := pt.IPv6(17, []pt.Ext{dst8}, pt.UDP(1, 2)); b[41] = 200; return b }()},
		{name: "v6 extension header cut", pkt: pt.IPv6(17, []pt.Ext{dst24}, nil)[:56]},
		{name: "v6 payload length cuts udp", pkt: func() []byte { b := pt.IPv6(17, []pt.Ext{hbh8}, pt.UDP(1, 2)); b[5] = 12; return b }()},
		{name: "v6 udp cut", pkt: pt.IPv6(17, []pt.Ext{hbh8}, pt.UDP(1, 2))[:52]},
		{name: "v6 esp", pkt: pt.IPv6(50, []pt.Ext{hbh8}, pt.Zeros(16)), want: t6(flow.ESP, 0, 0)},
		{name: "v6 no next header", pkt: pt.IPv6(59, []pt.Ext{dst8}, nil), want: t6(59, 0, 0)},
		{name: "v6 echo reply", pkt: pt.IPv6(58, []pt.Ext{dst8}, pt.ICMP(129, 0, 9)), want: t6(flow.ICMPv6, 9, 0)},
		{name: "v6 icmpv4 echo is opaque", pkt: pt.IPv6(1, nil, pt.ICMP(8, 0, 9)), want: t6(flow.ICMP, 0, 0)},
		{name: "v6 tcp data offset 16", pkt: pt.IPv6(6, []pt.Ext{dst8}, badDoff)},

		{name: "v4 udp", pkt: pt.IPv4(17, 0, nil, pt.UDP(5353, 53)), want: t4(flow.UDP, 5353, 53)},
		{name: "v4 tcp syn with options", pkt: pt.IPv4(6, 0x4000, []byte{1, 1, 1, 0}, syn), want: t4(flow.TCP, 40000, 443), flags: packet.SYN},
		{name: "v4 echo", pkt: pt.IPv4(1, 0, nil, pt.ICMP(8, 0, 7)), want: t4(flow.ICMP, 7, 0)},
		{name: "v4 first fragment", pkt: pt.IPv4(17, 0x2000, nil, pt.UDP(9, 10)), want: t4(flow.UDP, 9, 10)},
		{name: "v4 non-first fragment", pkt: pt.IPv4(17, 0x0003, nil, pt.Zeros(16))},
		{name: "v4 header length 16", pkt: func() []byte { b := pt.IPv4(6, 0, nil, syn); b[0] = 0x44; return b }()},
		{name: "v4 total length cuts tcp", pkt: func() []byte { b := pt.IPv4(6, 0, nil, syn); b[3] = 30; return b }()},
		{name: "v4 icmpv6 echo is opaque", pkt: pt.IPv4(58, 0, nil, pt.ICMP(128, 0, 9)), want: t4(flow.ICMPv6, 0, 0)},
		{name: "v4 echo reply", pkt: pt.IPv4(1, 0, nil, pt.ICMP(0, 0, 7)), want: t4(flow.ICMP, 7, 0)},
		{name: "v4 udplite", pkt: pt.IPv4(136, 0, nil, pt.UDP(4000, 5000)), want: t4(flow.UDPLite, 4000, 5000)},
		{name: "v4 sctp", pkt: pt.IPv4(132, 0, nil, append(pt.UDP(2905, 2906), pt.Zeros(4)...)), want: t4(flow.SCTP, 2905, 2906)},
		{name: "v4 dccp", pkt: pt.IPv4(33, 0, nil, append(pt.UDP(5001, 5002), pt.Zeros(8)...)), want: t4(flow.DCCP, 5001, 5002)},
		{name: "v4 gre", pkt: pt.IPv4(47, 0, nil, pt.Zeros(4)), want: t4(flow.GRE, 0, 0)},
		{name: "v4 unassigned 253", pkt: pt.IPv4(253, 0, nil, nil), want: t4(253, 0, 0)},
		{name: "v4 icmp timestamp", pkt: pt.IPv4(1, 0, nil, pt.ICMP(13, 0, 7)), want: t4(flow.ICMP, 0, 0)},
		{name: "v4 icmp port unreachable", pkt: pt.IPv4(1, 0, nil, pt.ICMP(3, 3, 0)[:4]), want: t4(flow.ICMP, 0, 0)},
		{name: "v4 icmp cut", pkt: pt.IPv4(1, 0, nil, pt.ICMP(3, 3, 0)[:3])},
		{name: "v4 echo cut", pkt: pt.IPv4(1, 0, nil, pt.ICMP(8, 0, 0)[:6])},
		{name: "v4 sctp cut", pkt: pt.IPv4(132, 0, nil, pt.UDP(2905, 2906))},
		{name: "v4 dccp cut", pkt: pt.IPv4(33, 0, nil, pt.Zeros(11))},
		{name: "v4 udplite cut", pkt: pt.IPv4(136, 0, nil, pt.Zeros(7))},
		{name: "v6 udplite after hop-by-hop", pkt: pt.IPv6(136, []pt.Ext{hbh8}, pt.UDP(7, 8)), want: t6(flow.UDPLite, 7, 8)},
		{name: "v6 sctp", pkt: pt.IPv6(132, nil, append(pt.UDP(9, 10), pt.Zeros(4)...)), want: t6(flow.SCTP, 9, 10)},
		{name: "v6 unassigned 253", pkt: pt.IPv6(253, []pt.Ext{dst8}, pt.Zeros(4)), want: t6(253, 0, 0)},
		{name: "v6 neighbour solicitation", pkt: pt.IPv6(58, nil, pt.ICMP(135, 0, 0)), want: t6(flow.ICMPv6, 0, 0)},
		{name: "version 5", pkt: func() []byte { b := pt.IPv4(17, 0, nil, pt.UDP(1, 2)); b[0] = 0x55; return b }()},
	}
}

func TestKernelParserAgrees(t *testing.T) {
	p := loadParseProg(t)
	for _, c := range parseCases() {
		t.Run(c.name, func(t *testing.T) {
			r, _ := p.run(t, c.pkt)
			if got, want := r.Ret == 0, c.want != (flow.Tuple{}); got != want {
				t.Fatalf("kernel parser records it: %v, want %v (key %+v)", got, want, r.Key)
			}
			if c.want != (flow.Tuple{}) {
				var k procidFlowKey
				setKey(&k, 0, c.want)
				if r.Key != k {
					t.Errorf("kernel key %+v, want %+v", r.Key, k)
				}
				if r.TcpFlags != uint8(c.flags) {
					t.Errorf("kernel TCP flags %#x, want %v", r.TcpFlags, c.flags)
				}
			}
			checkAgree(t, p, c.pkt)
		})
	}
}

// FuzzKernelParserAgrees holds the kernel parser against packet.Parse on
// arbitrary bytes. `go test` runs the seeds (as root); fuzz with
// `go test -fuzz=FuzzKernelParserAgrees ./internal/procid/` as root.
func FuzzKernelParserAgrees(f *testing.F) {
	for _, c := range parseCases() {
		f.Add(c.pkt)
	}
	p := loadParseProg(f)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		checkAgree(t, p, pkt)
	})
}
