package gtkclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Reconnection and polling intervals (the test harness shortens them).
type timing struct {
	backoffMin, backoffMax time.Duration
	statusEvery            time.Duration
	callTimeout            time.Duration
}

func defaultTiming() timing {
	return timing{backoffMin: 250 * time.Millisecond, backoffMax: 5 * time.Second,
		statusEvery: 2 * time.Second, callTimeout: 10 * time.Second}
}

// dial makes a client for the rules service's socket. gRPC connects
// lazily and reconnects by itself; calls fail fast while it is down.
func dial(socket string) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial rules service at %s: %w", socket, err)
	}
	return cc, nil
}

// connect keeps a session with the rules service until ctx ends,
// reconnecting with exponential backoff; it tells the UI about every
// change through a.post. It runs in its own goroutine.
func (a *app) connect(ctx context.Context) {
	backoff := a.timing.backoffMin
	for {
		connected, err := a.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = a.timing.backoffMin
		}
		a.log.Info("rules service unreachable, reconnecting", "err", err, "retry_in", backoff)
		retry := time.Now().Add(backoff)
		a.post(func() { a.disconnected(err, retry) })
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, a.timing.backoffMax)
	}
}

// session runs one connection: it reads the status, then watches prompts
// (unless prompts are off), the history and the status until one of them
// fails. connected reports whether the service answered at all.
func (a *app) session(ctx context.Context) (connected bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, a.timing.callTimeout)
	st, err := a.ui.GetStatus(cctx, &uiv1.GetStatusRequest{})
	cancel()
	if err != nil {
		return false, fmt.Errorf("get status: %w", err)
	}
	a.post(func() { a.connected(st) })
	a.checkDecideLater(ctx, st)

	g, gctx := errgroup.WithContext(ctx)
	if !a.cfg.NoPrompts {
		g.Go(func() error {
			stream, err := a.ui.WatchPrompts(gctx, &uiv1.WatchPromptsRequest{})
			if err != nil {
				return fmt.Errorf("watch prompts: %w", err)
			}
			for {
				ev, err := stream.Recv()
				if err != nil {
					return streamErr("watch prompts", err)
				}
				a.post(func() { a.promptEvent(ev) })
			}
		})
	}
	g.Go(func() error {
		stream, err := a.ui.WatchHistory(gctx, &uiv1.WatchHistoryRequest{})
		if err != nil {
			return fmt.Errorf("watch history: %w", err)
		}
		a.post(a.historyReset)
		for {
			e, err := stream.Recv()
			if err != nil {
				return streamErr("watch history", err)
			}
			a.post(func() { a.historyEntry(e) })
		}
	})
	g.Go(func() error {
		t := time.NewTicker(a.timing.statusEvery)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return gctx.Err()
			case <-t.C:
			}
			cctx, cancel := context.WithTimeout(gctx, a.timing.callTimeout)
			st, err := a.ui.GetStatus(cctx, &uiv1.GetStatusRequest{})
			cancel()
			if err != nil {
				return fmt.Errorf("get status: %w", err)
			}
			a.post(func() { a.statusUpdate(st) })
			a.checkDecideLater(gctx, st)
		}
	})
	return true, g.Wait()
}

func streamErr(op string, err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: the rules service closed the stream", op)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// call runs fn against the rules service in a goroutine and hands its
// result to done on the GTK thread; the UI never waits for the service.
func call[T any](a *app, fn func(ctx context.Context, ui uiv1.UIServiceClient) (T, error), done func(T, error)) {
	go func() {
		ctx, cancel := context.WithTimeout(a.ctx, a.timing.callTimeout)
		defer cancel()
		v, err := fn(ctx, a.ui)
		a.post(func() { done(v, err) })
	}()
}
