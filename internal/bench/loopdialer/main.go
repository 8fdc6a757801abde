// Command loopdialer makes TCP connections in a loop, for the benchmark's
// kernel-decision cases. It stays up and reads commands from standard
// input, one a line:
//
//	listen
//	run ADDR DURATION [TIMEOUT]
//
// listen opens a listening socket on 127.0.0.1 and prints {"listen":
// "ADDR"}. A run to an address the dialer listens on accepts and closes
// the waiting connections right after each connect() returns, in the same
// thread: the server's work is part of each connection's, and the accept
// queue stays short. (With a server in
// another process, the dialers outran it on two cores: its accept queue
// filled, SYNs were dropped and connect() stalled for the 1s
// retransmission, so the baseline measured the server's scheduling.)
//
// Each runs -threads threads, each on its own OS thread, that connect to
// ADDR (IPv4 host:port) one blocking connect() after another for DURATION,
// and then prints one JSON line (Run): how many connect() calls succeeded
// and failed (by errno), and the latency of each, timed around connect()
// alone. A connection that succeeds is closed with SO_LINGER 0 (a reset),
// so that no TIME_WAIT piles up. TIMEOUT, when given, bounds each
// connect() (SO_SNDTIMEO), for a connection whose SYN is dropped.
//
// It is one program for every case, with and without a firewall, so that
// the ratios compare the same work. Run it in the cgroup whose programs
// must see it (the agent's, for kernel decisions); one process serves all
// the cases of one namespace, so that the agent knows it by one
// executable and one process.
//
// Usage: loopdialer [-threads 2]
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Run is what one command measured.
type Run struct {
	Addr    string  `json:"addr"`
	Seconds float64 `json:"seconds"` // from the first connect() to the last return, over all threads
	OK      int     `json:"ok"`
	// Errors counts the failed connect() calls by errno name ("EPERM").
	Errors map[string]int `json:"errors,omitempty"`
	// Latencies of every connect() call, successful or not, in µs.
	P50US float64 `json:"p50_us"`
	P99US float64 `json:"p99_us"`
	MaxUS float64 `json:"max_us"`
	// Fatal is set when a thread could not make sockets at all.
	Fatal string `json:"fatal,omitempty"`
}

func main() {
	threads := flag.Int("threads", 2, "dialing threads")
	flag.Parse()
	if *threads < 1 || *threads > 256 {
		fmt.Fprintln(os.Stderr, "loopdialer: -threads: want 1 to 256")
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	in := bufio.NewScanner(os.Stdin)
	enc := json.NewEncoder(out)
	listeners := map[netip.AddrPort]int{}
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 1 && f[0] == "listen" {
			ap, fd, err := listen()
			if err != nil {
				fmt.Fprintln(os.Stderr, "loopdialer:", err)
				os.Exit(1)
			}
			listeners[ap] = fd
			enc.Encode(map[string]string{"listen": ap.String()})
			out.Flush()
			continue
		}
		if (len(f) != 3 && len(f) != 4) || f[0] != "run" {
			fmt.Fprintf(os.Stderr, "loopdialer: bad command %q: want run ADDR DURATION [TIMEOUT]\n", in.Text())
			os.Exit(2)
		}
		ap, err := netip.ParseAddrPort(f[1])
		d, derr := time.ParseDuration(f[2])
		var timeout time.Duration
		var terr error
		if len(f) == 4 {
			timeout, terr = time.ParseDuration(f[3])
		}
		if err != nil || !ap.Addr().Is4() || derr != nil || d <= 0 || terr != nil || timeout < 0 {
			fmt.Fprintf(os.Stderr, "loopdialer: bad command %q\n", in.Text())
			os.Exit(2)
		}
		lfd, ok := listeners[ap]
		if !ok {
			lfd = -1
		}
		enc.Encode(run(ap, lfd, *threads, d, timeout))
		out.Flush()
	}
}

// tally is one thread's count.
type tally struct {
	lat         []time.Duration
	ok          int
	errs        map[unix.Errno]int
	first, last time.Time
	fatal       error
}

// listen opens a listening TCP socket on an ephemeral port of 127.0.0.1.
func listen() (netip.AddrPort, int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return netip.AddrPort{}, -1, fmt.Errorf("listen: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return netip.AddrPort{}, -1, fmt.Errorf("listen: bind: %w", err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		return netip.AddrPort{}, -1, fmt.Errorf("listen: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, -1, fmt.Errorf("listen: %w", err)
	}
	sa4 := sa.(*unix.SockaddrInet4)
	return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(sa4.Port)), fd, nil
}

// run dials ap from threads threads for d. lfd, when not -1, is the
// listening socket of ap: each thread drains it after each of its
// connect() calls that succeeds.
func run(ap netip.AddrPort, lfd, threads int, d, timeout time.Duration) Run {
	sa := &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	tallies := make([]tally, threads)
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for i := range tallies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			dial(sa, lfd, stop, timeout, &tallies[i])
		}()
	}
	wg.Wait()

	r := Run{Addr: ap.String(), Errors: map[string]int{}}
	var all []time.Duration
	var first, last time.Time
	for i := range tallies {
		t := &tallies[i]
		if t.fatal != nil && r.Fatal == "" {
			r.Fatal = t.fatal.Error()
		}
		all = append(all, t.lat...)
		r.OK += t.ok
		for e, n := range t.errs {
			r.Errors[unix.ErrnoName(e)] += n
		}
		if !t.first.IsZero() && (first.IsZero() || t.first.Before(first)) {
			first = t.first
		}
		if t.last.After(last) {
			last = t.last
		}
	}
	if len(r.Errors) == 0 {
		r.Errors = nil
	}
	r.Seconds = last.Sub(first).Seconds()
	slices.Sort(all)
	r.P50US, r.P99US = quantileUS(all, 0.50), quantileUS(all, 0.99)
	if len(all) > 0 {
		r.MaxUS = float64(all[len(all)-1].Nanoseconds()) / 1e3
	}
	return r
}

// dial connects to sa until stop, each connect() bounded by timeout (0:
// the kernel's SYN retries).
func dial(sa *unix.SockaddrInet4, lfd int, stop time.Time, timeout time.Duration, t *tally) {
	t.lat = make([]time.Duration, 0, 1<<16)
	t.errs = map[unix.Errno]int{}
	linger := &unix.Linger{Onoff: 1, Linger: 0}
	for {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.fatal = fmt.Errorf("socket: %w", err)
			return
		}
		if timeout > 0 {
			tv := unix.NsecToTimeval(timeout.Nanoseconds())
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
				unix.Close(fd)
				t.fatal = fmt.Errorf("setsockopt SO_SNDTIMEO: %w", err)
				return
			}
		}
		t0 := time.Now()
		if t.first.IsZero() {
			t.first = t0
		}
		err = unix.Connect(fd, sa)
		t1 := time.Now()
		t.lat = append(t.lat, t1.Sub(t0))
		t.last = t1
		var errno unix.Errno
		switch {
		case err == nil:
			t.ok++
			unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, linger)
			if lfd >= 0 {
				drain(lfd)
			}
		case errors.As(err, &errno):
			t.errs[errno]++
		default:
			t.errs[unix.EINVAL]++
		}
		unix.Close(fd)
		if !t1.Before(stop) {
			if lfd >= 0 {
				drain(lfd)
			}
			return
		}
	}
}

// drain accepts and closes every connection waiting on the (non-blocking)
// listening socket lfd. A thread never waits for one: the connection its
// connect() made may be taken by another thread, or not be queued yet
// (its last ACK still in flight), and is then drained later.
func drain(lfd int) {
	for {
		afd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		unix.Close(afd)
	}
}

// quantileUS returns the q-quantile of sorted lat in µs (nearest rank).
func quantileUS(lat []time.Duration, q float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	i := int(q*float64(len(lat))+0.5) - 1
	i = max(0, min(i, len(lat)-1))
	return float64(lat[i].Nanoseconds()) / 1e3
}
