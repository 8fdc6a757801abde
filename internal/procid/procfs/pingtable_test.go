package procfs

import (
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const pingHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"

func TestParsePingTable(t *testing.T) {
	tests := []struct {
		name    string
		family  uint8
		line    string
		local   string
		remote  string
		uid     uint32
		inode   uint32
		wantErr string
	}{
		{
			name: "v4", family: unix.AF_INET,
			line:  "  0: 0100007F:10E1 0200007F:0000 07 00000000:00000000 00:00000000 00000000  1000        0 12345 2 0000000000000000 0\n",
			local: "127.0.0.1:4321", remote: "127.0.0.2:0", uid: 1000, inode: 12345,
		},
		{
			name: "v6", family: unix.AF_INET6,
			line:  "  1: 00000000000000000000000001000000:10E2 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 0\n",
			local: "[::1]:4322", remote: "[::]:0", uid: 0, inode: 99,
		},
		{name: "short line", family: unix.AF_INET, line: "  0: 0100007F:10E1\n", wantErr: "ping table line"},
		{name: "bad address", family: unix.AF_INET, line: "  0: 01007F:10E1 0200007F:0000 07 0:0 0:0 0 0 0 1 2\n", wantErr: "3 bytes"},
		{name: "bad port", family: unix.AF_INET, line: "  0: 0100007F:1XE1 0200007F:0000 07 0:0 0:0 0 0 0 1 2\n", wantErr: "port"},
		{name: "v6 address in v4 table", family: unix.AF_INET, line: "  1: 00000000000000000000000001000000:10E2 0200007F:0000 07 0:0 0:0 0 0 0 1 2\n", wantErr: "want 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			socks, err := parsePingTable([]byte(pingHeader+tt.line), tt.family)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parsePingTable() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(socks) != 1 {
				t.Fatalf("parsePingTable() = %+v, %v; want one socket", socks, err)
			}
			s := socks[0]
			if s.Local != netip.MustParseAddrPort(tt.local) || s.Remote != netip.MustParseAddrPort(tt.remote) ||
				s.UID != tt.uid || s.Inode != tt.inode || s.Family != tt.family {
				t.Errorf("parsePingTable() = %+v; want local %s remote %s uid %d inode %d", s, tt.local, tt.remote, tt.uid, tt.inode)
			}
		})
	}
}

func FuzzParsePingTable(f *testing.F) {
	f.Add([]byte(pingHeader+"  0: 0100007F:10E1 0200007F:0000 07 00000000:00000000 00:00000000 00000000  1000        0 12345 2 0 0\n"), uint8(unix.AF_INET))
	f.Add([]byte("h\n:0000 :0 0 0 0 0 0 0 0 0\n"), uint8(unix.AF_INET6))
	f.Fuzz(func(t *testing.T, b []byte, family uint8) {
		_, _ = parsePingTable(b, family)
	})
}
