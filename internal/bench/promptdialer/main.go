// Command promptdialer opens one TCP connection per line read from standard
// input, for the prompt-latency benchmark. For each it binds the socket
// first, so the source port is known before the SYN leaves, then prints
//
//	start PORT UNIXNANO
//
// with the wall-clock time taken immediately before connect(), and, once
// the connection is established or failed (it waits at most -timeout),
//
//	done PORT ok|ERROR
//
// It exits at the end of its input. Run it as the user whose prompts are
// measured; the wall clock is comparable with the benchmark's as both run
// on the same machine.
//
// Usage: promptdialer -addr 127.0.0.1:PORT [-timeout 30s]
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:80", "IPv4 destination host:port")
	timeout := flag.Duration("timeout", 30*time.Second, "how long to wait for one connection")
	flag.Parse()
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil || !ap.Addr().Is4() {
		fmt.Fprintf(os.Stderr, "promptdialer: -addr %q: want IPv4 host:port\n", *addr)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	in := bufio.NewScanner(os.Stdin)
	used := map[int]bool{}
	for in.Scan() {
		port, err := dial(ap, *timeout, used, out)
		if port < 0 {
			fmt.Fprintln(os.Stderr, "promptdialer:", err)
			os.Exit(1)
		}
		res := "ok"
		if err != nil {
			res = err.Error()
		}
		fmt.Fprintf(out, "done %d %s\n", port, res)
		out.Flush()
	}
}

// dial makes one connection from a source port not in used; port is -1
// when no socket could be set up. Source ports are never reused: the agent
// answers a packet whose exact tuple it decided in the last minutes from
// the same process with that verdict, as a retransmission, and such a
// connection would (rightly) not be prompted.
func dial(ap netip.AddrPort, timeout time.Duration, used map[int]bool, out *bufio.Writer) (port int, err error) {
	fd := -1
	for range 1000 {
		if fd, port, err = boundSocket(ap.Addr()); err != nil {
			return -1, err
		}
		if !used[port] {
			break
		}
		unix.Close(fd)
		fd = -1
	}
	if fd < 0 {
		return -1, errors.New("no unused source port in 1000 tries")
	}
	used[port] = true
	defer unix.Close(fd)
	t0 := time.Now().UnixNano()
	err = unix.Connect(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())})
	fmt.Fprintf(out, "start %d %d\n", port, t0)
	out.Flush()
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return port, fmt.Errorf("connect: %w", err)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for deadline := time.Now().Add(timeout); ; {
		left := time.Until(deadline)
		if left <= 0 {
			return port, errors.New("timeout")
		}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return port, fmt.Errorf("poll: %w", err)
		}
		if n > 0 {
			break
		}
	}
	soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return port, fmt.Errorf("getsockopt: %w", err)
	}
	if soErr != 0 {
		return port, unix.Errno(soErr)
	}
	return port, nil
}

// boundSocket returns a non-blocking TCP socket bound to an ephemeral port
// of addr, so that its source port is known before connect().
func boundSocket(addr netip.Addr) (fd, port int, err error) {
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("socket: %w", err)
	}
	// A reset on close: no TIME_WAIT piles up over many connections.
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: addr.As4()}); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("bind: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("getsockname: %w", err)
	}
	return fd, sa.(*unix.SockaddrInet4).Port, nil
}
