package agent

import (
	"net/netip"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/sockdiag"
)

func udp(src, dst string) flow.Tuple {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	return flow.Tuple{Proto: flow.UDP, Src: s.Addr(), Dst: d.Addr(), SrcPort: s.Port(), DstPort: d.Port()}
}

func destroyedSock(family uint8, local, remote string) sockdiag.Socket {
	return sockdiag.Socket{Family: family, Protocol: unix.IPPROTO_UDP,
		Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote)}
}

func tuples(fs []sentFlow) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.tuple.String())
	}
	slices.Sort(out)
	return out
}

// The flows a destroyed socket may have sent are found by its local port,
// address and family; the others stay.
func TestSentFlowsTake(t *testing.T) {
	flows := []flow.Tuple{
		udp("10.0.0.1:40000", "10.0.0.2:53"),
		udp("10.0.0.1:40000", "10.0.0.3:53"),
		udp("192.168.1.5:40000", "10.0.0.2:53"),
		udp("[2001:db8::1]:40000", "[2001:db8::2]:53"),
		udp("10.0.0.1:40001", "10.0.0.2:53"),
	}
	for _, tc := range []struct {
		name string
		sock sockdiag.Socket
		want []string
	}{
		{"unconnected v4 wildcard: every v4 flow from the port",
			destroyedSock(unix.AF_INET, "0.0.0.0:40000", "0.0.0.0:0"),
			[]string{"udp 10.0.0.1:40000 -> 10.0.0.2:53", "udp 10.0.0.1:40000 -> 10.0.0.3:53", "udp 192.168.1.5:40000 -> 10.0.0.2:53"}},
		{"unconnected v4 bound: only its address",
			destroyedSock(unix.AF_INET, "192.168.1.5:40000", "0.0.0.0:0"),
			[]string{"udp 192.168.1.5:40000 -> 10.0.0.2:53"}},
		{"dual-stack wildcard: v4 and v6",
			destroyedSock(unix.AF_INET6, "[::]:40000", "[::]:0"),
			[]string{"udp 10.0.0.1:40000 -> 10.0.0.2:53", "udp 10.0.0.1:40000 -> 10.0.0.3:53", "udp 192.168.1.5:40000 -> 10.0.0.2:53", "udp [2001:db8::1]:40000 -> [2001:db8::2]:53"}},
		{"v6 bound", destroyedSock(unix.AF_INET6, "[2001:db8::1]:40000", "[::]:0"),
			[]string{"udp [2001:db8::1]:40000 -> [2001:db8::2]:53"}},
		{"connected: also what it sent before connecting",
			destroyedSock(unix.AF_INET, "10.0.0.1:40000", "10.0.0.2:53"),
			[]string{"udp 10.0.0.1:40000 -> 10.0.0.2:53", "udp 10.0.0.1:40000 -> 10.0.0.3:53"}},
		{"another port", destroyedSock(unix.AF_INET, "0.0.0.0:40002", "0.0.0.0:0"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSentFlows(100)
			for i, f := range flows {
				s.add(f, udpSender{inode: uint64(i + 1)})
			}
			got := s.take(tc.sock)
			if !slices.Equal(tuples(got), tc.want) {
				t.Errorf("take = %v, want %v", tuples(got), tc.want)
			}
			if s.len() != len(flows)-len(tc.want) {
				t.Errorf("%d flows left, want %d", s.len(), len(flows)-len(tc.want))
			}
			if again := s.take(tc.sock); len(again) != 0 {
				t.Errorf("a second take found %v", tuples(again))
			}
		})
	}
}

// The index keeps the latest sender of a tuple, and holds between one and
// two generations of flows.
func TestSentFlowsBoundAndLatestSender(t *testing.T) {
	s := newSentFlows(4)
	a := udp("10.0.0.1:1000", "10.0.0.2:53")
	s.add(a, udpSender{inode: 1})
	s.add(a, udpSender{inode: 2}) // a new socket sent it again, after the old entry went
	if got := s.take(destroyedSock(unix.AF_INET, "0.0.0.0:1000", "0.0.0.0:0")); len(got) != 1 || got[0].sender.inode != 2 {
		t.Fatalf("take = %+v, want one flow of socket 2", got)
	}
	for i := range 20 {
		s.add(udp("10.0.0.1:2000", "10.0.0.2:"+strconv.Itoa(i+1)), udpSender{inode: uint64(i)})
		if n := s.len(); n > 8 {
			t.Fatalf("index holds %d flows, more than two generations of 4", n)
		}
	}
	if s.len() < 4 {
		t.Errorf("index holds %d flows, fewer than one generation", s.len())
	}
	// The newest flows are still there, the oldest are gone.
	got := tuples(s.take(destroyedSock(unix.AF_INET, "0.0.0.0:2000", "0.0.0.0:0")))
	if !slices.Contains(got, "udp 10.0.0.1:2000 -> 10.0.0.2:20") || slices.Contains(got, "udp 10.0.0.1:2000 -> 10.0.0.2:1") {
		t.Errorf("after 20 flows the index holds %v", got)
	}
	if s.dropped == 0 {
		t.Error("no flows counted as dropped")
	}
	// A flow refreshed from the old generation survives the next rotation.
	s = newSentFlows(2)
	old := udp("10.0.0.1:3000", "10.0.0.2:53")
	s.add(old, udpSender{inode: 1})
	s.add(udp("10.0.0.1:3001", "10.0.0.2:53"), udpSender{inode: 2}) // rotates: both old
	s.add(old, udpSender{inode: 3})                                 // back into cur
	s.add(udp("10.0.0.1:3002", "10.0.0.2:53"), udpSender{inode: 4}) // rotates again
	if got := s.take(destroyedSock(unix.AF_INET, "0.0.0.0:3000", "0.0.0.0:0")); len(got) != 1 || got[0].sender.inode != 3 {
		t.Errorf("refreshed flow: take = %+v, want it with socket 3", got)
	}
}

func TestSentFlowsDrain(t *testing.T) {
	s := newSentFlows(2)
	for i := range 3 {
		s.add(udp("10.0.0.1:4000", "10.0.0.2:"+strconv.Itoa(i+1)), udpSender{inode: 7})
	}
	if got := s.drain(); len(got) != 3 || s.len() != 0 {
		t.Errorf("drain = %d flows, %d left; want 3 and 0", len(got), s.len())
	}
}

func TestSentIgnoresOtherProtocolsAndNilGuard(t *testing.T) {
	var none *udpReuseGuard
	none.Sent(udp("10.0.0.1:1", "10.0.0.2:2"), flow.Process{Socket: 1}) // no guard: nothing happens
	g := &udpReuseGuard{sent: newSentFlows(10)}
	g.Sent(tcp("10.0.0.2", 1, 2), flow.Process{Socket: 1})
	g.Sent(udp("10.0.0.1:1", "10.0.0.2:2"), flow.Process{Socket: 1})
	if n := g.sent.len(); n != 1 {
		t.Errorf("index holds %d flows, want only the UDP one", n)
	}
}
