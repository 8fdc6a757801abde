package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/bastion-fw/bastion/internal/peercred"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// The API's resource bounds. SECURITY: any local user may connect to the
// agent, so what one non-root UID can make it hold is bounded: its
// connections (apiConnLimits), its calls in flight, of which long-lived
// streams are counted apart, and the requests it is sending at once (a
// request is read whole before any handler sees it). Root is not bounded.
// docs/security.md lists each bound.
const (
	// maxRecvMsgSize fits the largest legitimate request, a SetRules of
	// maxRulesPerUID rules of a few hundred bytes each.
	maxRecvMsgSize = 4 << 20
	// maxStreamsPerConn bounds the HTTP/2 streams of one connection.
	maxStreamsPerConn = 16
	// maxStreamsPerUID bounds one UID's open streaming calls
	// (WatchPending, WatchDecisions, health Watch, reflection). A rules
	// service uses two, bastionctl one or two.
	maxStreamsPerUID = 16
	// maxCallsPerUID bounds one UID's unary calls in flight.
	maxCallsPerUID = 16
	// maxReceivingPerUID bounds one UID's calls whose request is still
	// being received or decoded, each up to maxRecvMsgSize.
	maxReceivingPerUID = 2
	// maxSetRulesPerUID bounds one UID's SetRules calls in flight: a rule
	// set is compiled while the one it replaces is still in use.
	maxSetRulesPerUID = 1
	// maxConnsPerUID and maxConnsNonRoot bound the API connections of one
	// non-root UID and of all of them.
	maxConnsPerUID  = 16
	maxConnsNonRoot = 512
)

// apiConnLimits are the connection bounds of the API listener.
var apiConnLimits = peercred.ConnLimits{PerUID: maxConnsPerUID, NonRoot: maxConnsNonRoot}

// callLimits counts each non-root UID's calls in flight.
type callLimits struct {
	log *slog.Logger
	// streaming names the streaming methods ("/service/method"); filled
	// in once the services are registered, before the server serves.
	streaming map[string]bool

	mu    sync.Mutex
	byUID map[uint32]*uidCalls
	// lastLog rate-limits the log lines about refused calls.
	lastLog time.Time
}

type uidCalls struct {
	streams, calls, receiving, setRules int
}

// setRulesMethod is the one method whose requests are big by design.
var setRulesMethod = "/" + agentv1.AgentService_ServiceDesc.ServiceName + "/SetRules"

func newCallLimits(log *slog.Logger) *callLimits {
	return &callLimits{log: log, byUID: make(map[uint32]*uidCalls)}
}

// serverOptions are the gRPC server's bounds and the hooks that apply
// callLimits.
func (l *callLimits) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.MaxConcurrentStreams(maxStreamsPerConn),
		// Clients may ping at most every 5 minutes, and only with calls
		// open; others are told to go away (ENHANCE_YOUR_CALM). Our own
		// clients do not ping: the socket is local.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Minute}),
		// A connection without calls for 10 minutes is closed; clients
		// reconnect when they need to.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 10 * time.Minute}),
		// A connection that has not finished its handshake within 10 s
		// is closed.
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.InTapHandle(l.tap),
		grpc.UnaryInterceptor(l.unary),
		grpc.StreamInterceptor(l.stream),
	}
}

// setServices records which methods stream.
func (l *callLimits) setServices(info map[string]grpc.ServiceInfo) {
	l.streaming = make(map[string]bool)
	for svc, si := range info {
		for _, m := range si.Methods {
			if m.IsServerStream || m.IsClientStream {
				l.streaming["/"+svc+"/"+m.Name] = true
			}
		}
	}
}

type receivingKey struct{}

// receiving is put in a call's context by tap; done marks the request
// received (once).
type receiving struct{ done func() }

// tap admits or refuses a new call before its request is read. It runs on
// the connection's reader and must not block.
func (l *callLimits) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	c, err := peercred.FromContext(ctx)
	if err != nil || c.IsRoot() {
		return ctx, nil // the handlers refuse calls without credentials
	}
	streaming := l.streaming[info.FullMethodName]
	l.mu.Lock()
	u := l.byUID[c.UID]
	if u == nil {
		u = &uidCalls{}
		l.byUID[c.UID] = u
	}
	var refusal string
	switch {
	case streaming && u.streams >= maxStreamsPerUID:
		refusal = fmt.Sprintf("uid %d already has %d streams open, the limit: close one and retry", c.UID, u.streams)
	case !streaming && u.calls >= maxCallsPerUID:
		refusal = fmt.Sprintf("uid %d already has %d calls in flight, the limit: retry when one ends", c.UID, u.calls)
	case info.FullMethodName == setRulesMethod && u.setRules >= maxSetRulesPerUID:
		refusal = fmt.Sprintf("uid %d already has a SetRules in flight: retry when it ends", c.UID)
	case u.receiving >= maxReceivingPerUID:
		refusal = fmt.Sprintf("uid %d is already sending %d requests, the limit: retry when one is received", c.UID, u.receiving)
	}
	if refusal != "" {
		if u.streams+u.calls+u.receiving == 0 {
			delete(l.byUID, c.UID)
		}
		logIt := time.Since(l.lastLog) >= 10*time.Second
		if logIt {
			l.lastLog = time.Now()
		}
		l.mu.Unlock()
		if logIt {
			l.log.Warn("refusing API calls over a limit (logged at most every 10s)", "uid", c.UID, "pid", c.PID,
				"method", info.FullMethodName, "reason", refusal)
		}
		return ctx, status.Error(codes.ResourceExhausted, refusal)
	}
	setRules := info.FullMethodName == setRulesMethod
	if streaming {
		u.streams++
	} else {
		u.calls++
	}
	if setRules {
		u.setRules++
	}
	u.receiving++
	l.mu.Unlock()

	var once sync.Once
	received := func() {
		once.Do(func() {
			l.mu.Lock()
			u.receiving--
			l.mu.Unlock()
		})
	}
	// The call's context ends with the call, however it ends (even
	// before a handler runs).
	context.AfterFunc(ctx, func() {
		received()
		l.mu.Lock()
		defer l.mu.Unlock()
		if streaming {
			u.streams--
		} else {
			u.calls--
		}
		if setRules {
			u.setRules--
		}
		if u.streams+u.calls+u.receiving == 0 && l.byUID[c.UID] == u {
			delete(l.byUID, c.UID)
		}
	})
	return context.WithValue(ctx, receivingKey{}, receiving{done: received}), nil
}

// requestReceived marks the call's request as received.
func requestReceived(ctx context.Context) {
	if r, ok := ctx.Value(receivingKey{}).(receiving); ok {
		r.done()
	}
}

// unary runs after the request has been read and decoded.
func (l *callLimits) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	requestReceived(ctx)
	return h(ctx, req)
}

// stream marks the request received after the stream's first message.
func (l *callLimits) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, &firstRecv{ServerStream: ss})
}

type firstRecv struct {
	grpc.ServerStream
	seen bool
}

func (s *firstRecv) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if !s.seen {
		s.seen = true
		requestReceived(s.Context())
	}
	return err
}

// inFlight returns uid's open streams and calls (tests).
func (l *callLimits) inFlight(uid uint32) (streams, calls int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if u := l.byUID[uid]; u != nil {
		return u.streams, u.calls
	}
	return 0, 0
}
