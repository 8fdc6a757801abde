package conntrack

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/bastion-fw/bastion/internal/netns"
)

// acctSysctl is the per-namespace switch of conntrack accounting. A file
// under /proc/sys/net belongs to the network namespace of the thread that
// opens it, so it is opened from a thread inside the namespace.
const acctSysctl = "/proc/sys/net/netfilter/nf_conntrack_acct"

// Accounting reports whether conntrack accounting is on in ns (nil: the
// caller's namespace).
func Accounting(ns *os.File) (bool, error) {
	var on bool
	err := netns.Do(ns, func() error {
		b, err := os.ReadFile(acctSysctl)
		if err != nil {
			return err
		}
		on = string(bytes.TrimSpace(b)) != "0"
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("read nf_conntrack_acct: %w", err)
	}
	return on, nil
}

// SetAccounting turns conntrack accounting on or off in ns (nil: the
// caller's namespace). It applies to entries created afterwards: an entry
// gets its counters when it is created.
func SetAccounting(ns *os.File, on bool) error {
	v := []byte("0\n")
	if on {
		v = []byte("1\n")
	}
	err := netns.Do(ns, func() error {
		f, err := os.OpenFile(acctSysctl, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		if _, err := f.Write(v); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
	if err != nil {
		return fmt.Errorf("set nf_conntrack_acct: %w", err)
	}
	return nil
}

// The timeouts after which an entry that saw no packet ends, by state: a
// closed TCP connection's (after a reset, and after both sides closed), and
// an unanswered UDP flow's. Every other state's is longer by default.
var endTimeoutSysctls = []string{
	"/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close",
	"/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait",
	"/proc/sys/net/netfilter/nf_conntrack_udp_timeout",
}

// ShortestEnd returns the shortest time a TCP or UDP entry stays in ns's
// table (nil: the caller's) after its last packet, as the namespace's
// timeouts set it: nf_conntrack_tcp_timeout_close, _time_wait and
// nf_conntrack_udp_timeout (10, 120 and 30 s by default). A reader that
// reads the whole table more often than that sees every entry after its
// last packet, final counters included, unless it is deleted before its
// time (conntrack -D, a flush, a new connection reusing a closed one's
// tuple). Timeout policies attached by rules (the CT target) are not
// seen.
func ShortestEnd(ns *os.File) (time.Duration, error) {
	var shortest time.Duration
	err := netns.Do(ns, func() error {
		for i, p := range endTimeoutSysctls {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 32)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if d := time.Duration(n) * time.Second; i == 0 || d < shortest {
				shortest = d
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read conntrack timeouts: %w", err)
	}
	return shortest, nil
}
