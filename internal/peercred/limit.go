package peercred

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ConnLimits bound the connections a listener keeps open for non-root
// peers: PerUID for each UID, NonRoot for all of them together. Root's
// connections are not counted. Zero means no bound.
type ConnLimits struct {
	PerUID, NonRoot int
}

// LimitListener wraps a Unix socket listener so that it reads each new
// connection's peer credentials at accept and closes, at once, a
// connection beyond lim. The peer sees its connection closed; the refusal
// is logged at most every 10 seconds, and a gRPC client is told why.
//
// SECURITY: bounds what any local user can make the server hold with
// connections alone, before any protocol work.
func LimitListener(l net.Listener, lim ConnLimits, log *slog.Logger) *Listener {
	return &Listener{Listener: l, lim: lim, log: log, byUID: make(map[uint32]int), refusing: make(chan struct{}, maxRefusing)}
}

// Listener is a listener made by LimitListener.
type Listener struct {
	net.Listener
	lim ConnLimits
	log *slog.Logger
	// refusing holds a token per refused connection being told why.
	refusing chan struct{}

	mu      sync.Mutex
	byUID   map[uint32]int
	nonRoot int
	refused map[uint32]int // since the last log line
	lastLog time.Time
}

// Accept returns the next connection within the limits.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cred, err := Read(c)
		if err != nil {
			// Not a Unix socket peer: nothing to count it by, and the
			// server's handshake refuses it anyway.
			if errors.Is(err, errNotUnix) {
				return c, nil
			}
			c.Close()
			continue
		}
		if cred.IsRoot() {
			return c, nil
		}
		if reason := l.admit(cred); reason != "" {
			l.refuse(c, reason)
			l.logRefusal(cred, reason)
			continue
		}
		return &countedConn{Conn: c, release: func() { l.release(cred.UID) }}, nil
	}
}

func (l *Listener) admit(c Cred) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.lim.PerUID > 0 && l.byUID[c.UID] >= l.lim.PerUID:
		return fmt.Sprintf("uid %d has %d connections open, the limit", c.UID, l.byUID[c.UID])
	case l.lim.NonRoot > 0 && l.nonRoot >= l.lim.NonRoot:
		return fmt.Sprintf("non-root users have %d connections open, the limit", l.nonRoot)
	}
	l.byUID[c.UID]++
	l.nonRoot++
	return ""
}

func (l *Listener) release(uid uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byUID[uid]--; l.byUID[uid] <= 0 {
		delete(l.byUID, uid)
	}
	l.nonRoot--
}

// Open returns the connections open for uid (tests and status).
func (l *Listener) Open(uid uint32) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byUID[uid]
}

func (l *Listener) logRefusal(c Cred, reason string) {
	l.mu.Lock()
	if l.refused == nil {
		l.refused = make(map[uint32]int)
	}
	l.refused[c.UID]++
	if time.Since(l.lastLog) < 10*time.Second {
		l.mu.Unlock()
		return
	}
	l.lastLog = time.Now()
	n := l.refused[c.UID]
	clear(l.refused)
	l.mu.Unlock()
	l.log.Warn("refusing connections over a limit (logged at most every 10s)", "uid", c.UID, "pid", c.PID,
		"refused", n, "reason", reason)
}

// maxRefusing bounds the refused connections being told why at once;
// beyond it they are closed without a word.
const maxRefusing = 8

// refuse closes c, first telling its client why if fewer than maxRefusing
// are being told: each takes a goroutine for at most refuseTime.
func (l *Listener) refuse(c net.Conn, reason string) {
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		refuse(c, reason)
	}()
}

// refuseTime bounds how long a refused connection is kept.
const refuseTime = time.Second

// refuse answers the first call of an HTTP/2 (gRPC) client with status
// RESOURCE_EXHAUSTED and the reason, says GOAWAY and closes the
// connection, all within refuseTime.
func refuse(c net.Conn, reason string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(refuseTime))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
		return
	}
	fr := http2.NewFramer(c, c)
	if fr.WriteSettings() != nil {
		return
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		h, ok := f.(*http2.HeadersFrame)
		if !ok {
			continue
		}
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		for _, hf := range []hpack.HeaderField{
			{Name: ":status", Value: "200"},
			{Name: "content-type", Value: "application/grpc"},
			{Name: "grpc-status", Value: "8"}, // RESOURCE_EXHAUSTED
			{Name: "grpc-message", Value: url.PathEscape("connection refused: " + reason)},
		} {
			enc.WriteField(hf)
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})
		fr.WriteGoAway(h.StreamID, http2.ErrCodeEnhanceYourCalm, []byte(reason))
		return
	}
}

// countedConn gives its place back when closed (once).
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// SyscallConn lets Read reach the socket.
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(*net.UnixConn).SyscallConn()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
