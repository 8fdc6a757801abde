// Command burstdialer opens many TCP connections to one destination at
// once, as a torrent client or a browser does, and reports how many were
// established. Every connect() is issued, non-blocking, before any is waited
// for: when it prints its first line ({"issued":N}) the first packet of every
// connection has been handed to the network stack (and so to a firewall's
// queue). It then waits for all of them and prints the result as a second
// JSON line.
//
// Usage: burstdialer -addr 127.0.0.1:PORT [-n 500] [-timeout 30s]
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

type result struct {
	Issued int            `json:"issued"`
	OK     int            `json:"ok"`
	Failed int            `json:"failed"`
	Errors map[string]int `json:"errors,omitempty"`
	PID    int            `json:"pid"`
	UID    int            `json:"uid"`
	// ElapsedUS is from the first connect() to the last outcome.
	ElapsedUS int64 `json:"elapsed_us"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:80", "IPv4 destination host:port")
	n := flag.Int("n", 500, "connections")
	timeout := flag.Duration("timeout", 30*time.Second, "give up on the connections not established by then")
	flag.Parse()
	if err := run(*addr, *n, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "burstdialer:", err)
		os.Exit(1)
	}
}

func run(addr string, n int, timeout time.Duration) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return fmt.Errorf("-addr %q: want IPv4 host:port", addr)
	}
	// Go raises the soft RLIMIT_NOFILE to the hard limit at start-up; n
	// sockets must fit in it.
	sa := &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	r := result{Errors: map[string]int{}, PID: os.Getpid(), UID: os.Getuid()}
	fds := make([]int, 0, n)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	start := time.Now()
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		fds = append(fds, fd)
		if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return fmt.Errorf("connect: %w", err)
		}
		r.Issued++
	}
	line, _ := json.Marshal(map[string]int{"issued": r.Issued})
	fmt.Println(string(line))

	// Wait until every socket is writable (connected) or failed.
	waiting := make(map[int]bool, len(fds))
	for _, fd := range fds {
		waiting[fd] = true
	}
	deadline := start.Add(timeout)
	for len(waiting) > 0 {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		pfds := make([]unix.PollFd, 0, len(waiting))
		for fd := range waiting {
			pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT})
		}
		if _, err := unix.Poll(pfds, int(min(left, time.Second).Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll: %w", err)
		}
		for _, p := range pfds {
			if p.Revents == 0 {
				continue
			}
			delete(waiting, int(p.Fd))
			soErr, err := unix.GetsockoptInt(int(p.Fd), unix.SOL_SOCKET, unix.SO_ERROR)
			switch {
			case err != nil:
				r.Failed++
				r.Errors["getsockopt: "+err.Error()]++
			case soErr != 0:
				r.Failed++
				r.Errors[unix.Errno(soErr).Error()]++
			default:
				r.OK++
			}
		}
	}
	if len(waiting) > 0 {
		r.Failed += len(waiting)
		r.Errors["timeout"] += len(waiting)
	}
	r.ElapsedUS = time.Since(start).Microseconds()
	line, _ = json.Marshal(r)
	fmt.Println(string(line))
	return nil
}
