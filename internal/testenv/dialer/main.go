// Command dialer opens one connection (or sends one datagram or one ping),
// prints the outcome as one JSON line and exits at once. End-to-end tests use
// it as "a process that exits right after connect()": by the time the
// firewall looks the process up, it may already be gone.
//
// Usage: dialer -net tcp4|tcp6|udp4|udp6|ping4|ping6|udplite4|udplite6|ip4:N|ip6:N -addr HOST[:PORT]
// [-reply] [-timeout 2s] [-local HOST:PORT] [-sendto] [-payload TEXT] [-icmp-type T] [-linger D]
//
// udplite4/6 send -payload on a UDP-Lite socket. ip4:N and ip6:N send one
// packet of IP protocol N from a raw socket (CAP_NET_RAW) bound to -local
// (an address): an ICMP message of type -icmp-type for 1 and 58, an SCTP
// INIT to the port after "|" in -addr ("HOST|PORT") for 132, else -payload
// as it is.
//
// -local binds the socket to that source before connecting. -sendto (udp4,
// udp6 only) sends from one unconnected socket with sendto(2) instead of
// connecting it; -addr may then list several destinations, comma-separated,
// each sent one datagram in turn (and, with -reply, each echo awaited).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// result is the JSON line printed; testenv.DialResult mirrors it.
type result struct {
	OK        bool   `json:"ok"`
	Kind      string `json:"kind,omitempty"` // refused, timeout, permission, unreachable, other
	Error     string `json:"error,omitempty"`
	ElapsedUS int64  `json:"elapsed_us"`
	PID       int    `json:"pid"`
	UID       int    `json:"uid"`
	Local     string `json:"local,omitempty"`
	Network   string `json:"network"`
	Addr      string `json:"addr"`
}

func main() {
	network := flag.String("net", "tcp4", "tcp4, tcp6, udp4, udp6, ping4 or ping6")
	addr := flag.String("addr", "127.0.0.1:80", "destination (host:port; host for ping)")
	reply := flag.Bool("reply", false, "send a payload and wait for the echo (always for ping)")
	timeout := flag.Duration("timeout", 2*time.Second, "give up after this long")
	localAddr := flag.String("local", "", "bind to this source HOST:PORT first")
	sendto := flag.Bool("sendto", false, "udp: send from an unconnected socket to each of the comma-separated -addr")
	payload := flag.String("payload", "bastion-dialer\n", "udplite, ip4:N, ip6:N: what to send")
	icmpType := flag.Int("icmp-type", 13, "ip4:1, ip6:58: the ICMP type to send")
	linger := flag.Duration("linger", 0, "stay this long after the outcome is printed (to be found in /proc)")
	flag.Parse()

	r := result{PID: os.Getpid(), UID: os.Getuid(), Network: *network, Addr: *addr}
	start := time.Now()
	var local string
	var err error
	switch {
	case *sendto:
		local, err = sendTo(*network, *localAddr, strings.Split(*addr, ","), *reply, *timeout)
	case *network == "udplite4" || *network == "udplite6":
		local, err = udpLite(*network == "udplite6", *addr, *localAddr, []byte(*payload), *reply, *timeout)
	case strings.HasPrefix(*network, "ip4:") || strings.HasPrefix(*network, "ip6:"):
		local, err = rawIP(*network, *addr, *localAddr, []byte(*payload), *icmpType, *timeout)
	default:
		local, err = dial(*network, *addr, *localAddr, *reply, *timeout)
	}
	r.ElapsedUS = time.Since(start).Microseconds()
	r.Local = local
	if err != nil {
		r.Kind, r.Error = classify(err), err.Error()
	} else {
		r.OK = true
	}
	line, _ := json.Marshal(r)
	fmt.Println(string(line))
	time.Sleep(*linger)
	if !r.OK {
		os.Exit(1)
	}
}

func dial(network, addr, localAddr string, reply bool, timeout time.Duration) (string, error) {
	d := net.Dialer{Timeout: timeout}
	switch network {
	case "tcp4", "tcp6":
		if localAddr != "" {
			a, err := net.ResolveTCPAddr(network, localAddr)
			if err != nil {
				return "", err
			}
			d.LocalAddr = a
		}
	case "udp4", "udp6":
		if localAddr != "" {
			a, err := net.ResolveUDPAddr(network, localAddr)
			if err != nil {
				return "", err
			}
			d.LocalAddr = a
		}
	case "ping4", "ping6":
		return ping(network == "ping6", addr, timeout)
	default:
		return "", fmt.Errorf("unknown network %q", network)
	}
	c, err := d.Dial(network, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	local := c.LocalAddr().String()
	isUDP := network[0] == 'u'
	if !reply && !isUDP {
		return local, nil
	}
	c.SetDeadline(time.Now().Add(timeout))
	payload := []byte("bastion-dialer\n")
	if _, err := c.Write(payload); err != nil {
		return local, err
	}
	if !reply {
		return local, nil
	}
	buf := make([]byte, len(payload))
	if _, err := c.Read(buf); err != nil {
		return local, err
	}
	return local, nil
}

// sendTo sends one datagram to each of addrs from one unconnected socket
// bound to localAddr (any port when empty), and with reply waits for each
// echo before sending the next.
func sendTo(network, localAddr string, addrs []string, reply bool, timeout time.Duration) (string, error) {
	if network != "udp4" && network != "udp6" {
		return "", fmt.Errorf("-sendto needs udp4 or udp6, not %q", network)
	}
	if localAddr == "" {
		localAddr = ":0"
	}
	c, err := net.ListenPacket(network, localAddr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	local := c.LocalAddr().String()
	c.SetDeadline(time.Now().Add(timeout))
	payload := []byte("bastion-dialer\n")
	buf := make([]byte, 64)
	for _, a := range addrs {
		dst, err := net.ResolveUDPAddr(network, a)
		if err != nil {
			return local, err
		}
		if _, err := c.WriteTo(payload, dst); err != nil {
			return local, err
		}
		if !reply {
			continue
		}
		for {
			_, from, err := c.ReadFrom(buf)
			if err != nil {
				return local, err
			}
			if from.String() == dst.String() {
				break
			}
		}
	}
	return local, nil
}

// ping sends one ICMP echo request on an unprivileged ICMP socket
// (net.ipv4.ping_group_range must include our GID) and waits for the reply.
func ping(v6 bool, host string, timeout time.Duration) (string, error) {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("ping: %w", err)
	}
	var fd int
	var sa unix.Sockaddr
	echo := []byte{8, 0, 0, 0, 0, 0, 0, 1, 'b', 'a', 's', 't', 'i', 'o', 'n'}
	if v6 {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		sa = &unix.SockaddrInet6{Addr: ip.As16()}
		echo[0] = 128
	} else {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		sa = &unix.SockaddrInet4{Addr: ip.As4()}
	}
	if err != nil {
		return "", fmt.Errorf("ping socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Connect(fd, sa); err != nil {
		return "", fmt.Errorf("ping connect: %w", err)
	}
	local := ""
	if lsa, err := unix.Getsockname(fd); err == nil {
		switch a := lsa.(type) {
		case *unix.SockaddrInet4:
			local = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
		case *unix.SockaddrInet6:
			local = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
		}
	}
	// The kernel fills in the identifier (the socket's "port") and checksum.
	if _, err := unix.Write(fd, echo); err != nil {
		return local, fmt.Errorf("ping send: %w", err)
	}
	buf := make([]byte, 1500)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		n, err := unix.Read(fd, buf)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return local, fmt.Errorf("ping: %w", errDeadline)
			}
			return local, fmt.Errorf("ping receive: %w", err)
		}
		if n >= 1 && (buf[0] == 0 || buf[0] == 129) { // echo reply
			return local, nil
		}
	}
	return local, fmt.Errorf("ping: %w", os.ErrDeadlineExceeded)
}

// errDeadline is a receive that timed out.
var errDeadline = os.ErrDeadlineExceeded

func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return "permission"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	}
	return "other"
}
