package procfs

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
)

func TestRawMatches(t *testing.T) {
	// /proc/net/raw: one socket of protocol 253 bound to 127.0.0.1 and
	// connected to 127.0.0.2, one IPPROTO_RAW socket, one of protocol 47.
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
		want []uint32 // inodes that match
	}{
		{flow.Tuple{Proto: 253, Src: lo1, Dst: lo2}, []uint32{4242, 4343}},
		{flow.Tuple{Proto: 253, Src: lo1, Dst: lo3}, []uint32{4343}},
		{flow.Tuple{Proto: flow.GRE, Src: lo1, Dst: lo2}, []uint32{4343, 4444}},
		{flow.Tuple{Proto: flow.UDPLite, Src: lo3, Dst: lo2}, []uint32{4343}},
	} {
		var got []uint32
		for _, s := range socks {
			if rawMatches(s, tc.tup) {
				got = append(got, s.Inode)
			}
		}
		if len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) || (len(got) > 1 && got[1] != tc.want[1]) {
			t.Errorf("%v: raw sockets %v match, want %v", tc.tup, got, tc.want)
		}
	}
}
