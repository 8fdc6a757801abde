package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// RunDir is where iproute2 keeps named network namespaces.
const RunDir = "/run/netns"

// Open returns the network namespace named by name: a bare name is looked up
// in /run/netns, anything containing a slash is taken as a path (for example
// /proc/123/ns/net). The empty name opens the caller's own namespace.
//
// Keep the returned file open while the namespace is used: it is what keeps
// an unnamed namespace alive and what Do and Inode refer to.
func Open(name string) (*os.File, error) {
	path := name
	switch {
	case name == "":
		path = "/proc/thread-self/ns/net"
	case !strings.Contains(name, "/"):
		path = filepath.Join(RunDir, name)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %q: %w", name, err)
	}
	return f, nil
}

// Inode returns the namespace's inode number, the identity the kernel reports
// as net->ns.inum.
func Inode(ns *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat network namespace: %w", err)
	}
	return st.Ino, nil
}

// Do runs fn on an OS thread that has entered ns, then returns the thread to
// the namespace it came from. A nil ns runs fn where the caller is.
//
// Whatever fn creates (sockets, BPF links, child processes started from this
// thread) belongs to ns. fn must not start goroutines that expect to run in ns.
func Do(ns *os.File, fn func() error) error {
	if ns == nil {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open current network namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace: %w", err)
	}
	fnErr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in ns: leave it locked so that the runtime
		// retires it instead of reusing it for unrelated goroutines.
		return errors.Join(fnErr, fmt.Errorf("return to original network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return fnErr
}
