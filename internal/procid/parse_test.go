package procid

import (
	"encoding/binary"

	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/packet"
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
	requireRoot(tb)
	spec, err := loadProcid()
	if err != nil {
		tb.Fatal(err)
	}
	var objs struct {
		Prog    *ebpf.Program `ebpf:"nf_parse_test"`
		Results *ebpf.Map     `ebpf:"parse_results"`
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		tb.Fatalf("load nf_parse_test: %v", err) // kernel 6.18: must load
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
	if err != nil {
		return false
	}
	switch tup.Proto {
	case flow.TCP, flow.UDP:
		return true
	case flow.ICMP:
		return tup.Src.Is4() && info.ICMPType == packet.ICMPv4EchoRequest
	case flow.ICMPv6:
		return !tup.Src.Is4() && info.ICMPType == packet.ICMPv6EchoRequest
	}
	return false
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
	pSrc6 = netip.MustParseAddr("2001:db8::1")
	pDst6 = netip.MustParseAddr("2001:db8::2")
	pSrc4 = netip.MustParseAddr("10.0.0.1")
	pDst4 = netip.MustParseAddr("192.0.2.7")
)

// extHdr is one IPv6 extension header: type and body after next/hdrlen.
type extHdr struct {
	typ  uint8
	body []byte
}

func zeros(n int) []byte { return make([]byte, n) }

// v6pkt builds an IPv6 packet from src to dst with the extension headers
// exts (hdrlen filled in) before an upper-layer header proto with payload.
func v6pkt(src, dst netip.Addr, proto uint8, exts []extHdr, payload []byte) []byte {
	b := make([]byte, 40)
	b[0] = 0x60
	b[6] = proto
	if len(exts) > 0 {
		b[6] = exts[0].typ
	}
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	for i, e := range exts {
		next := proto
		if i+1 < len(exts) {
			next = exts[i+1].typ
		}
		h := append([]byte{next, 0}, e.body...)
		switch e.typ {
		case 51: // AH counts 4-byte units, minus 2
			h[1] = byte(len(h)/4 - 2)
		case 44: // fragment: fixed 8 bytes, reserved byte
		default:
			h[1] = byte(len(h)/8 - 1)
		}
		b = append(b, h...)
	}
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[4:6], uint16(len(b)-40))
	return b
}

func v6(proto uint8, exts []extHdr, payload []byte) []byte {
	return v6pkt(pSrc6, pDst6, proto, exts, payload)
}

func v4(proto uint8, fragField uint16, opts, payload []byte) []byte {
	ihl := 20 + len(opts)
	b := make([]byte, ihl, ihl+len(payload))
	b[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(b[6:8], fragField)
	b[8] = 64
	b[9] = proto
	copy(b[12:16], pSrc4.AsSlice())
	copy(b[16:20], pDst4.AsSlice())
	copy(b[20:], opts)
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	return b
}

func tcpHdr(sport, dport uint16, flags packet.TCPFlags) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:2], sport)
	binary.BigEndian.PutUint16(b[2:4], dport)
	b[12] = 5 << 4
	b[13] = byte(flags)
	return b
}

func udpHdr(sport, dport uint16) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[0:2], sport)
	binary.BigEndian.PutUint16(b[2:4], dport)
	binary.BigEndian.PutUint16(b[4:6], 8)
	return b
}

func echoHdr(typ uint8, id uint16) []byte {
	b := make([]byte, 8)
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:6], id)
	return b
}

// frag is a Fragment header body: offset in 8-byte units, more-fragments.
func frag(offset uint16, more bool) extHdr {
	f := offset << 3
	if more {
		f |= 1
	}
	return extHdr{44, []byte{byte(f >> 8), byte(f), 0, 0, 0, 42}}
}

var (
	hbh8   = extHdr{0, zeros(6)}   // Hop-by-Hop, hdrlen 0
	dst8   = extHdr{60, zeros(6)}  // Destination Options, hdrlen 0
	dst24  = extHdr{60, zeros(22)} // hdrlen 2
	rt24   = extHdr{43, zeros(22)} // Routing, hdrlen 2
	ah24   = extHdr{51, zeros(22)} // AH, hdrlen 4: (4+2)*4 = 24 bytes
	dst256 = extHdr{60, zeros(254)}
)

type parseCase struct {
	name  string
	pkt   []byte
	want  flow.Tuple // zero: not recorded
	flags packet.TCPFlags
}

func parseCases() []parseCase {
	t6 := func(p flow.Proto, sp, dp uint16) flow.Tuple {
		return flow.Tuple{Proto: p, Src: pSrc6, Dst: pDst6, SrcPort: sp, DstPort: dp}
	}
	t4 := func(p flow.Proto, sp, dp uint16) flow.Tuple {
		return flow.Tuple{Proto: p, Src: pSrc4, Dst: pDst4, SrcPort: sp, DstPort: dp}
	}
	syn := tcpHdr(40000, 443, packet.SYN)
	nine := make([]extHdr, 9)
	for i := range nine {
		nine[i] = dst8
	}
	mapped := netip.MustParseAddr("::ffff:192.0.2.7")
	badDoff := tcpHdr(1, 2, packet.SYN)
	badDoff[12] = 4 << 4
	return []parseCase{
		{name: "v6 udp", pkt: v6(17, nil, udpHdr(5353, 53)), want: t6(flow.UDP, 5353, 53)},
		{name: "v6 tcp syn", pkt: v6(6, nil, syn), want: t6(flow.TCP, 40000, 443), flags: packet.SYN},
		{name: "v6 echo request", pkt: v6(58, nil, echoHdr(128, 0xbeef)), want: t6(flow.ICMPv6, 0xbeef, 0)},
		{name: "v6 hop-by-hop udp", pkt: v6(17, []extHdr{hbh8}, udpHdr(1000, 53)), want: t6(flow.UDP, 1000, 53)},
		{name: "v6 dest opts 24 tcp", pkt: v6(6, []extHdr{dst24}, syn), want: t6(flow.TCP, 40000, 443), flags: packet.SYN},
		{name: "v6 dest opts 256 udp", pkt: v6(17, []extHdr{dst256}, udpHdr(7, 8)), want: t6(flow.UDP, 7, 8)},
		{name: "v6 hop, routing, dest udp", pkt: v6(17, []extHdr{hbh8, rt24, dst8}, udpHdr(7, 8)), want: t6(flow.UDP, 7, 8)},
		{name: "v6 ah tcp", pkt: v6(6, []extHdr{ah24}, syn), want: t6(flow.TCP, 40000, 443), flags: packet.SYN},
		{name: "v6 hop, ah, dest echo", pkt: v6(58, []extHdr{hbh8, ah24, dst8}, echoHdr(128, 9)), want: t6(flow.ICMPv6, 9, 0)},
		{name: "v6 first fragment udp", pkt: v6(17, []extHdr{frag(0, true)}, udpHdr(7, 8)), want: t6(flow.UDP, 7, 8)},
		{name: "v6 hop, first fragment, dest tcp", pkt: v6(6, []extHdr{hbh8, frag(0, true), dst8}, syn), want: t6(flow.TCP, 40000, 443), flags: packet.SYN},
		{name: "v6 eight extension headers", pkt: v6(17, nine[:8], udpHdr(7, 8)), want: t6(flow.UDP, 7, 8)},
		{name: "v6 v4-mapped destination", pkt: v6pkt(pSrc6, mapped, 17, nil, udpHdr(7, 8)),
			want: flow.Tuple{Proto: flow.UDP, Src: pSrc6, Dst: mapped, SrcPort: 7, DstPort: 8}},
		{name: "v6 tcp synack", pkt: v6(6, []extHdr{dst8}, tcpHdr(443, 40000, packet.SYN|packet.ACK)), want: t6(flow.TCP, 443, 40000), flags: packet.SYN | packet.ACK},

		{name: "v6 non-first fragment", pkt: v6(17, []extHdr{frag(3, true)}, zeros(16))},
		{name: "v6 last fragment", pkt: v6(17, []extHdr{hbh8, frag(185, false)}, zeros(16))},
		{name: "v6 nine extension headers", pkt: v6(17, nine, udpHdr(7, 8))},
		{name: "v6 hop-by-hop not first", pkt: v6(17, []extHdr{dst8, hbh8}, udpHdr(7, 8))},
		{name: "v6 extension header past the end", pkt: func() []byte { b := v6(17, []extHdr{dst8}, udpHdr(1, 2)); b[41] = 200; return b }()},
		{name: "v6 extension header cut", pkt: v6(17, []extHdr{dst24}, nil)[:56]},
		{name: "v6 payload length cuts udp", pkt: func() []byte { b := v6(17, []extHdr{hbh8}, udpHdr(1, 2)); b[5] = 12; return b }()},
		{name: "v6 udp cut", pkt: v6(17, []extHdr{hbh8}, udpHdr(1, 2))[:52]},
		{name: "v6 esp", pkt: v6(50, []extHdr{hbh8}, zeros(16))},
		{name: "v6 no next header", pkt: v6(59, []extHdr{dst8}, nil)},
		{name: "v6 echo reply", pkt: v6(58, []extHdr{dst8}, echoHdr(129, 9))},
		{name: "v6 icmpv4 echo is opaque", pkt: v6(1, nil, echoHdr(8, 9))},
		{name: "v6 tcp data offset 16", pkt: v6(6, []extHdr{dst8}, badDoff)},

		{name: "v4 udp", pkt: v4(17, 0, nil, udpHdr(5353, 53)), want: t4(flow.UDP, 5353, 53)},
		{name: "v4 tcp syn with options", pkt: v4(6, 0x4000, []byte{1, 1, 1, 0}, syn), want: t4(flow.TCP, 40000, 443), flags: packet.SYN},
		{name: "v4 echo", pkt: v4(1, 0, nil, echoHdr(8, 7)), want: t4(flow.ICMP, 7, 0)},
		{name: "v4 first fragment", pkt: v4(17, 0x2000, nil, udpHdr(9, 10)), want: t4(flow.UDP, 9, 10)},
		{name: "v4 non-first fragment", pkt: v4(17, 0x0003, nil, zeros(16))},
		{name: "v4 header length 16", pkt: func() []byte { b := v4(6, 0, nil, syn); b[0] = 0x44; return b }()},
		{name: "v4 total length cuts tcp", pkt: func() []byte { b := v4(6, 0, nil, syn); b[3] = 30; return b }()},
		{name: "v4 icmpv6 echo is opaque", pkt: v4(58, 0, nil, echoHdr(128, 9))},
		{name: "v4 echo reply", pkt: v4(1, 0, nil, echoHdr(0, 7))},
		{name: "version 5", pkt: func() []byte { b := v4(17, 0, nil, udpHdr(1, 2)); b[0] = 0x55; return b }()},
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
