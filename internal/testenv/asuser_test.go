package testenv_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/testenv"
)

// TestDialUnixAs checks that the server sees the requested user through
// SO_PEERCRED, that the user's permissions apply to the path, and that the
// process keeps root's IDs.
func TestDialUnixAs(t *testing.T) {
	testenv.RequireRoot(t)
	dir := testenv.TempDir(t)
	open := filepath.Join(dir, "open.sock")
	l, err := net.Listen("unix", open)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Chmod(open, 0o666); err != nil {
		t.Fatal(err)
	}
	peer := make(chan *unix.Ucred, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			raw, _ := c.(*net.UnixConn).SyscallConn()
			raw.Control(func(fd uintptr) {
				cred, _ := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
				peer <- cred
			})
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 { // the thread is reused afterwards: it must be root again
		c, err := testenv.DialUnixAs(ctx, open, 1000, 1001)
		if err != nil {
			t.Fatalf("dial as 1000: %v", err)
		}
		c.Close()
		if cred := <-peer; cred == nil || cred.Uid != 1000 || cred.Gid != 1001 {
			t.Errorf("server saw %+v, want uid 1000 gid 1001", cred)
		}
	}
	if euid, egid := os.Geteuid(), os.Getegid(); euid != 0 || egid != 0 {
		t.Errorf("after dialing: euid %d egid %d, want root's", euid, egid)
	}

	// A socket root may reach but 1000 may not (0700 root directory).
	private := filepath.Join(dir, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	pl, err := net.Listen("unix", filepath.Join(private, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	if c, err := testenv.DialUnixAs(ctx, filepath.Join(private, "s.sock"), 1000, 1000); err == nil {
		c.Close()
		t.Error("uid 1000 connected through a 0700 root directory")
	}
	if c, err := net.Dial("unix", filepath.Join(private, "s.sock")); err != nil {
		t.Errorf("root cannot connect afterwards: %v", err)
	} else {
		c.Close()
	}
}
