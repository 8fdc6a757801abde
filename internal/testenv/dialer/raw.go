package main

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// udpLite sends payload on a UDP-Lite socket (SOCK_DGRAM, IPPROTO_UDPLITE,
// which any user may open) connected to addr, and with reply waits for the
// echo.
func udpLite(v6 bool, addr, localAddr string, payload []byte, reply bool, timeout time.Duration) (string, error) {
	dst, err := netip.ParseAddrPort(addr)
	if err != nil {
		return "", fmt.Errorf("udplite: %w", err)
	}
	fd, err := socket(v6, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE, timeout)
	if err != nil {
		return "", fmt.Errorf("udplite socket: %w", err)
	}
	// Left open until the process exits (after -linger): a fallback that
	// looks for the socket finds it.
	if localAddr != "" {
		la, err := netip.ParseAddrPort(localAddr)
		if err != nil {
			return "", fmt.Errorf("udplite: %w", err)
		}
		if err := unix.Bind(fd, sockaddr(v6, la.Addr(), la.Port())); err != nil {
			return "", fmt.Errorf("udplite bind: %w", err)
		}
	}
	if err := unix.Connect(fd, sockaddr(v6, dst.Addr(), dst.Port())); err != nil {
		return "", fmt.Errorf("udplite connect: %w", err)
	}
	local := localName(fd)
	if _, err := unix.Write(fd, payload); err != nil {
		return local, fmt.Errorf("udplite send: %w", err)
	}
	if !reply {
		return local, nil
	}
	buf := make([]byte, 1500)
	if _, err := unix.Read(fd, buf); err != nil {
		return local, fmt.Errorf("udplite receive: %w", timeoutErr(err))
	}
	return local, nil
}

// rawIP sends one packet of IP protocol proto (network "ip4:N" or "ip6:N")
// from a raw socket (CAP_NET_RAW) connected to addr and bound to localAddr:
// for ICMP (1) and ICMPv6 (58) an ICMP message of type icmpType carrying
// payload, for SCTP (132) an SCTP INIT from port 1 to addr's port carrying
// payload after its chunk, else payload alone.
func rawIP(network, addr, localAddr string, payload []byte, icmpType int, timeout time.Duration) (string, error) {
	fam, num, _ := strings.Cut(network, ":")
	proto, err := strconv.ParseUint(num, 10, 8)
	if err != nil {
		return "", fmt.Errorf("raw: protocol %q: %w", num, err)
	}
	v6 := fam == "ip6"
	host, portStr, hasPort := strings.Cut(addr, "|") // "fd00::2|2905"
	dst, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("raw: %w", err)
	}
	fd, err := socket(v6, unix.SOCK_RAW, int(proto), timeout)
	if err != nil {
		return "", fmt.Errorf("raw socket: %w", err)
	}
	// Left open until the process exits (after -linger): a fallback that
	// looks for the socket finds it.
	if localAddr != "" {
		la, err := netip.ParseAddr(localAddr)
		if err != nil {
			return "", fmt.Errorf("raw: %w", err)
		}
		if err := unix.Bind(fd, sockaddr(v6, la, 0)); err != nil {
			return "", fmt.Errorf("raw bind: %w", err)
		}
	}
	if err := unix.Connect(fd, sockaddr(v6, dst, 0)); err != nil {
		return "", fmt.Errorf("raw connect: %w", err)
	}
	msg := payload
	switch proto {
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		msg = append([]byte{byte(icmpType), 0, 0, 0, 0, 0, 0, 0}, payload...)
		if proto == unix.IPPROTO_ICMP { // the kernel sums ICMPv6
			binary.BigEndian.PutUint16(msg[2:], inetChecksum(msg))
		}
	case unix.IPPROTO_SCTP:
		dport := uint64(0)
		if hasPort {
			if dport, err = strconv.ParseUint(portStr, 10, 16); err != nil {
				return "", fmt.Errorf("raw: port %q: %w", portStr, err)
			}
		}
		msg = make([]byte, 32)
		binary.BigEndian.PutUint16(msg[0:], 1)
		binary.BigEndian.PutUint16(msg[2:], uint16(dport))
		// INIT chunk: type 1, length 20, initiate tag, a_rwnd,
		// streams, initial TSN.
		msg[12], msg[15] = 1, 20
		binary.BigEndian.PutUint32(msg[16:], 0x0badcafe)
		binary.BigEndian.PutUint32(msg[20:], 65536)
		binary.BigEndian.PutUint32(msg[24:], 0x00010001)
		binary.BigEndian.PutUint32(msg[28:], 1)
		msg = append(msg, payload...)
		binary.LittleEndian.PutUint32(msg[8:], crc32.Checksum(msg, crc32.MakeTable(crc32.Castagnoli)))
	}
	local := localName(fd)
	if _, err := unix.Write(fd, msg); err != nil {
		return local, fmt.Errorf("raw send: %w", err)
	}
	return local, nil
}

func socket(v6 bool, typ, proto int, timeout time.Duration) (int, error) {
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, err
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	return fd, nil
}

func sockaddr(v6 bool, a netip.Addr, port uint16) unix.Sockaddr {
	if v6 {
		return &unix.SockaddrInet6{Addr: a.As16(), Port: int(port)}
	}
	return &unix.SockaddrInet4{Addr: a.Unmap().As4(), Port: int(port)}
}

func localName(fd int) string {
	switch a := must(unix.Getsockname(fd)).(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return ""
}

func must(sa unix.Sockaddr, err error) unix.Sockaddr {
	if err != nil {
		return nil
	}
	return sa
}

func timeoutErr(err error) error {
	if err == unix.EAGAIN {
		return fmt.Errorf("%w", errDeadline)
	}
	return err
}

// inetChecksum is the Internet checksum (RFC 1071) of b.
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
