package procid

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/procid/procfs"
)

// procfsResolver adapts procfs.Resolver to Resolver.
type procfsResolver struct {
	r    *procfs.Resolver
	exes *exeChecker // nil: nothing is verified
}

func openProcFS(cfg Config) (*procfsResolver, error) {
	r, err := procfs.New(cfg.NetNS, os.DirFS(cfg.ProcFS))
	if err != nil {
		return nil, err
	}
	exes, err := newExeChecker(cfg.ProcFS)
	if err != nil {
		r.Close()
		return nil, err
	}
	return &procfsResolver{r: r, exes: exes}, nil
}

func (p *procfsResolver) Resolve(t flow.Tuple) (flow.Process, error) {
	proc, err := p.r.Resolve(t)
	if err != nil {
		if errors.Is(err, procfs.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			// proc may still carry the socket owner's UID.
			return proc, fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return proc, err
	}
	proc.Source = string(MechProcFS)
	p.exes.check(&proc)
	return proc, nil
}

func (p *procfsResolver) Forget(flow.Tuple) {}

func (p *procfsResolver) Mechanism() Mechanism { return MechProcFS }

func (p *procfsResolver) Close() error { return p.r.Close() }
