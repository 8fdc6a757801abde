package agent

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/bastion-fw/bastion/internal/peercred"
	"github.com/bastion-fw/bastion/internal/testenv"
)

func callCtx(uid uint32) (context.Context, context.CancelFunc) {
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: peercred.AuthInfo{Cred: peercred.Cred{UID: uid, PID: 9}}})
	return context.WithCancel(ctx)
}

func TestCallLimitsPerUID(t *testing.T) {
	l := newCallLimits(slog.New(slog.NewTextHandler(io.Discard, nil)))
	e, _, _ := newTestEngine(t)
	srv := newGRPCServer(e, staticStatus{}, nil, &udpReuseState{}, nil, nil, nil)
	l.setServices(srv.GetServiceInfo())
	watch := &tap.Info{FullMethodName: "/bastion.agent.v1.AgentService/WatchDecisions"}
	unary := &tap.Info{FullMethodName: "/bastion.agent.v1.AgentService/GetStatus"}
	setRules := &tap.Info{FullMethodName: setRulesMethod}

	admit := func(uid uint32, info *tap.Info) (context.Context, context.CancelFunc, error) {
		ctx, cancel := callCtx(uid)
		ctx, err := l.tap(ctx, info)
		if err != nil {
			cancel()
		}
		return ctx, cancel, err
	}
	refused := func(err error) bool { return status.Code(err) == codes.ResourceExhausted }

	// Streams: maxStreamsPerUID open, each with its request received.
	var cancels []context.CancelFunc
	for i := range maxStreamsPerUID {
		ctx, cancel, err := admit(1001, watch)
		if err != nil {
			t.Fatalf("stream %d refused: %v", i, err)
		}
		requestReceived(ctx)
		cancels = append(cancels, cancel)
	}
	if _, _, err := admit(1001, watch); !refused(err) {
		t.Fatalf("stream over the bound: %v, want ResourceExhausted", err)
	}
	// Other UIDs and root are not affected; unary calls are counted apart.
	for _, uid := range []uint32{1000, 0} {
		ctx, cancel, err := admit(uid, watch)
		if err != nil {
			t.Fatalf("uid %d's stream refused: %v", uid, err)
		}
		requestReceived(ctx)
		defer cancel()
	}
	ctx, cancel, err := admit(1001, unary)
	if err != nil {
		t.Fatalf("unary call refused while streams are at the bound: %v", err)
	}
	requestReceived(ctx)
	cancel()
	// A stream that ends frees its place.
	cancels[0]()
	testenv.WaitFor(t, 5*time.Second, "a stream slot of uid 1001 freed", func() bool { s, _ := l.inFlight(1001); return s < maxStreamsPerUID })
	ctx, cancel, err = admit(1001, watch)
	if err != nil {
		t.Fatalf("stream after one ended: %v", err)
	}
	requestReceived(ctx)
	defer cancel()
	for _, c := range cancels[1:] {
		defer c()
	}

	// Requests being received: maxReceivingPerUID at once.
	ctx1, cancel1, err := admit(1000, setRules)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel1()
	if _, _, err := admit(1000, setRules); !refused(err) {
		t.Fatalf("second SetRules in flight: %v, want ResourceExhausted", err)
	}
	ctx2, cancel2, err := admit(1000, unary)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel2()
	if _, _, err := admit(1000, unary); !refused(err) {
		t.Fatalf("third request being received: %v, want ResourceExhausted", err)
	}
	requestReceived(ctx1)
	requestReceived(ctx2)
	if _, cancel, err := admit(1000, unary); err != nil {
		t.Fatalf("request after the others were received: %v", err)
	} else {
		cancel()
	}
}
