package uiserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// Reconnection backoff of the agent link.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	// setRulesTimeout bounds one SetRules call.
	setRulesTimeout = 10 * time.Second
)

// runAgentLink keeps the service connected to the agent until ctx ends,
// reconnecting with backoff. The agent keeps no state for us across its
// restarts, so every connection starts by pushing all rules again.
func (s *Service) runAgentLink(ctx context.Context) error {
	wait := minBackoff
	wasUp := false
	for {
		up, err := s.agentSession(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case up:
			s.log.Warn("lost the agent; reconnecting", "socket", s.cfg.AgentSocket, "err", err)
			wait = minBackoff
		case wasUp || wait == minBackoff:
			s.log.Warn("cannot reach the agent; retrying", "socket", s.cfg.AgentSocket, "err", err)
		default:
			s.log.Debug("cannot reach the agent; retrying", "socket", s.cfg.AgentSocket, "retry_in", wait, "err", err)
		}
		wasUp = up
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, maxBackoff)
	}
}

// agentSession runs one connection to the agent: push the rules, watch
// pending connections and decisions, push the rules again whenever they
// change. up reports whether the link got as far as watching.
func (s *Service) agentSession(ctx context.Context) (up bool, err error) {
	conn, err := grpc.NewClient("unix://"+s.cfg.AgentSocket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: minBackoff, Multiplier: 2, MaxDelay: maxBackoff},
			MinConnectTimeout: 2 * time.Second,
		}))
	if err != nil {
		return false, fmt.Errorf("agent client: %w", err)
	}
	defer conn.Close()
	c := agentv1.NewAgentServiceClient(conn)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Any change made before this push is in it.
	select {
	case <-s.rulesDirty:
	default:
	}
	if err := s.pushRules(sctx, c); err != nil {
		return false, err
	}
	pend, err := c.WatchPending(sctx, &agentv1.WatchPendingRequest{})
	if err != nil {
		return false, fmt.Errorf("watch pending connections: %w", err)
	}
	dec, err := c.WatchDecisions(sctx, &agentv1.WatchDecisionsRequest{})
	if err != nil {
		return false, fmt.Errorf("watch decisions: %w", err)
	}
	s.setAgent(c)
	defer s.setAgent(nil)
	s.log.Info("connected to the agent", "socket", s.cfg.AgentSocket)

	g, gctx := errgroup.WithContext(sctx)
	g.Go(func() error {
		for {
			ev, err := pend.Recv()
			if err != nil {
				return fmt.Errorf("pending connections: %w", err)
			}
			s.onPending(c, ev)
		}
	})
	g.Go(func() error {
		for {
			ev, err := dec.Recv()
			if err != nil {
				if status.Code(err) != codes.ResourceExhausted || gctx.Err() != nil {
					return fmt.Errorf("decisions: %w", err)
				}
				// This stream fell behind and the agent dropped it, not
				// the link: watch again, so that the rules and prompts
				// go on. The replay brings back what the agent kept.
				s.log.Warn("fell behind the agent's decisions; some are not in the history; watching again", "err", err)
				if dec, err = c.WatchDecisions(sctx, &agentv1.WatchDecisionsRequest{}); err != nil {
					return fmt.Errorf("watch decisions: %w", err)
				}
				continue
			}
			s.onDecision(ev)
		}
	})
	g.Go(func() error {
		s.watchTraffic(gctx, c)
		return nil
	})
	g.Go(func() error {
		for {
			select {
			case <-gctx.Done():
				cancel() // ends both streams when either fails
				return nil
			case <-s.rulesDirty:
				if err := s.pushRules(gctx, c); err != nil {
					return err
				}
			}
		}
	})
	err = g.Wait()
	if err == nil {
		err = errors.New("link closed")
	}
	return true, err
}

func (s *Service) pushRules(ctx context.Context, c agentv1.AgentServiceClient) error {
	rs, v := s.agentRules()
	ctx, cancel := context.WithTimeout(ctx, setRulesTimeout)
	defer cancel()
	resp, err := c.SetRules(ctx, &agentv1.SetRulesRequest{Rules: rs})
	switch status.Code(err) {
	case codes.OK:
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded, codes.Internal:
		return fmt.Errorf("push rules to the agent: %w", err)
	default:
		// The agent understood and refused (too many rules, an older
		// agent without SetRules). Staying connected is still worth it:
		// the connections it asks about are matched here.
		s.log.Error("the agent refused the rules; they apply only to connections it asks about",
			"rules", len(rs), "err", err)
		s.markPushed(v) // nothing more will come of them
		return nil
	}
	s.log.Debug("pushed rules to the agent", "rules", len(rs), "active", resp.GetActive())
	s.markPushed(v)
	return nil
}

// watchTraffic records the agent's WatchTraffic stream until ctx ends.
// The stream is not the link: when it fails it is watched again (after a
// backoff), and an agent without it (an older one) leaves the link up with
// no byte counts.
func (s *Service) watchTraffic(ctx context.Context, c agentv1.AgentServiceClient) {
	wait := minBackoff
	for {
		err := s.trafficStream(ctx, c, func() { wait = minBackoff })
		if ctx.Err() != nil {
			return
		}
		if status.Code(err) == codes.Unimplemented {
			s.log.Info("the agent does not report traffic (an older agent?); programs are shown without byte counts", "err", err)
			return
		}
		s.log.Warn("lost the agent's traffic stream; watching it again", "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, maxBackoff)
	}
}

// trafficStream watches traffic once, until the stream fails; received is
// called on the first batch.
func (s *Service) trafficStream(ctx context.Context, c agentv1.AgentServiceClient, received func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.WatchTraffic(ctx, &agentv1.WatchTrafficRequest{})
	if err != nil {
		return fmt.Errorf("watch traffic: %w", err)
	}
	for first := true; ; first = false {
		tb, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("traffic: %w", err)
		}
		if first {
			received()
		}
		s.onTraffic(tb)
	}
}
