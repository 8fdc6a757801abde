// Command loopdialer connects to one TCP destination again and again, one
// connection at a time, each closed at once (with a reset, so that no
// TIME_WAIT state piles up), until its standard input reaches EOF or -n
// attempts were made. It prints one JSON line per attempt, with the wall
// and monotonic clocks at which its connect() was called, so that a test
// can tell which connections were made after a given moment and what each
// one met.
//
// Usage: loopdialer -addr 127.0.0.1:PORT [-n 0] [-timeout 300ms] [-interval 0]
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// attempt is one output line.
type attempt struct {
	// StartNS is the wall clock (Unix ns) just before connect().
	StartNS int64 `json:"start_ns"`
	// MonoNS is CLOCK_MONOTONIC (ns) at the same moment: unlike the wall
	// clock it is never set, so a test compares it with its own readings
	// even when the machine's clock is stepped meanwhile.
	MonoNS int64 `json:"mono_ns"`
	// US is how long the attempt took.
	US int64 `json:"us"`
	OK bool  `json:"ok"`
	// Kind classifies a failure as the dialer does: refused, timeout,
	// permission (EPERM/EACCES) or other.
	Kind  string `json:"kind,omitempty"`
	Local string `json:"local,omitempty"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:80", "IPv4 destination host:port")
	n := flag.Int("n", 0, "stop after this many attempts (0: at EOF on standard input)")
	timeout := flag.Duration("timeout", 300*time.Millisecond, "give up on one connection after this long")
	interval := flag.Duration("interval", 0, "pause between attempts")
	flag.Parse()
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil || !ap.Addr().Is4() {
		fmt.Fprintf(os.Stderr, "loopdialer: -addr %q: want IPv4 host:port\n", *addr)
		os.Exit(2)
	}
	var stop atomic.Bool
	if *n == 0 {
		go func() {
			io.Copy(io.Discard, os.Stdin)
			stop.Store(true)
		}()
	}
	// Unbuffered: a test reads the lines while the loop runs.
	enc := json.NewEncoder(os.Stdout)
	sa := &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	for i := 0; (*n == 0 && !stop.Load()) || (*n > 0 && i < *n); i++ {
		enc.Encode(dial(sa, *timeout))
		if *interval > 0 {
			time.Sleep(*interval)
		}
	}
}

func dial(sa *unix.SockaddrInet4, timeout time.Duration) attempt {
	var a attempt
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		a.Kind = "other"
		return a
	}
	defer unix.Close(fd)
	// Closed with a reset: no TIME_WAIT, so that no port runs out.
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	start := time.Now()
	a.StartNS = start.UnixNano()
	var mono unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
	a.MonoNS = mono.Nano()
	err = unix.Connect(fd, sa)
	if errors.Is(err, unix.EINPROGRESS) {
		err = wait(fd, timeout)
	}
	a.US = time.Since(start).Microseconds()
	if err != nil {
		a.Kind = classify(err)
		return a
	}
	a.OK = true
	if lsa, err := unix.Getsockname(fd); err == nil {
		if l, ok := lsa.(*unix.SockaddrInet4); ok {
			a.Local = netip.AddrPortFrom(netip.AddrFrom4(l.Addr), uint16(l.Port)).String()
		}
	}
	return a
}

// wait waits until the connection in progress on fd is made or fails.
func wait(fd int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			continue
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

func classify(err error) string {
	switch {
	case errors.Is(err, unix.ECONNREFUSED):
		return "refused"
	case errors.Is(err, unix.ETIMEDOUT):
		return "timeout"
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return "permission"
	}
	return "other"
}
