// Package unixsock prepares the path of a server's Unix socket.
//
// Trust boundary: the path comes from the server's own configuration; what
// is found there may be left by a crashed run, or be something else
// entirely, which is never removed.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// RemoveStale removes a socket left at path by a server that crashed. It
// refuses when a server still answers there (naming it as server in the
// error) or when path is not a socket.
func RemoveStale(path, server string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("another %s is serving %s", server, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
