package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/nlconn"
)

// ErrLost is wrapped by DestroyWatcher.Receive when the kernel dropped
// notifications because the socket's buffer was full.
var ErrLost = errors.New("conntrack notifications lost")

// groupDestroy is NFNLGRP_CONNTRACK_DESTROY.
const groupDestroy = 3

// Sizes of the sockets' buffers. A dump reply is at most a 32 KiB skb on
// the kernels seen; dumpBuffer leaves room for larger ones (a larger one
// is an error, never a silent truncation). destroyReadBuffer holds ~16,000
// destroy notifications of ~250 bytes.
const (
	dumpBuffer        = 64 << 10
	destroyReadBuffer = 4 << 20
	// dumpTimeout bounds each read of a dump: the kernel answers at once,
	// so a read that waits this long means something is wrong.
	dumpTimeout = 10 * time.Second
)

// Dumper reads the whole conntrack table of one network namespace. It holds
// one reply buffer: a dump of any size costs the same memory. Not safe for
// concurrent use.
type Dumper struct {
	fd  int
	seq uint32
	buf []byte
}

// OpenDumper opens a ctnetlink socket inside ns (nil: the caller's). It
// needs CAP_NET_ADMIN there.
func OpenDumper(ns *os.File) (*Dumper, error) {
	var fd int
	err := netns.Do(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open ctnetlink dump socket: %w", err)
	}
	tv := unix.NsecToTimeval(dumpTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open ctnetlink dump socket: set receive timeout: %w", err)
	}
	return &Dumper{fd: fd, buf: make([]byte, dumpBuffer)}, nil
}

// Close closes the socket.
func (d *Dumper) Close() error { return unix.Close(d.fd) }

// DumpStats says what one dump read.
type DumpStats struct {
	// Entries is the number of entries read, Malformed those of them that
	// did not parse (skipped).
	Entries, Malformed int
	// Interrupted is set when the table changed during the dump in a way
	// that may have hidden entries (NLM_F_DUMP_INTR).
	Interrupted bool
}

// Netlink header fields (linux/netlink.h).
const (
	nlmsgHdrLen  = 16
	nlmsgError   = 2
	nlmsgDone    = 3
	nlmFDumpIntr = 0x10
)

// Dump reads every entry of the table (both IP families, every zone) and
// calls fn with each, in the kernel's order. A Flow holds no reference to
// the reply buffer: fn may keep it.
func (d *Dumper) Dump(fn func(Flow)) (DumpStats, error) {
	var st DumpStats
	d.seq++
	req := make([]byte, nlmsgHdrLen+nfgenmsgLen)
	binary.NativeEndian.PutUint32(req[0:4], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:6], nfnlSubsysCTNetlink<<8|ctMsgGet)
	binary.NativeEndian.PutUint16(req[6:8], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:12], d.seq)
	req[nlmsgHdrLen] = unix.AF_UNSPEC // both families; version 0, res_id 0
	if err := unix.Sendto(d.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return st, fmt.Errorf("dump conntrack table: send request: %w", err)
	}
	for {
		n, _, flags, _, err := unix.Recvmsg(d.fd, d.buf, nil, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return st, fmt.Errorf("dump conntrack table: receive: %w", err)
		}
		if flags&unix.MSG_TRUNC != 0 {
			return st, fmt.Errorf("dump conntrack table: a reply exceeded %d bytes", len(d.buf))
		}
		done, err := d.parseReplies(d.buf[:n], &st, fn)
		if err != nil || done {
			return st, err
		}
	}
}

// parseReplies handles one datagram of a dump's replies; done is set by
// NLMSG_DONE.
func (d *Dumper) parseReplies(b []byte, st *DumpStats, fn func(Flow)) (done bool, err error) {
	for len(b) >= nlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		flags := binary.NativeEndian.Uint16(b[6:8])
		seq := binary.NativeEndian.Uint32(b[8:12])
		if l < nlmsgHdrLen || l > len(b) {
			return false, fmt.Errorf("dump conntrack table: %w", malformed("netlink message of length %d in %d bytes", l, len(b)))
		}
		data := b[nlmsgHdrLen:l]
		if next := (l + 3) &^ 3; next < len(b) {
			b = b[next:]
		} else {
			b = nil
		}
		if seq != d.seq {
			continue // the rest of an earlier, abandoned dump
		}
		if flags&nlmFDumpIntr != 0 {
			st.Interrupted = true
		}
		switch typ {
		case nlmsgDone:
			return true, nil
		case nlmsgError:
			if len(data) < 4 {
				return false, fmt.Errorf("dump conntrack table: %w", malformed("short error message"))
			}
			if errno := -int32(binary.NativeEndian.Uint32(data[0:4])); errno != 0 {
				return false, fmt.Errorf("dump conntrack table: %w", unix.Errno(errno))
			}
		case nfnlSubsysCTNetlink<<8 | ctMsgNew:
			st.Entries++
			f, err := ParseFlow(data)
			if err != nil {
				st.Malformed++
				continue
			}
			fn(f)
		}
	}
	return false, nil
}

// DestroyWatcher receives the kernel's notifications of destroyed conntrack
// entries of one network namespace, with their final counters when
// accounting is on.
type DestroyWatcher struct {
	c   *netlink.Conn
	raw syscall.RawConn
	buf []byte
}

// WatchDestroy subscribes to conntrack destroy notifications inside ns
// (nil: the caller's namespace). It needs CAP_NET_ADMIN there. Entries
// created while nobody is subscribed may never be notified (with
// nf_conntrack_events = 2, the kernel's default, an entry carries events
// only if a listener existed when it was created).
func WatchDestroy(ns *os.File) (*DestroyWatcher, error) {
	c, err := nlconn.Dial(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("open ctnetlink event socket: %w", err)
	}
	if err := c.JoinGroup(groupDestroy); err != nil {
		c.Close()
		return nil, fmt.Errorf("join conntrack destroy group: %w", err)
	}
	nlconn.ForceReadBuffer(c, destroyReadBuffer)
	raw, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("open ctnetlink event socket: %w", err)
	}
	return &DestroyWatcher{c: c, raw: raw, buf: make([]byte, dumpBuffer)}, nil
}

// maxDestroyBatch bounds the notifications one Receive takes in.
const maxDestroyBatch = 4096

// Receive blocks until the kernel reports destroyed entries, then takes in
// every notification already waiting (up to maxDestroyBatch), one
// datagram each, and appends them to buf: a caller that waits between
// calls is woken once per batch, not once per entry. A message that does
// not parse is skipped and counted in malformed. When notifications were
// lost the error wraps ErrLost, flows still holds those received, and the
// watcher keeps working. After Close, or once the read deadline passes,
// Receive returns an error.
func (w *DestroyWatcher) Receive(buf []Flow) (flows []Flow, malformedN int, err error) {
	flows = buf
	got := 0
	var lost, rerr error
	err = w.raw.Read(func(fd uintptr) bool {
		for got < maxDestroyBatch {
			n, _, rflags, _, err := unix.Recvmsg(int(fd), w.buf, nil, unix.MSG_DONTWAIT)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				// Nothing (more) waiting: wait for the socket unless
				// this call has something to report.
				return got > 0 || lost != nil
			case errors.Is(err, unix.ENOBUFS):
				lost = err
				continue
			case err != nil:
				rerr = err
				return true
			}
			got++
			if rflags&unix.MSG_TRUNC != 0 {
				malformedN++
				continue
			}
			var bad int
			flows, bad = parseDestroyed(w.buf[:n], flows)
			malformedN += bad
		}
		return true
	})
	switch {
	case err != nil:
		return flows, malformedN, fmt.Errorf("receive conntrack destroy notifications: %w", err)
	case rerr != nil:
		return flows, malformedN, fmt.Errorf("receive conntrack destroy notifications: %w", rerr)
	case lost != nil:
		return flows, malformedN, fmt.Errorf("%w: %w", ErrLost, lost)
	}
	return flows, malformedN, nil
}

// parseDestroyed appends the destroy notifications of one datagram to
// flows; bad counts the messages that did not parse.
func parseDestroyed(b []byte, flows []Flow) (_ []Flow, bad int) {
	for len(b) >= nlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if l < nlmsgHdrLen || l > len(b) {
			return flows, bad + 1
		}
		data := b[nlmsgHdrLen:l]
		if next := (l + 3) &^ 3; next < len(b) {
			b = b[next:]
		} else {
			b = nil
		}
		if typ != nfnlSubsysCTNetlink<<8|ctMsgDelete {
			continue
		}
		f, err := ParseFlow(data)
		if err != nil {
			bad++
			continue
		}
		flows = append(flows, f)
	}
	return flows, bad
}

// SetReadDeadline makes Receive fail once t passes; the zero time removes
// the deadline.
func (w *DestroyWatcher) SetReadDeadline(t time.Time) error { return w.c.SetReadDeadline(t) }

// Close unsubscribes and unblocks Receive.
func (w *DestroyWatcher) Close() error { return w.c.Close() }
