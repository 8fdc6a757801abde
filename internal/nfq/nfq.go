package nfq

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/packet"
)

// CopyLen is how many bytes of each packet the kernel copies to userspace:
// every header the parser reads, however long the IPv6 extension-header
// chain the kernel-side parser also walks (16 KiB at most). A first packet
// is rarely more than a few hundred bytes, and the kernel copies only what
// there is. With 256, as before, a packet with more than ~200 bytes of
// extension headers arrived cut short, could not be parsed and got the
// timeout action.
const CopyLen = packet.MaxHeaderLen

// DefaultMaxLen is the default number of packets the kernel holds for this
// queue before it drops (or, with FailOpen, accepts) new ones.
const DefaultMaxLen = 4096

// DefaultReadBuffer is the default receive buffer of the queue's socket, in
// bytes as SO_RCVBUF counts them (the kernel reserves twice the value set,
// for its bookkeeping): enough for DefaultMaxLen messages of a first packet's
// headers, which take about 1 KiB each.
const DefaultReadBuffer = 4 << 20

// Config configures a Queue.
type Config struct {
	// Num is the queue number the iptables NFQUEUE rule targets.
	Num uint16
	// MaxLen is the kernel's queue length limit; 0 means DefaultMaxLen.
	MaxLen uint32
	// CopyLen is how many bytes of each packet are copied to userspace; 0
	// means CopyLen (headers only). A queue that reads payloads, such as
	// DNS answers, sets more.
	CopyLen uint32
	// NetNS is the network namespace to bind the queue in; nil is the
	// caller's. The file must stay open until Open returns (the socket
	// keeps its namespace afterwards).
	NetNS *os.File
	// ReadBuffer is the socket's receive buffer in bytes; 0 means
	// DefaultReadBuffer. Packets whose message finds it full are dropped
	// (or, with FailOpen, accepted) by the kernel, so it should hold a
	// queue's worth of messages: a burst must wait in the queue, not be
	// lost before the reader gets to it.
	ReadBuffer int
	// FailOpen makes the kernel accept, instead of drop, packets that find
	// the queue full or whose message finds the socket's buffer full. Off
	// by default; see the package documentation. Only for a queue whose
	// packets may pass unread.
	FailOpen bool
	// Log receives errors from the socket; nil discards them.
	Log *slog.Logger
}

// Validate reports whether the configuration is usable.
func (c Config) Validate() error {
	if c.MaxLen > 1<<20 {
		return fmt.Errorf("nfq: queue length %d is unreasonably large", c.MaxLen)
	}
	if c.ReadBuffer < 0 || c.ReadBuffer > 1<<30 {
		return fmt.Errorf("nfq: read buffer of %d bytes is out of range", c.ReadBuffer)
	}
	if c.CopyLen > 0xffff {
		return fmt.Errorf("nfq: copy length %d is larger than an IP packet", c.CopyLen)
	}
	return nil
}

// Packet is one queued packet as handed to the Run callback.
type Packet struct {
	// ID names the packet in verdicts.
	ID    uint32
	Tuple flow.Tuple
	Info  packet.Info
	// UID and GID of the socket that sent the packet; valid if HasUID.
	UID, GID uint32
	HasUID   bool
	// Mark is the packet's mark when it was queued.
	Mark uint32
	// Hook is the netfilter hook the packet was queued from (HookLocalIn,
	// HookLocalOut...).
	Hook uint8
	// Payload is the captured packet (up to Config.CopyLen bytes). It is only
	// valid during the handler call; copy it to keep it.
	Payload []byte
	// ParseErr is set when the packet could not be parsed; Tuple and Info
	// then hold whatever was parsed.
	ParseErr error
}

// Netfilter hooks (enum nf_inet_hooks) a packet can be queued from.
const (
	HookLocalIn  = 1 // NF_INET_LOCAL_IN: a packet for this host (INPUT)
	HookLocalOut = 3 // NF_INET_LOCAL_OUT: a packet this host sends (OUTPUT)
)

// Queue is an NFQUEUE binding.
type Queue struct {
	cfg Config
	log *slog.Logger
	nf  *nfqueue.Nfqueue
	// raw writes verdicts to nf's socket (see verdict).
	raw syscall.RawConn

	started atomic.Bool
	bound   chan struct{} // closed once Run has bound the queue
	// stopMu guards stopped: handlers run under the read lock so that Run
	// can wait for an in-flight handler before it returns.
	stopMu  sync.RWMutex
	stopped bool

	closeOnce sync.Once
	closeErr  error
}

// Open binds to the queue described by cfg. The queue starts receiving
// packets once Run is called.
func Open(cfg Config) (*Queue, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxLen == 0 {
		cfg.MaxLen = DefaultMaxLen
	}
	if cfg.CopyLen == 0 {
		cfg.CopyLen = CopyLen
	}
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = DefaultReadBuffer
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "nfq", "queue", cfg.Num)
	flags := uint32(nfqueue.NfQaCfgFlagUIDGid | nfqueue.NfQaCfgFlagGSO)
	if cfg.FailOpen {
		flags |= nfqueue.NfQaCfgFlagFailOpen
	}
	ncfg := nfqueue.Config{
		NfQueue:      cfg.Num,
		MaxQueueLen:  cfg.MaxLen,
		MaxPacketLen: cfg.CopyLen,
		Copymode:     nfqueue.NfQnlCopyPacket,
		Flags:        flags,
		// The family is only used for the obsolete per-family bind,
		// which kernels since 3.8 ignore; one queue carries both.
		AfFamily: unix.AF_INET,
		Logger:   slogAdapter{log},
	}
	if cfg.NetNS != nil {
		ncfg.NetNS = int(cfg.NetNS.Fd())
	}
	nf, err := nfqueue.Open(&ncfg)
	if err != nil {
		return nil, fmt.Errorf("nfq: open queue %d: %w", cfg.Num, err)
	}
	if err := nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		_ = nf.Close()
		return nil, fmt.Errorf("nfq: set NETLINK_NO_ENOBUFS: %w", err)
	}
	raw, err := nf.Con.SyscallConn()
	if err != nil {
		_ = nf.Close()
		return nil, fmt.Errorf("nfq: queue socket: %w", err)
	}
	if err := setReadBuffer(raw, cfg.ReadBuffer); err != nil {
		_ = nf.Close()
		return nil, err
	}
	return &Queue{cfg: cfg, log: log, nf: nf, raw: raw, bound: make(chan struct{})}, nil
}

// Run delivers each packet to handle, on one goroutine, until ctx ends or the
// socket fails. handle must not block: it records the packet and returns;
// verdicts may be issued later from any goroutine. handle is never called
// after Run returns. Run may be called once per Queue; it returns nil when
// ctx ends.
//
// When Run returns the queue is unbound: the kernel drops the packets still
// held, and new packets follow the iptables rule's --queue-bypass setting.
func (q *Queue) Run(ctx context.Context, handle func(Packet)) error {
	if !q.started.CompareAndSwap(false, true) {
		return errors.New("nfq: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fatal := make(chan error, 1)

	hook := func(a nfqueue.Attribute) int {
		q.stopMu.RLock()
		defer q.stopMu.RUnlock()
		if q.stopped {
			return 1
		}
		handle(toPacket(a))
		return 0
	}
	errFn := func(err error) int {
		if ctx.Err() != nil {
			return 1
		}
		if isClosed(err) {
			select {
			case fatal <- fmt.Errorf("nfq: receive: %w", err):
			default:
			}
			cancel()
			return 1
		}
		// ENOBUFS (should NETLINK_NO_ENOBUFS be refused), a verdict for
		// an unknown ID (ENOENT) and similar are reported here and are
		// not fatal.
		q.log.Warn("nfqueue receive error", "err", err)
		return 0
	}
	if err := q.nf.RegisterWithErrorFunc(ctx, hook, errFn); err != nil {
		return fmt.Errorf("nfq: bind queue %d: %w", q.cfg.Num, err)
	}
	q.log.Debug("queue bound")
	close(q.bound)
	<-ctx.Done()
	q.stopMu.Lock()
	q.stopped = true
	q.stopMu.Unlock()
	select {
	case err := <-fatal:
		return err
	default:
		return nil
	}
}

// setReadBuffer sets the socket's receive buffer to n bytes: with
// SO_RCVBUFFORCE, which CAP_NET_ADMIN (needed for the queue anyway) allows
// past net.core.rmem_max, else with SO_RCVBUF, which the kernel caps at
// rmem_max.
func setReadBuffer(raw syscall.RawConn, n int) error {
	var serr error
	err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
		if errors.Is(serr, unix.EPERM) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("nfq: set receive buffer to %d bytes: %w", n, err)
	}
	return nil
}

// ReadBuffer returns the socket's receive buffer as the kernel accounts
// it (SO_RCVBUF: twice the size set).
func (q *Queue) ReadBuffer() (int, error) {
	var (
		n    int
		gerr error
	)
	err := q.raw.Control(func(fd uintptr) {
		n, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	if err == nil {
		err = gerr
	}
	if err != nil {
		return 0, fmt.Errorf("nfq: read receive buffer size: %w", err)
	}
	return n, nil
}

// Bound is closed once Run has bound the queue: from then on the kernel
// delivers packets to it. Rules that feed the queue must wait for it, or
// their first packets find no listener (and are dropped, fail-closed).
func (q *Queue) Bound() <-chan struct{} { return q.bound }

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, unix.EBADF)
}

func toPacket(a nfqueue.Attribute) Packet {
	var p Packet
	if a.PacketID != nil {
		p.ID = *a.PacketID
	}
	if a.Mark != nil {
		p.Mark = *a.Mark
	}
	if a.Hook != nil {
		p.Hook = *a.Hook
	}
	if a.UID != nil && a.GID != nil {
		p.UID, p.GID, p.HasUID = *a.UID, *a.GID, true
	}
	if a.Payload != nil {
		p.Payload = *a.Payload
		p.Tuple, p.Info, p.ParseErr = packet.Parse(p.Payload)
	} else {
		p.ParseErr = errors.New("nfq: packet without payload")
	}
	return p
}

// Accept lets the held packet continue through the remaining rules.
func (q *Queue) Accept(id uint32) error {
	if err := q.verdict(id, nfqueue.NfAccept, 0); err != nil {
		return fmt.Errorf("nfq: accept packet %d: %w", id, err)
	}
	return nil
}

// Repeat re-injects the held packet at the start of the hook it was queued
// from, with its mark set to mark (0 leaves the mark unchanged). Bastion's
// iptables chain saves the mark on the connection and acts on it.
func (q *Queue) Repeat(id uint32, mark uint32) error {
	if err := q.verdict(id, nfqueue.NfRepeat, mark); err != nil {
		return fmt.Errorf("nfq: repeat packet %d with mark %#x: %w", id, mark, err)
	}
	return nil
}

// Drop discards the held packet.
func (q *Queue) Drop(id uint32) error {
	if err := q.verdict(id, nfqueue.NfDrop, 0); err != nil {
		return fmt.Errorf("nfq: drop packet %d: %w", id, err)
	}
	return nil
}

// Netlink numbers from linux/netfilter/nfnetlink_queue.h that x/sys/unix
// does not define.
const (
	nfqnlMsgVerdict = 1 // NFQNL_MSG_VERDICT
	nfqaVerdictHdr  = 2 // NFQA_VERDICT_HDR: struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }
	nfqaMark        = 3 // NFQA_MARK: __be32
)

// verdictLen is the length of a verdict message with a mark: the netlink
// header, the nfnetlink header, and the verdict and mark attributes.
const verdictLen = unix.NLMSG_HDRLEN + 4 + (unix.SizeofNlAttr + 8) + (unix.SizeofNlAttr + 4)

// verdict sends the verdict for packet id, with mark unless it is 0.
//
// The message is built and written here rather than by go-nfqueue's
// SetVerdict: every verdict there cost ~20 allocations, and the socket
// package under it starts and waits for a goroutine on each send (to watch
// a context that can never be cancelled). A verdict is one datagram of
// at most 40 bytes; no reply is asked for, and the kernel reports a refused
// verdict (an unknown packet ID) to Run's error callback, as before.
//
// Writes need no lock: each is one datagram, which the kernel handles
// whole. Unlike go-nfqueue's, they do not wait while go-nfqueue binds or
// unbinds the queue (a request and its acknowledgement): no packet can be
// held before the bind, and an unbind that a refused verdict's error reply
// disturbed does not matter, as closing the socket unbinds the queue.
func (q *Queue) verdict(id uint32, verdict int, mark uint32) error {
	m := make([]byte, 0, verdictLen)
	// struct nlmsghdr: length (filled in below), type, flags, sequence
	// and port ID; sequence 0, as no reply is matched to it, and port 0,
	// the kernel.
	m = binary.NativeEndian.AppendUint32(m, 0)
	m = binary.NativeEndian.AppendUint16(m, unix.NFNL_SUBSYS_QUEUE<<8|nfqnlMsgVerdict)
	m = binary.NativeEndian.AppendUint16(m, unix.NLM_F_REQUEST)
	m = binary.NativeEndian.AppendUint32(m, 0)
	m = binary.NativeEndian.AppendUint32(m, 0)
	// struct nfgenmsg: family (unused by verdicts), version, and the
	// queue number as res_id.
	m = append(m, unix.AF_UNSPEC, unix.NFNETLINK_V0)
	m = binary.BigEndian.AppendUint16(m, q.cfg.Num)
	// The attributes: struct nlattr (length, type), then the value.
	m = binary.NativeEndian.AppendUint16(m, unix.SizeofNlAttr+8)
	m = binary.NativeEndian.AppendUint16(m, nfqaVerdictHdr)
	m = binary.BigEndian.AppendUint32(m, uint32(verdict))
	m = binary.BigEndian.AppendUint32(m, id)
	if mark != 0 {
		m = binary.NativeEndian.AppendUint16(m, unix.SizeofNlAttr+4)
		m = binary.NativeEndian.AppendUint16(m, nfqaMark)
		m = binary.BigEndian.AppendUint32(m, mark)
	}
	binary.NativeEndian.PutUint32(m[0:4], uint32(len(m)))

	var werr error
	err := q.raw.Write(func(fd uintptr) bool {
		_, werr = unix.Write(int(fd), m)
		return werr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	if werr != nil {
		return os.NewSyscallError("write", werr)
	}
	return nil
}

// Close closes the socket, which unbinds the queue, and waits for the
// receive goroutine to end. It is safe to call more than once.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		if err := q.nf.Close(); err != nil && !isClosed(err) {
			q.closeErr = fmt.Errorf("nfq: close: %w", err)
		}
	})
	return q.closeErr
}

// slogAdapter lets go-nfqueue log through slog, at Debug: its messages
// (such as the unbind failing after the read deadline was forced) are
// internal details, and real failures reach us through the error callback.
type slogAdapter struct{ log *slog.Logger }

func (s slogAdapter) Debugf(format string, args ...any) {
	s.log.Debug(fmt.Sprintf(format, args...), "source", "go-nfqueue")
}

func (s slogAdapter) Errorf(format string, args ...any) {
	s.log.Debug(fmt.Sprintf(format, args...), "source", "go-nfqueue")
}
