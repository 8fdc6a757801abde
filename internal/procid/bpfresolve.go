package procid

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/bastion-fw/bastion/internal/flow"
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
	images imageCache

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

// imageCache holds process images by key, for any goroutine; the zero
// value is ready.
type imageCache struct {
	mu sync.Mutex
	m  map[imageKey]image
}

func (c *imageCache) get(k imageKey) (image, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	img, ok := c.m[k]
	return img, ok
}

func (c *imageCache) put(k imageKey, img image) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxImages {
		c.m = make(map[imageKey]image)
	}
	c.m[k] = img
}

type lookupBuf struct {
	key  procidFlowKey
	val  procidFlowValue
	exec procidExecValue
}

func (r *bpfResolver) Mechanism() Mechanism { return r.mech }

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
		PID:          v.Pid,
		TGID:         v.Tgid,
		UID:          v.Uid,
		GID:          v.Gid,
		Comm:         cString(v.Comm[:]),
		StartTime:    v.StartBoottime,
		Source:       string(r.mech),
		Socket:       v.SkIno,
		SocketCookie: v.SkCookie,
	}
	if v.Flags&flowFlagUIDMismatch != 0 {
		r.log.Debug("flow sent with a uid other than the socket owner's", "flow", t, "uid", v.Uid, "sk_uid", v.SkUid, "pid", v.Pid)
	}
	img := r.image(imageKey{tgid: v.Tgid, start: v.StartBoottime, execID: v.ExecId}, &p, &b.exec)
	p.Exe, p.Args, p.PPID = img.exe, img.args, img.ppid
	p.MntNS, p.ExeDev, p.ExeIno, p.ExeIdentity = img.mntNS, img.exeDev, img.exeIno, img.identity
	return p, nil
}

// image returns the image ik of process p (PID, TGID and start time set):
// from the cache, else from the exec map or /proc, checked, and cached
// when its executable is known.
func (r *bpfResolver) image(ik imageKey, p *flow.Process, e *procidExecValue) image {
	if img, ok := r.images.get(ik); ok {
		return img
	}
	q := *p
	r.fillExec(&q, e)
	r.exes.check(&q)
	img := image{exe: q.Exe, args: q.Args, ppid: q.PPID,
		mntNS: q.MntNS, exeDev: q.ExeDev, exeIno: q.ExeIno, identity: q.ExeIdentity}
	if q.Exe != "" {
		r.images.put(ik, img)
	}
	return img
}

// Complete implements Completer. A program decided in the kernel has
// usually had a connection resolved here before (its first), so this is
// one cache lookup; else one exec map lookup or /proc read per image.
func (r *bpfResolver) Complete(p *flow.Process, execID uint64) {
	var e procidExecValue
	img := r.image(imageKey{tgid: p.TGID, start: p.StartTime, execID: execID}, p, &e)
	if img.exe == "" {
		return
	}
	p.Args, p.PPID = img.args, img.ppid
	if p.MntNS == 0 {
		p.MntNS = img.mntNS
	}
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
