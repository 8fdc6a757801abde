package procfs

import (
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
)

func TestRawScore(t *testing.T) {
	// /proc/net/raw: one socket of protocol 253 bound to 127.0.0.1 and
	// connected to 127.0.0.2, one IPPROTO_RAW socket, one of protocol 47,
	// both unconnected: never taken (a listener, or what is left when
	// the sender has closed its socket).
	table := []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 0100007F:00FD 0200007F:0000 01 00000000:00000000 00:00000000 00000000  1000        0 4242 2 0000000000000000 0
  2: 00000000:00FF 00000000:0000 07 00000000:00000000 00:00000000 00000000  1001        0 4343 2 0000000000000000 0
  3: 00000000:002F 00000000:0000 07 00000000:00000000 00:00000000 00000000  1001        0 4444 2 0000000000000000 0
`)
	socks, err := parsePingTable(table, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	lo1, lo2, lo3 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")
	for _, tc := range []struct {
		tup  flow.Tuple
		want []int // rawScore of each socket
	}{
		{flow.Tuple{Proto: 253, Src: lo1, Dst: lo2}, []int{2, -1, -1}},
		{flow.Tuple{Proto: 253, Src: lo1, Dst: lo3}, []int{-1, -1, -1}},
		{flow.Tuple{Proto: flow.GRE, Src: lo1, Dst: lo2}, []int{-1, -1, -1}},
		{flow.Tuple{Proto: flow.UDPLite, Src: lo3, Dst: lo2}, []int{-1, -1, -1}},
	} {
		var got []int
		for _, s := range socks {
			got = append(got, rawScore(s, tc.tup))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v: raw socket scores %v, want %v", tc.tup, got, tc.want)
		}
	}
}
