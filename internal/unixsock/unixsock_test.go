package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()

	if err := RemoveStale(filepath.Join(dir, "none.sock"), "x"); err != nil {
		t.Fatalf("missing path: %v", err)
	}

	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep me"), 0o600)
	if err := RemoveStale(file, "x"); err == nil {
		t.Fatal("a regular file was accepted")
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatal("a regular file was removed")
	}

	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	if err := RemoveStale(live, "test server"); err == nil || !strings.Contains(err.Error(), "another test server") {
		t.Fatalf("live socket: %v", err)
	}
	l.Close() // net.UnixListener removes its file on Close

	stale := filepath.Join(dir, "stale.sock")
	l2, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l2.(*net.UnixListener).SetUnlinkOnClose(false)
	l2.Close()
	if err := RemoveStale(stale, "x"); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	if _, err := os.Lstat(stale); !os.IsNotExist(err) {
		t.Fatal("stale socket still there")
	}
}
