package procfs

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseDiagMsg(t *testing.T) {
	// struct inet_diag_msg for a UDP socket 10.0.0.1:5353 -> 10.0.0.2:53.
	b := make([]byte, diagMsgLen)
	b[0] = unix.AF_INET
	b[1] = 1 // TCP_ESTABLISHED: connected
	binary.BigEndian.PutUint16(b[4:], 5353)
	binary.BigEndian.PutUint16(b[6:], 53)
	copy(b[8:], []byte{10, 0, 0, 1})
	copy(b[24:], []byte{10, 0, 0, 2})
	// idiag_cookie[0] is the low half.
	binary.NativeEndian.PutUint32(b[44:], 0x89abcdef)
	binary.NativeEndian.PutUint32(b[48:], 0x01234567)
	binary.NativeEndian.PutUint32(b[64:], 1000)
	binary.NativeEndian.PutUint32(b[68:], 424242)
	s, err := parseDiagMsg(b)
	if err != nil {
		t.Fatal(err)
	}
	want := diagSock{
		family: unix.AF_INET, state: 1,
		local:  netip.MustParseAddrPort("10.0.0.1:5353"),
		remote: netip.MustParseAddrPort("10.0.0.2:53"),
		uid:    1000, inode: 424242, cookie: 0x0123456789abcdef,
	}
	if s != want {
		t.Errorf("parseDiagMsg = %+v, want %+v", s, want)
	}
}
