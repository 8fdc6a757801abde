package testenv

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// DialUnixAs connects to the Unix stream socket at path from a thread whose
// effective UID and GID are uid and gid, so that the server reads that user
// from SO_PEERCRED (the kernel takes the connecting thread's credentials at
// connect time) and the socket's directory permissions apply as for that
// user. Only the one locked thread changes credentials, with raw system
// calls (the libc and Go wrappers change every thread of the process), and
// it gets root's back before it runs anything else. The caller must be root.
func DialUnixAs(ctx context.Context, path string, uid, gid uint32) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		c, restored, err := dialAsLocked(ctx, path, uid, gid)
		if restored {
			runtime.UnlockOSThread()
		}
		// Otherwise the thread stays locked and ends with this goroutine,
		// so that no other goroutine ever runs with the user's IDs.
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// dialAsLocked runs on a locked thread; restored reports whether the
// thread's IDs are back to what they were.
func dialAsLocked(ctx context.Context, path string, uid, gid uint32) (c net.Conn, restored bool, err error) {
	_, euid, _ := unix.Getresuid()
	_, egid, _ := unix.Getresgid()
	keep := ^uintptr(0) // -1: leave this ID as it is
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(gid), keep); e != 0 {
		return nil, true, fmt.Errorf("set thread gid %d: %w", gid, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(uid), keep); e != 0 {
		_, _, e2 := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(egid), keep)
		return nil, e2 == 0, fmt.Errorf("set thread uid %d: %w", uid, e)
	}
	var d net.Dialer
	c, err = d.DialContext(ctx, "unix", path)
	_, _, e1 := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(euid), keep)
	_, _, e2 := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(egid), keep)
	return c, e1 == 0 && e2 == 0, err
}

// ClientAs returns a gRPC client connection to the Unix socket at path
// whose every (re)connection is made as uid:gid (DialUnixAs). It retries
// quickly, as the services it is used on restart in tests.
func ClientAs(path string, uid, gid uint32) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("passthrough:///"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.5, MaxDelay: 250 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return DialUnixAs(ctx, path, uid, gid)
		}))
	if err != nil {
		return nil, fmt.Errorf("client of %s as uid %d: %w", path, uid, err)
	}
	return conn, nil
}
