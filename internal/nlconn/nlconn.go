// Package nlconn opens netlink sockets inside a network namespace, as
// internal/conntrack, internal/sockdiag and the procfs resolver use them.
package nlconn

import (
	"os"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/netns"
)

// Dial opens a netlink socket of family (unix.NETLINK_*) inside ns (nil:
// the caller's). The socket is created on a thread that entered ns and
// stays bound to it, so ns need not stay open afterwards.
func Dial(ns *os.File, family int) (*netlink.Conn, error) {
	var c *netlink.Conn
	err := netns.Do(ns, func() error {
		var err error
		c, err = netlink.Dial(family, nil)
		return err
	})
	return c, err
}

// ForceReadBuffer sets c's receive buffer to n bytes. SO_RCVBUFFORCE
// (CAP_NET_ADMIN) may exceed net.core.rmem_max; if it is refused, c gets
// what SO_RCVBUF gives.
func ForceReadBuffer(c *netlink.Conn, n int) {
	if err := setReadBufferForce(c, n); err != nil {
		_ = c.SetReadBuffer(n)
	}
}

func setReadBufferForce(c *netlink.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	return serr
}
