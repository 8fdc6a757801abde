package procid

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/bastion-fw/bastion/internal/cgroup2"
	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/procid/procfs"
)

// The objects each part loads, as cilium/ebpf's examples name theirs
// (bpfObjects), for spec.LoadAndAssign, which loads only what a struct
// names: not the generated procidObjects, as a kernel may lack a program
// type that another part needs.

// netfilterObjects record flows for MechNetfilterLink.
type netfilterObjects struct {
	NfLocalOut  *ebpf.Program `ebpf:"nf_local_out"`
	Flows       *ebpf.Map     `ebpf:"flows"`
	RecentFlows *ebpf.Map     `ebpf:"recent_flows"`
}

// sockopsObjects record flows for MechSockOps.
type sockopsObjects struct {
	SockopsConnect *ebpf.Program `ebpf:"sockops_connect"`
	Connect4       *ebpf.Program `ebpf:"connect4"`
	Connect6       *ebpf.Program `ebpf:"connect6"`
	Sendmsg4       *ebpf.Program `ebpf:"sendmsg4"`
	Sendmsg6       *ebpf.Program `ebpf:"sendmsg6"`
	Flows          *ebpf.Map     `ebpf:"flows"`
	SockFlows      *ebpf.Map     `ebpf:"sock_flows"`
}

// execObjects track exec, fork and exit, for either mechanism.
type execObjects struct {
	OnExec *ebpf.Program `ebpf:"on_exec"`
	OnFork *ebpf.Program `ebpf:"on_fork"`
	OnExit *ebpf.Program `ebpf:"on_exit"`
	Execs  *ebpf.Map     `ebpf:"execs"`
}

// openBPF loads and attaches the programs for mech (MechNetfilterLink or
// MechSockOps).
func openBPF(cfg Config, mech Mechanism, log *slog.Logger) (_ *bpfResolver, err error) {
	nsFile := cfg.NetNS
	if nsFile == nil {
		f, err := netns.Open("")
		if err != nil {
			return nil, err
		}
		defer f.Close()
		nsFile = f
	}
	ino, err := netns.Inode(nsFile)
	if err != nil {
		return nil, err
	}

	spec, err := loadProcid()
	if err != nil {
		return nil, fmt.Errorf("load eBPF spec: %w", err)
	}
	r := &bpfResolver{mech: mech, log: log, proc: os.DirFS(cfg.ProcFS), netns: uint32(ino)}
	if exes, xerr := newExeChecker(cfg.ProcFS); xerr != nil {
		log.Warn("executables cannot be checked against the host's files; path rules will match nothing", "err", xerr)
	} else {
		r.exes = exes
	}
	r.bufs.New = func() any { return new(lookupBuf) }
	defer func() {
		if err != nil {
			r.Close()
		}
	}()

	// Load only what mech needs: the netfilter program type does not
	// exist before 6.4, and loading it would fail the sockops fallback.
	var (
		nf        netfilterObjects // MechNetfilterLink
		so        sockopsObjects   // MechSockOps
		flows     *ebpf.Map
		recentMap *ebpf.Map // MechNetfilterLink only
	)
	switch mech {
	case MechNetfilterLink:
		if err := spec.LoadAndAssign(&nf, nil); err != nil {
			return nil, fmt.Errorf("load eBPF programs: %w", err)
		}
		flows, recentMap = nf.Flows, nf.RecentFlows
		r.closers = append(r.closers, nf.NfLocalOut, nf.RecentFlows)
	case MechSockOps:
		if err := spec.LoadAndAssign(&so, nil); err != nil {
			return nil, fmt.Errorf("load eBPF programs: %w", err)
		}
		flows = so.Flows
		r.closers = append(r.closers, so.SockopsConnect, so.Connect4, so.Connect6, so.Sendmsg4, so.Sendmsg6, so.SockFlows)
		// Without sock_diag, connected UDP flows to one destination
		// are told apart by nothing: the later connect wins.
		if d, derr := procfs.New(cfg.NetNS, r.proc); derr != nil {
			log.Warn("sock_diag unavailable; UDP sockets connected to the same destination will be confused", "err", derr)
		} else {
			r.diag, r.sockFlows = d, so.SockFlows
			r.closers = append(r.closers, d)
		}
	default:
		return nil, fmt.Errorf("mechanism %q is not an eBPF mechanism", mech)
	}
	r.flows = flows
	r.closers = append(r.closers, flows)
	// Lookups pass the Go structs' memory to the kernel as it is (see
	// resolveIn): they must have the programs' layout exactly.
	if ks, vs := r.flows.KeySize(), r.flows.ValueSize(); ks != uint32(unsafe.Sizeof(procidFlowKey{})) || vs != uint32(unsafe.Sizeof(procidFlowValue{})) {
		return nil, fmt.Errorf("flows map is %d/%d bytes, Go types are %d/%d: regenerate with go generate ./internal/procid",
			ks, vs, unsafe.Sizeof(procidFlowKey{}), unsafe.Sizeof(procidFlowValue{}))
	}
	if recentMap != nil {
		if r.recent, err = openRecentFlows(recentMap); err != nil {
			return nil, err
		}
		r.closers = append(r.closers, r.recent)
	}

	switch mech {
	case MechNetfilterLink:
		if err := r.attachNetfilter(cfg.NetNS, nf.NfLocalOut); err != nil {
			return nil, err
		}
	case MechSockOps:
		path := cfg.CgroupPath
		if path == "" {
			if path, err = cgroup2.Mount(); err != nil {
				if errors.Is(err, cgroup2.ErrNotMounted) {
					err = fmt.Errorf("%w; mount one or run with --mechanism=procfs", err)
				}
				return nil, err
			}
		}
		for _, a := range []struct {
			prog *ebpf.Program
			typ  ebpf.AttachType
		}{
			{so.SockopsConnect, ebpf.AttachCGroupSockOps},
			{so.Connect4, ebpf.AttachCGroupInet4Connect},
			{so.Connect6, ebpf.AttachCGroupInet6Connect},
			{so.Sendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
			{so.Sendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
		} {
			l, err := link.AttachCgroup(link.CgroupOptions{Path: path, Attach: a.typ, Program: a.prog})
			if err != nil {
				return nil, fmt.Errorf("attach %s to cgroup %s: %w", a.typ, path, err)
			}
			r.closers = append(r.closers, l)
		}
	}

	// Exec tracking is an improvement, not a requirement: without it,
	// exe and argv come from /proc while the process lives.
	if err := r.loadExecTracking(spec); err != nil {
		log.Warn("exec tracking unavailable; executable paths of short-lived processes will be missing", "err", err)
	}
	return r, nil
}

// attachNetfilter attaches prog at LOCAL_OUT in ns; a nil ns is the
// caller's own namespace, attached in place (entering a namespace, even
// one's own, needs CAP_SYS_ADMIN, which the agent's unit does not grant).
func (r *bpfResolver) attachNetfilter(ns *os.File, prog *ebpf.Program) error {
	return netns.Do(ns, func() error {
		for _, pf := range []link.NetfilterProtocolFamily{link.NetfilterProtoIPv4, link.NetfilterProtoIPv6} {
			l, err := attachNetfilterFamily(r.log, prog, pf)
			if err != nil {
				return err
			}
			r.closers = append(r.closers, l)
		}
		return nil
	})
}

func (r *bpfResolver) loadExecTracking(spec *ebpf.CollectionSpec) error {
	var ex execObjects
	opts := &ebpf.CollectionOptions{}
	if err := spec.LoadAndAssign(&ex, opts); err != nil {
		return fmt.Errorf("load exec tracking: %w", err)
	}
	progs := []*ebpf.Program{ex.OnExec, ex.OnFork, ex.OnExit}
	closeAll := func() {
		for _, p := range progs {
			p.Close()
		}
		ex.Execs.Close()
	}
	var links []link.Link
	for _, p := range progs {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			for _, l := range links {
				l.Close()
			}
			closeAll()
			return fmt.Errorf("attach %s: %w", p, err)
		}
		links = append(links, l)
	}
	for _, l := range links {
		r.closers = append(r.closers, l)
	}
	for _, p := range progs {
		r.closers = append(r.closers, p)
	}
	r.closers = append(r.closers, ex.Execs)
	r.execs = ex.Execs
	return nil
}

// Close detaches and unloads everything. Links first, so that no program
// runs against a closed map.
func (r *bpfResolver) Close() error {
	var errs []error
	for _, c := range r.closers {
		if _, ok := c.(link.Link); ok {
			errs = append(errs, c.Close())
		}
	}
	for _, c := range r.closers {
		if _, ok := c.(link.Link); !ok {
			errs = append(errs, c.Close())
		}
	}
	r.closers = nil
	return errors.Join(errs...)
}
