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
	fsys fs.FS       // /proc
	exes *exeChecker // nil: nothing is verified

	// images caches what Complete read of each process image.
	images imageCache
}

func openProcFS(cfg Config) (*procfsResolver, error) {
	fsys := os.DirFS(cfg.ProcFS)
	r, err := procfs.New(cfg.NetNS, fsys)
	if err != nil {
		return nil, err
	}
	exes, err := newExeChecker(cfg.ProcFS)
	if err != nil {
		r.Close()
		return nil, err
	}
	return &procfsResolver{r: r, fsys: fsys, exes: exes}, nil
}

// Complete implements Completer from /proc, once per process image: with
// no exec tracking here, a process that has already exited when its
// kernel decision is recorded keeps no command line.
func (p *procfsResolver) Complete(proc *flow.Process, execID uint64) {
	k := imageKey{tgid: proc.TGID, start: proc.StartTime, execID: execID}
	img, ok := p.images.get(k)
	if !ok {
		pp, err := procfs.ReadProcess(p.fsys, proc.TGID)
		if err != nil || pp.StartTime != proc.StartTime/nsPerTick*nsPerTick {
			return
		}
		img = image{args: pp.Args, ppid: pp.PPID, mntNS: pp.MntNS}
		p.images.put(k, img)
	}
	proc.Args, proc.PPID = img.args, img.ppid
	if proc.MntNS == 0 {
		proc.MntNS = img.mntNS
	}
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
