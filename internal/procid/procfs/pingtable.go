package procfs

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/sockdiag"
)

// maxPingTableBytes bounds a read of /proc/net/icmp{,6}: ~150 bytes a socket.
const maxPingTableBytes = 4 << 20

// parsePingTable parses /proc/net/icmp or /proc/net/icmp6, the kernel's
// list of ping sockets, which sock_diag does not report. Its format is that
// of /proc/net/udp:
//
//	sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
//
// Addresses are the in-memory bytes of each 32-bit word printed as a
// host-order hex number; the port (the echo identifier) is host order.
func parsePingTable(b []byte, family uint8) ([]sockdiag.Socket, error) {
	var socks []sockdiag.Socket
	first := true
	for line := range bytes.Lines(b) {
		if first { // header
			first = false
			continue
		}
		f := bytes.Fields(line)
		if len(f) < 10 {
			return nil, fmt.Errorf("%w: ping table line %q", errMalformed, line)
		}
		local, err := parseHexAddrPort(string(f[1]), family)
		if err != nil {
			return nil, err
		}
		remote, err := parseHexAddrPort(string(f[2]), family)
		if err != nil {
			return nil, err
		}
		state, err := strconv.ParseUint(string(f[3]), 16, 8)
		if err != nil {
			return nil, fmt.Errorf("%w: ping table state: %v", errMalformed, err)
		}
		uid, err := strconv.ParseUint(string(f[7]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: ping table uid: %v", errMalformed, err)
		}
		inode, err := strconv.ParseUint(string(f[9]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: ping table inode: %v", errMalformed, err)
		}
		socks = append(socks, sockdiag.Socket{
			Family: family, State: uint8(state),
			Local: local, Remote: remote,
			UID: uint32(uid), Inode: uint32(inode),
		})
	}
	return socks, nil
}

// parseHexAddrPort parses "0100007F:10E1" (IPv4) or 32 hex digits and a port
// (IPv6), unmapping v4-mapped addresses.
func parseHexAddrPort(s string, family uint8) (netip.AddrPort, error) {
	i := len(s) - 5
	if i < 0 || s[i] != ':' {
		return netip.AddrPort{}, fmt.Errorf("%w: address %q", errMalformed, s)
	}
	port, err := strconv.ParseUint(s[i+1:], 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: port in %q: %v", errMalformed, s, err)
	}
	raw, err := hex.DecodeString(s[:i])
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: address %q: %v", errMalformed, s, err)
	}
	want := 4
	if family == unix.AF_INET6 {
		want = 16
	}
	if len(raw) != want {
		return netip.AddrPort{}, fmt.Errorf("%w: address %q has %d bytes, want %d", errMalformed, s, len(raw), want)
	}
	// Each word was printed as a host-order number: undo that.
	var a [16]byte
	for w := 0; w < want; w += 4 {
		binary.NativeEndian.PutUint32(a[w:], binary.BigEndian.Uint32(raw[w:]))
	}
	addr := netip.AddrFrom16(a)
	if family == unix.AF_INET {
		addr = netip.AddrFrom4([4]byte(a[:4]))
	}
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}
