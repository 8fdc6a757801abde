package uiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/bastion-fw/bastion/internal/store"
	"github.com/bastion-fw/bastion/internal/unixsock"
)

// Periods of the service's housekeeping.
const (
	hitFlushPeriod = 5 * time.Second
	sweepPeriod    = time.Minute
)

// Run runs the rules service until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	return run(ctx, cfg, log, options{})
}

func run(ctx context.Context, cfg Config, log *slog.Logger, o options) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	log = log.With("component", "uiserver")
	uid := uint32(os.Getuid())

	st, err := store.Open(filepath.Join(cfg.DataDir, DBFile))
	if err != nil {
		return fmt.Errorf("open rules store: %w", err)
	}
	defer st.Close()

	g, gctx := errgroup.WithContext(ctx)
	svc, err := newService(gctx, cfg, log, st, uid, o)
	if err != nil {
		return err
	}
	l, err := listen(cfg.Socket, uid)
	if err != nil {
		return err
	}
	defer os.Remove(cfg.Socket)
	srv := newGRPCServer(svc, uid)
	if o.started != nil {
		o.started(svc)
	}
	log.Info("rules service running", "socket", cfg.Socket, "agent_socket", cfg.AgentSocket, "store", st.Path(), "uid", uid)

	g.Go(func() error { return svc.runAgentLink(gctx) })
	g.Go(func() error {
		if err := srv.Serve(l); err != nil {
			return fmt.Errorf("serve API: %w", err)
		}
		return nil
	})
	g.Go(func() error { return svc.housekeeping(gctx) })
	g.Go(func() error { return svc.runStats(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		// Stop, not GracefulStop: watch streams never end by themselves.
		srv.Stop()
		return nil
	})
	runErr := g.Wait()
	if err := svc.flushHits(context.Background()); err != nil {
		runErr = errors.Join(runErr, err)
	}
	if err := svc.flushStats(context.Background()); err != nil {
		runErr = errors.Join(runErr, err)
	}
	log.Info("rules service stopped")
	return runErr
}

// housekeeping stores rule hits every few seconds and removes expired
// rules, until ctx ends.
func (s *Service) housekeeping(ctx context.Context) error {
	flush := time.NewTicker(hitFlushPeriod)
	defer flush.Stop()
	sweep := time.NewTicker(sweepPeriod)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-flush.C:
			if err := s.flushHits(ctx); err != nil {
				s.log.Warn("store rule hits", "err", err)
			}
		case <-sweep.C:
			if err := s.sweepExpired(ctx); err != nil {
				s.log.Warn("remove expired rules", "err", err)
			}
		}
	}
}

// listen creates the API socket, readable and writable by the user only.
func listen(path string, uid uint32) (net.Listener, error) {
	if err := prepareSocketDir(filepath.Dir(path), uid); err != nil {
		return nil, err
	}
	if err := unixsock.RemoveStale(path, "bastion-uiserver"); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

// prepareSocketDir makes sure the socket's directory exists. A directory
// named "bastion" (the default, $XDG_RUNTIME_DIR/bastion) is Bastion's own:
// it is created 0700, tightened to 0700 if it exists with other modes, and
// refused if it is not a real directory owned by the user. Another
// directory given with --socket is used as it is; every call is authorised
// by SO_PEERCRED anyway.
func prepareSocketDir(dir string, uid uint32) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	if filepath.Base(dir) != "bastion" {
		return nil
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("socket directory %s is not a directory", dir)
	}
	// SECURITY: a directory someone else owns could be swapped or watched
	// by them; refuse it rather than serve the user's rules from it.
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != uid {
		return fmt.Errorf("socket directory %s is owned by another user; remove it", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("chmod socket directory: %w", err)
		}
	}
	return nil
}
