package procid

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/bastion-fw/bastion/internal/cgroup2"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/procid/procfs"
)

// Address families as the C programs store them in flow_key.family.
const (
	afInet  = 2
	afInet6 = 10
)

// Flags written by the C programs (bpf/procid.c).
const (
	flowFlagUIDMismatch = 0x8
	execFlagExeFilename = 0x8
)

// nsPerTick converts start_boottime to /proc's 10 ms stat ticks.
const nsPerTick = 10_000_000

// attribution holds the programs and maps that record flows.
type attribution struct {
	NfLocalOut     *ebpf.Program `ebpf:"nf_local_out"`
	SockopsConnect *ebpf.Program `ebpf:"sockops_connect"`
	Connect4       *ebpf.Program `ebpf:"connect4"`
	Connect6       *ebpf.Program `ebpf:"connect6"`
	Sendmsg4       *ebpf.Program `ebpf:"sendmsg4"`
	Sendmsg6       *ebpf.Program `ebpf:"sendmsg6"`
	Flows          *ebpf.Map     `ebpf:"flows"`
}

type execTracking struct {
	OnExec *ebpf.Program `ebpf:"on_exec"`
	OnFork *ebpf.Program `ebpf:"on_fork"`
	OnExit *ebpf.Program `ebpf:"on_exit"`
	Execs  *ebpf.Map     `ebpf:"execs"`
}

// bpfResolver answers from the maps the eBPF programs fill.
type bpfResolver struct {
	mech  Mechanism
	log   *slog.Logger
	proc  fs.FS
	netns uint32
	flows *ebpf.Map
	// recent is nf_local_out's memory-mapped copy of its newest flows,
	// read before flows; nil under MechSockOps.
	recent *recentFlows
	execs  *ebpf.Map // nil when exec tracking could not load
	// MechSockOps only, both nil when sock_diag could not be opened:
	// the entries of connected UDP sockets by cookie, and sock_diag to
	// find a flow's socket cookie.
	sockFlows *ebpf.Map
	diag      *procfs.Resolver
	closers   []interface{ Close() error }

	// bufs recycles lookup buffers so Resolve does not allocate them.
	bufs sync.Pool

	// images caches the exe, argv and parent of process images already
	// seen, so that a program's later connections cost one map lookup
	// (the flow) instead of two plus string building.
	imagesMu sync.Mutex
	images   map[imageKey]image

	// exes checks executables against the host's files; nil when the
	// agent's own mount namespace could not be read (nothing verifies).
	exes *exeChecker
}

// imageKey names one process image: execve bumps the leader's
// self_exec_id, and tgid with start time survives PID reuse.
type imageKey struct {
	tgid   uint32
	start  uint64
	execID uint64
}

type image struct {
	exe  string
	args []string // shared by every Process built from it; never modified
	ppid uint32
	// The executable's identity, checked once when the image was first
	// seen (a file deleted later does not change it).
	mntNS    uint32
	exeDev   uint32
	exeIno   uint64
	identity flow.ExeIdentity
}

// maxImages bounds the image cache; it is simply cleared when full.
const maxImages = 8192

type lookupBuf struct {
	key  procidFlowKey
	val  procidFlowValue
	exec procidExecValue
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
	r := &bpfResolver{mech: mech, log: log, proc: os.DirFS(cfg.ProcFS), netns: uint32(ino), images: make(map[imageKey]image)}
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
	var objs attribution
	var recentMap *ebpf.Map // MechNetfilterLink only
	var want any
	switch mech {
	case MechNetfilterLink:
		want = &struct {
			NfLocalOut  *ebpf.Program `ebpf:"nf_local_out"`
			Flows       *ebpf.Map     `ebpf:"flows"`
			RecentFlows *ebpf.Map     `ebpf:"recent_flows"`
		}{}
	case MechSockOps:
		want = &struct {
			SockopsConnect *ebpf.Program `ebpf:"sockops_connect"`
			Connect4       *ebpf.Program `ebpf:"connect4"`
			Connect6       *ebpf.Program `ebpf:"connect6"`
			Sendmsg4       *ebpf.Program `ebpf:"sendmsg4"`
			Sendmsg6       *ebpf.Program `ebpf:"sendmsg6"`
			Flows          *ebpf.Map     `ebpf:"flows"`
			SockFlows      *ebpf.Map     `ebpf:"sock_flows"`
		}{}
	default:
		return nil, fmt.Errorf("mechanism %q is not an eBPF mechanism", mech)
	}
	if err := spec.LoadAndAssign(want, nil); err != nil {
		return nil, fmt.Errorf("load eBPF programs: %w", err)
	}
	switch w := want.(type) {
	case *struct {
		NfLocalOut  *ebpf.Program `ebpf:"nf_local_out"`
		Flows       *ebpf.Map     `ebpf:"flows"`
		RecentFlows *ebpf.Map     `ebpf:"recent_flows"`
	}:
		objs.NfLocalOut, objs.Flows, recentMap = w.NfLocalOut, w.Flows, w.RecentFlows
		r.closers = append(r.closers, w.NfLocalOut, w.RecentFlows)
	case *struct {
		SockopsConnect *ebpf.Program `ebpf:"sockops_connect"`
		Connect4       *ebpf.Program `ebpf:"connect4"`
		Connect6       *ebpf.Program `ebpf:"connect6"`
		Sendmsg4       *ebpf.Program `ebpf:"sendmsg4"`
		Sendmsg6       *ebpf.Program `ebpf:"sendmsg6"`
		Flows          *ebpf.Map     `ebpf:"flows"`
		SockFlows      *ebpf.Map     `ebpf:"sock_flows"`
	}:
		objs = attribution{SockopsConnect: w.SockopsConnect, Connect4: w.Connect4, Connect6: w.Connect6,
			Sendmsg4: w.Sendmsg4, Sendmsg6: w.Sendmsg6, Flows: w.Flows}
		r.closers = append(r.closers, w.SockopsConnect, w.Connect4, w.Connect6, w.Sendmsg4, w.Sendmsg6, w.SockFlows)
		// Without sock_diag, connected UDP flows to one destination
		// are told apart by nothing: the later connect wins.
		if d, derr := procfs.New(cfg.NetNS, r.proc); derr != nil {
			log.Warn("sock_diag unavailable; UDP sockets connected to the same destination will be confused", "err", derr)
		} else {
			r.diag, r.sockFlows = d, w.SockFlows
			r.closers = append(r.closers, d)
		}
	}
	r.flows = objs.Flows
	r.closers = append(r.closers, objs.Flows)
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
		if err := r.attachNetfilter(cfg.NetNS, objs.NfLocalOut); err != nil {
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
			{objs.SockopsConnect, ebpf.AttachCGroupSockOps},
			{objs.Connect4, ebpf.AttachCGroupInet4Connect},
			{objs.Connect6, ebpf.AttachCGroupInet6Connect},
			{objs.Sendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
			{objs.Sendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
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
	var ex execTracking
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

func (r *bpfResolver) Mechanism() Mechanism { return r.mech }

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

// setKey fills k with t as the C programs write it for namespace ns.
func setKey(k *procidFlowKey, ns uint32, t flow.Tuple) {
	k.Netns = ns
	k.Proto = uint8(t.Proto)
	k.Family = afInet6
	if t.Dst.Unmap().Is4() {
		k.Family = afInet
	}
	// As16 maps IPv4 to ::ffff:a.b.c.d, the form the programs store.
	k.Saddr = t.Src.As16()
	k.Daddr = t.Dst.As16()
	k.Sport = t.SrcPort
	k.Dport = t.DstPort
	if t.Proto == flow.ICMP || t.Proto == flow.ICMPv6 {
		k.Dport = 0
	}
}

// Resolve implements Resolver.
func (r *bpfResolver) Resolve(t flow.Tuple) (flow.Process, error) {
	return r.resolveIn(r.netns, t)
}

func (r *bpfResolver) resolveIn(ns uint32, t flow.Tuple) (flow.Process, error) {
	b := r.bufs.Get().(*lookupBuf)
	defer r.bufs.Put(b)

	setKey(&b.key, ns, t)
	// unsafe.Pointer arguments go to the kernel as they are, without
	// cilium/ebpf's reflection-based marshalling: this lookup is on every
	// queued packet's path (the sizes are checked in openBPF).
	var err error
	if r.recent == nil || !r.recent.lookup(&b.key, &b.val) {
		key, val := unsafe.Pointer(&b.key), unsafe.Pointer(&b.val)
		err = r.flows.Lookup(key, val)
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) && t.Proto != flow.TCP {
		var byDst bool
		byDst, err = r.lookupSockAddr(b)
		if (byDst || errors.Is(err, ebpf.ErrKeyNotExist)) && t.Proto == flow.UDP && r.diag != nil && ns == r.netns {
			// A destination key stands for every unbound socket
			// connected there, and names the last one. If the
			// flow's socket is still open, the entry written for
			// that very socket names who connected it.
			if c, ok := r.diag.ConnectedUDPCookie(t); ok && r.sockFlows.Lookup(&c, &b.val) == nil {
				err = nil
			}
		}
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return flow.Process{}, fmt.Errorf("resolve %s: %w", t, ErrNotFound)
	}
	if err != nil {
		return flow.Process{}, fmt.Errorf("resolve %s: look up flow: %w", t, err)
	}

	v := &b.val
	p := flow.Process{
		PID:       v.Pid,
		TGID:      v.Tgid,
		UID:       v.Uid,
		GID:       v.Gid,
		Comm:      cString(v.Comm[:]),
		StartTime: v.StartBoottime,
		Source:    string(r.mech),
		Socket:    v.SkIno,
	}
	if v.Flags&flowFlagUIDMismatch != 0 {
		r.log.Debug("flow sent with a uid other than the socket owner's", "flow", t, "uid", v.Uid, "sk_uid", v.SkUid, "pid", v.Pid)
	}
	ik := imageKey{tgid: v.Tgid, start: v.StartBoottime, execID: v.ExecId}
	r.imagesMu.Lock()
	img, ok := r.images[ik]
	r.imagesMu.Unlock()
	if ok {
		p.Exe, p.Args, p.PPID = img.exe, img.args, img.ppid
		p.MntNS, p.ExeDev, p.ExeIno, p.ExeIdentity = img.mntNS, img.exeDev, img.exeIno, img.identity
		return p, nil
	}
	r.fillExec(&p, &b.exec)
	r.exes.check(&p)
	if p.Exe != "" {
		r.imagesMu.Lock()
		if len(r.images) >= maxImages {
			clear(r.images)
		}
		r.images[ik] = image{exe: p.Exe, args: p.Args, ppid: p.PPID,
			mntNS: p.MntNS, exeDev: p.ExeDev, exeIno: p.ExeIno, identity: p.ExeIdentity}
		r.imagesMu.Unlock()
	}
	return p, nil
}

// lookupSockAddr looks b.key up among the entries of the sock_addr programs,
// which know no source address: the port key (saddr ::) that sendmsg, or a
// connect on a bound socket, wrote, and the destination key (sport 0 too)
// that a connect on an unbound socket wrote. When both exist the later one
// wins. Port keys stay when their socket closes (nothing tells the programs,
// and the agent does not Forget), and a socket connected to the same
// destination since may have been given that port: its newer destination key
// is the only sign. A port key newer than the destination key is right: a
// socket cannot be given a port that another socket holds (SO_REUSEPORT
// aside), so the destination key's socket has another port. This is right
// wherever one destination key per destination, overwritten by every
// connect and sendmsg (the scheme before port keys), was right.
//
// byDst reports that the answer is a destination key.
func (r *bpfResolver) lookupSockAddr(b *lookupBuf) (byDst bool, err error) {
	b.key.Saddr = [16]byte{}
	if b.key.Sport == 0 {
		err = r.flows.Lookup(&b.key, &b.val)
		return err == nil, err
	}
	errPort := r.flows.Lookup(&b.key, &b.val)
	if errPort != nil && !errors.Is(errPort, ebpf.ErrKeyNotExist) {
		return false, errPort
	}
	port := b.val
	b.key.Sport = 0
	errDst := r.flows.Lookup(&b.key, &b.val)
	if errPort == nil && (errDst != nil || port.Ts >= b.val.Ts) {
		b.val = port
		return false, nil
	}
	return errDst == nil, errDst
}

// fillExec completes p with exe, argv and parent, from the exec map when it
// knows this very process (same start time), else from /proc while the
// process lives.
func (r *bpfResolver) fillExec(p *flow.Process, e *procidExecValue) {
	if r.execs != nil {
		if err := r.execs.Lookup(&p.TGID, e); err == nil && e.StartBoottime == p.StartTime {
			p.PPID = e.Ppid
			if e.Flags&execFlagExeFilename == 0 || (e.ExeLen > 0 && e.Exe[0] == '/') {
				p.Exe = cString(e.Exe[:])
			}
			p.Args = splitArgs(e.Args[:min(int(e.ArgsLen), len(e.Args))])
			p.MntNS, p.ExeDev, p.ExeIno = e.MntNs, e.ExeDev, e.ExeIno
			if p.Exe != "" {
				return
			}
		}
	}
	// Started before the agent (or exec tracking is off): ask /proc, and
	// believe it only if it is still the same process.
	pp, err := procfs.ReadProcess(r.proc, p.TGID)
	if err != nil || pp.StartTime != p.StartTime/nsPerTick*nsPerTick {
		return
	}
	p.Exe = pp.Exe
	p.MntNS, p.ExeDev, p.ExeIno = pp.MntNS, pp.ExeDev, pp.ExeIno
	if p.Args == nil {
		p.Args = pp.Args
	}
	if p.PPID == 0 {
		p.PPID = pp.PPID
	}
	r.remember(p, e)
}

// remember stores what /proc said about p in the exec map, keyed like the
// kernel's own entries, so that the next connection of a process that
// started before the agent costs a map lookup instead of a /proc read
// (~130 us). The kernel replaces the entry when the process execs.
func (r *bpfResolver) remember(p *flow.Process, e *procidExecValue) {
	if r.execs == nil || p.Exe == "" {
		return
	}
	*e = procidExecValue{Tgid: p.TGID, Ppid: p.PPID, StartBoottime: p.StartTime,
		ExeIno: p.ExeIno, ExeDev: p.ExeDev, MntNs: p.MntNS}
	e.ExeLen = uint16(copy(bytesOf(e.Exe[:len(e.Exe)-1]), p.Exe))
	args := bytesOf(e.Args[:])
	n := 0
	for _, a := range p.Args {
		if n+len(a)+1 > len(args) {
			break
		}
		n += copy(args[n:], a)
		args[n] = 0
		n++
	}
	e.ArgsLen = uint16(n)
	_ = r.execs.Update(&p.TGID, e, ebpf.UpdateNoExist) // the kernel's entry, if one appeared meanwhile, wins
}

// Forget implements Resolver. It drops the exact key and, for datagram
// flows under MechSockOps, the port key; destination keys may stand for
// other sockets' flows and stay.
func (r *bpfResolver) Forget(t flow.Tuple) {
	var k procidFlowKey
	setKey(&k, r.netns, t)
	_ = r.flows.Delete(&k) // ErrKeyNotExist is fine: LRU may have evicted it
	if r.mech == MechSockOps && t.Proto != flow.TCP && k.Sport != 0 {
		k.Saddr = [16]byte{}
		_ = r.flows.Delete(&k)
	}
}

// bytesOf views the C char array b as bytes without copying.
func bytesOf(b []int8) []byte {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), len(b))
}

func cString(b []int8) string {
	raw := bytesOf(b)
	if i := bytes.IndexByte(raw, 0); i >= 0 {
		raw = raw[:i]
	}
	return string(raw)
}

// splitArgs splits NUL-terminated arguments; a last argument cut off by the
// size limit is kept.
func splitArgs(b []int8) []string {
	if len(b) == 0 {
		return nil
	}
	raw := bytes.TrimSuffix(bytesOf(b), []byte{0})
	return strings.Split(string(raw), "\x00")
}
