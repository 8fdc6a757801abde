package conntrack

import (
	"bytes"
	"fmt"
	"os"

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
