package kdecide

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/cgroup2"
	"github.com/bastion-fw/bastion/internal/exefile"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/netns"
)

// DefaultPinRoot is where Open pins, one folder per guarded network
// namespace. It must be a bpf file system in the root mount namespace:
// iptables opens the pinned match program from there.
const DefaultPinRoot = bpfFSRoot + "/bastion"

// bpfFSRoot is where a bpf file system is mounted, by Open if need be.
const bpfFSRoot = "/sys/fs/bpf"

// byLen is the room a decision has for what decided it (kd_value.by).
const byLen = 40

// Config says what Open guards and where it keeps its pins.
type Config struct {
	// NetNS is the network namespace whose connections are decided; nil
	// is the caller's.
	NetNS *os.File
	// CgroupPath is the cgroup v2 directory the sock_addr programs attach
	// to; "" is the cgroup2 root (every process).
	CgroupPath string
	// PinDir is where maps, links and the match program are pinned; ""
	// is DefaultPinRoot/netns-<inode>.
	PinDir string
	Log    *slog.Logger
}

// Kernel holds the decision programs and maps, attached and pinned.
//
// Its methods are safe for concurrent use.
type Kernel struct {
	log    *slog.Logger
	dir    string
	objs   decideObjects
	links  []link.Link
	netns  uint64 // the guarded namespace's cookie
	mntns  uint32
	closed bool
	// tai: decisions expire on CLOCK_TAI (the wall clock's, stepped with
	// it); otherwise on CLOCK_BOOTTIME. See expiryNow.
	tai bool

	mu   sync.Mutex
	gens map[uint32]uint32 // mirror of uid_gens

	// sweepMu serialises sweeps and guards counts, the last one's.
	sweepMu sync.Mutex
	counts  *entryCounts
}

// pinned are the maps that outlive the agent, by name.
var pinned = []string{"decisions", "uid_gens", "sock_allows", "settings", "stats", "events"}

// Open loads the decision programs, reusing the maps a previous agent for
// the same namespace left pinned (so that its decisions stay in force
// across a restart), attaches them to the cgroup (replacing the previous
// agent's programs in its pinned links, with no gap), and pins the match
// program for iptables at XtPin.
func Open(cfg Config) (_ *Kernel, err error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cookie, err := netnsCookie(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	// The host's mount namespace, as internal/procid takes it for
	// verifying executables (the agent's own may be a sandbox's).
	mntns, _ := exefile.HostMountNS("/proc")
	if mntns == 0 {
		return nil, errors.New("kernel decisions: no mount namespace to call the host's")
	}
	dir := cfg.PinDir
	if dir == "" {
		nsf := cfg.NetNS
		if nsf == nil {
			f, err := netns.Open("")
			if err != nil {
				return nil, err
			}
			defer f.Close()
			nsf = f
		}
		ino, err := netns.Inode(nsf)
		if err != nil {
			return nil, err
		}
		dir = filepath.Join(DefaultPinRoot, fmt.Sprintf("netns-%d", ino))
	}
	if strings.HasPrefix(dir, bpfFSRoot+"/") {
		if err := ensureBPFFS(bpfFSRoot); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kernel decisions: create pin folder: %w", err)
	}
	k := &Kernel{log: log, dir: dir, netns: cookie, mntns: mntns, gens: make(map[uint32]uint32)}
	defer func() {
		if err != nil {
			k.close(false)
		}
	}()

	// A folder left by another namespace with the same inode number (an
	// inode is reused once its namespace is gone, a cookie never is)
	// holds decisions that are not this namespace's: start afresh.
	if c, ok := pinnedCookie(dir); ok && c != cookie {
		log.Warn("kernel decisions: pins of an earlier namespace found; removing them", "dir", dir)
		removePins(dir)
	}
	if err := k.load(); err != nil {
		if !errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, err
		}
		// Maps of another layout, from an older agent: their decisions
		// cannot be read, so they are dropped.
		log.Warn("kernel decisions: pinned maps have another layout; starting with none", "dir", dir, "err", err)
		removePins(dir)
		if err := k.load(); err != nil {
			return nil, err
		}
	}
	if err := k.objs.Settings.Put(uint32(0), decideKdConfig{NetnsCookie: cookie, HostMntns: mntns, Enabled: 1}); err != nil {
		return nil, fmt.Errorf("kernel decisions: write settings: %w", err)
	}
	var uid, gen uint32
	it := k.objs.UidGens.Iterate()
	for it.Next(&uid, &gen) {
		k.gens[uid] = gen
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("kernel decisions: read generations: %w", err)
	}

	cg := cfg.CgroupPath
	if cg == "" {
		if cg, err = cgroup2.Mount(); err != nil {
			return nil, err
		}
	}
	for _, a := range []struct {
		name string
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{
		{"connect4", k.objs.DecideConnect4, ebpf.AttachCGroupInet4Connect},
		{"connect6", k.objs.DecideConnect6, ebpf.AttachCGroupInet6Connect},
		{"sendmsg4", k.objs.DecideSendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
		{"sendmsg6", k.objs.DecideSendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
	} {
		l, err := attachPinned(filepath.Join(dir, "link_"+a.name), cg, a.prog, a.typ)
		if err != nil {
			return nil, fmt.Errorf("kernel decisions: attach %s to %s: %w", a.name, cg, err)
		}
		k.links = append(k.links, l)
	}
	// The match program is pinned anew; iptables rules that name the old
	// one keep it until the chain is rebuilt.
	xt := k.XtPin()
	if err := os.Remove(xt); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("kernel decisions: replace %s: %w", xt, err)
	}
	if err := k.objs.XtAllow.Pin(xt); err != nil {
		return nil, fmt.Errorf("kernel decisions: pin match program: %w", err)
	}
	return k, nil
}

func (k *Kernel) load() error {
	spec, err := loadDecide()
	if err != nil {
		return fmt.Errorf("kernel decisions: load spec: %w", err)
	}
	for _, name := range pinned {
		spec.Maps[name].Pinning = ebpf.PinByName
	}
	// Decisions expire on the wall clock's terms where the kernel can
	// read it. Pinned decisions a boot-clock agent wrote then read as long
	// expired (boot times are far smaller): they are asked afresh.
	k.tai = haveTAI()
	if k.tai {
		if err := spec.Variables["use_tai"].Set(uint8(1)); err != nil {
			return fmt.Errorf("kernel decisions: select the expiry clock: %w", err)
		}
	}
	k.objs = decideObjects{}
	if err := spec.LoadAndAssign(&k.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: k.dir}}); err != nil {
		return fmt.Errorf("kernel decisions: load programs: %w", err)
	}
	return nil
}

// attachPinned attaches prog to cgroup cg through the link pinned at path:
// a link a previous agent pinned for the same cgroup gets prog in place of
// its program (atomically: no connect goes undecided); otherwise a new link
// is made and pinned.
func attachPinned(path, cg string, prog *ebpf.Program, typ ebpf.AttachType) (link.Link, error) {
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		if sameCgroup(l, cg) && l.Update(prog) == nil {
			return l, nil
		}
		l.Unpin()
		l.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		os.Remove(path)
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: typ, Program: prog})
	if err != nil {
		return nil, err
	}
	if err := l.Pin(path); err != nil {
		l.Close()
		return nil, fmt.Errorf("pin link: %w", err)
	}
	return l, nil
}

// sameCgroup reports whether cgroup link l is attached to directory cg
// (a cgroup's ID is its directory's inode number).
func sameCgroup(l link.Link, cg string) bool {
	info, err := l.Info()
	if err != nil {
		return false
	}
	ci := info.Cgroup()
	if ci == nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Stat(cg, &st); err != nil {
		return false
	}
	return ci.CgroupId == st.Ino
}

// XtPin is the path of the pinned match program, for iptables' `-m bpf
// --object-pinned`.
func (k *Kernel) XtPin() string { return filepath.Join(k.dir, "xt_allow") }

// PinDir is the folder that holds the pins.
func (k *Kernel) PinDir() string { return k.dir }

// Key is what a remembered decision applies to: connections of UID's
// processes running the file ExeDev/ExeIno (kernel dev_t encoding), to
// Dst:Port over Proto (Port 0 for ICMP echo).
type Key struct {
	UID    uint32
	ExeDev uint32
	ExeIno uint64
	Proto  flow.Proto
	Dst    netip.Addr
	Port   uint16
}

// Decision is a remembered decision.
type Decision struct {
	Key
	Action flow.Action
	// By names what decided it, as the history shows it ("rule:ID");
	// at most 40 bytes.
	By string
	// Expires is when it stops applying (wall clock); zero: never.
	Expires time.Time
	// Gen is the UID's generation read (Gen) before the decision was
	// made: if the UID's rules changed since, the decision is stale and
	// never applies.
	Gen uint32
	// ExeCtime is the executable's status-change time when the agent
	// verified that it is the file at the path the decision was made
	// for. The decision applies only while the file's ctime is the same:
	// a rename, a new or removed link, or a new file that reuses the
	// inode number changes it.
	ExeCtime Ctime
}

// Ctime is a file's status-change time, as statx(2) reports it.
type Ctime struct {
	Sec  int64
	Nsec uint32
}

// Gen returns uid's current generation.
func (k *Kernel) Gen(uid uint32) uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gens[uid]
}

// Invalidate makes every remembered decision of uid stale at once. It
// returns when the kernel no longer applies them.
func (k *Kernel) Invalidate(uid uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	g := k.gens[uid] + 1
	if err := k.objs.UidGens.Put(uid, g); err != nil {
		return fmt.Errorf("kernel decisions: invalidate uid %d: %w", uid, err)
	}
	k.gens[uid] = g
	return nil
}

// Remember stores d, unless d.Gen is no longer current.
func (k *Kernel) Remember(d Decision) error {
	if len(d.By) > byLen {
		return fmt.Errorf("kernel decisions: %q is longer than %d bytes", d.By, byLen)
	}
	var act uint8
	switch d.Action {
	case flow.ActionAllow:
		act = 1
	case flow.ActionDeny:
		act = 2
	case flow.ActionReject:
		act = 3
	default:
		return fmt.Errorf("kernel decisions: cannot remember action %v", d.Action)
	}
	v := decideKdValue{Gen: d.Gen, Action: act, ExeCtimeSec: d.ExeCtime.Sec, ExeCtimeNsec: d.ExeCtime.Nsec}
	if !d.Expires.IsZero() {
		// The expiry clock first: the time between the two readings
		// makes the decision expire that much early, never late. The
		// wall clock, not Go's monotonic reading, measures what is left:
		// the kernel's clock follows the wall clock (or, without TAI,
		// the boot clock, which runs through suspend as the wall clock
		// does), so a lifetime ends at the wall time it names, as the
		// agent's own matching decides.
		clock := k.expiryNow()
		left := d.Expires.Round(0).Sub(time.Now().Round(0))
		if left <= 0 {
			return nil
		}
		v.Expires = uint64(clock + left.Nanoseconds())
	}
	for i := 0; i < len(d.By); i++ {
		v.By[i] = int8(d.By[i])
	}
	key := keyOf(d.Key)
	k.mu.Lock()
	defer k.mu.Unlock()
	// Under the lock, so that no Invalidate falls between the check and
	// the write; one that came before makes the decision stale here.
	g, ok := k.gens[d.UID]
	if !ok {
		// The UID's generation must exist in the kernel before its
		// first decision: a missing one never matches.
		if err := k.objs.UidGens.Put(d.UID, uint32(0)); err != nil {
			return fmt.Errorf("kernel decisions: uid %d: %w", d.UID, err)
		}
		k.gens[d.UID] = 0
	}
	if g != d.Gen {
		return nil
	}
	if err := k.objs.Decisions.Put(&key, &v); err != nil {
		return fmt.Errorf("kernel decisions: remember: %w", err)
	}
	return nil
}

// Forget deletes the decisions for keys (missing ones are no error).
func (k *Kernel) Forget(keys []Key) error {
	var errs []error
	for _, key := range keys {
		kk := keyOf(key)
		if err := k.objs.Decisions.Delete(&kk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kernel decisions: forget: %w", err)
	}
	return nil
}

// ForgetBy deletes every decision whose By starts with prefix and returns
// how many it deleted.
func (k *Kernel) ForgetBy(prefix string) (int, error) {
	var (
		key  decideKdKey
		v    decideKdValue
		gone []decideKdKey
	)
	it := k.objs.Decisions.Iterate()
	for it.Next(&key, &v) {
		if strings.HasPrefix(cString(v.By[:]), prefix) {
			gone = append(gone, key)
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("kernel decisions: list: %w", err)
	}
	for i := range gone {
		if err := k.objs.Decisions.Delete(&gone[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return i, fmt.Errorf("kernel decisions: forget: %w", err)
		}
	}
	return len(gone), nil
}

func keyOf(d Key) decideKdKey {
	k := decideKdKey{Uid: d.UID, ExeDev: d.ExeDev, ExeIno: d.ExeIno, Dport: d.Port, Proto: uint8(d.Proto)}
	k.Daddr = d.Dst.Unmap().As16() // IPv4 as IPv4-mapped, as the programs see it
	return k
}

// Stats are the kernel's decision counters since the maps were made.
type Stats struct {
	// Entries is the number of current remembered decisions.
	Entries int
	// Allowed counts connections allowed in the kernel; Denied and
	// Rejected the connect() and sendmsg() calls failed.
	Allowed, Denied, Rejected uint64
	// Lost counts decisions whose record did not fit the ring buffer.
	Lost uint64
	// Packets counts packets the match program let through.
	Packets uint64
}

// Stats counts the current decisions and reads the counters; stale and
// expired decisions are deleted on the way. The count may be up to
// sweepEvery old.
func (k *Kernel) Stats() (Stats, error) {
	var s Stats
	var per []uint64
	for i, dst := range []*uint64{&s.Allowed, &s.Denied, &s.Rejected, &s.Lost, &s.Packets} {
		if err := k.objs.Stats.Lookup(uint32(i), &per); err != nil {
			return s, fmt.Errorf("kernel decisions: read counters: %w", err)
		}
		for _, v := range per {
			*dst += v
		}
	}
	c, err := k.entryCounts()
	if err != nil {
		return s, err
	}
	s.Entries = c.total
	return s, nil
}

// EntriesFor counts uid's current decisions, as Stats counts them all.
func (k *Kernel) EntriesFor(uid uint32) (int, error) {
	c, err := k.entryCounts()
	if err != nil {
		return 0, err
	}
	return c.byUID[uid], nil
}

// sweepEvery is how long a sweep's counts answer Stats and EntriesFor.
// Every user's status request asks for them (a GTK client's every 2 s),
// and a sweep of a full map takes 15-45 ms on the 2-core VM: however many
// callers there are, they share one sweep a second.
const sweepEvery = time.Second

// entryCounts are the current decisions a sweep counted.
type entryCounts struct {
	at    time.Time
	total int
	byUID map[uint32]int
}

// entryCounts returns the last sweep's counts, sweeping again when they
// are sweepEvery old.
func (k *Kernel) entryCounts() (*entryCounts, error) {
	k.sweepMu.Lock()
	defer k.sweepMu.Unlock()
	if c := k.counts; c != nil && time.Since(c.at) < sweepEvery {
		return c, nil
	}
	c, err := k.sweep()
	if err != nil {
		return nil, err
	}
	k.counts = c
	return c, nil
}

// sweep deletes stale and expired decisions and counts the others, by UID.
func (k *Kernel) sweep() (*entryCounts, error) {
	k.mu.Lock()
	gens := make(map[uint32]uint32, len(k.gens))
	for u, g := range k.gens {
		gens[u] = g
	}
	k.mu.Unlock()
	c := &entryCounts{at: time.Now(), byUID: make(map[uint32]int)}
	now := uint64(k.expiryNow())
	var stale []decideKdKey
	err := k.eachDecision(func(key *decideKdKey, v *decideKdValue) {
		if g, ok := gens[key.Uid]; !ok || g != v.Gen || (v.Expires != 0 && now >= v.Expires) {
			stale = append(stale, *key)
			return
		}
		c.total++
		c.byUID[key.Uid]++
	})
	if err != nil {
		return nil, fmt.Errorf("kernel decisions: list: %w", err)
	}
	for i := range stale {
		k.objs.Decisions.Delete(&stale[i]) // a concurrent LRU eviction may have gone first
	}
	return c, nil
}

// sweepBatch is how many decisions eachDecision reads per system call.
const sweepBatch = 1024

// eachDecision calls fn with every decision in the map. It reads them in
// batches where the kernel can (5.6+), else one by one: a full map (65,536)
// takes 64 system calls instead of 131,072, and 15-45 ms instead of
// 350-530 ms on the 2-core VM.
func (k *Kernel) eachDecision(fn func(*decideKdKey, *decideKdValue)) error {
	keys := make([]decideKdKey, sweepBatch)
	vals := make([]decideKdValue, sweepBatch)
	var cursor ebpf.MapBatchCursor
	for first := true; ; first = false {
		n, err := k.objs.Decisions.BatchLookup(&cursor, keys, vals, nil)
		if first && errors.Is(err, ebpf.ErrNotSupported) {
			break
		}
		for i := range n {
			fn(&keys[i], &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil // the end
		}
		if err != nil {
			return err
		}
	}
	var (
		key decideKdKey
		v   decideKdValue
	)
	it := k.objs.Decisions.Iterate()
	for it.Next(&key, &v) {
		fn(&key, &v)
	}
	return it.Err()
}

// Close detaches the programs and removes every pin: the agent stops for
// good, and its decisions go with it.
func (k *Kernel) Close() error { return k.close(true) }

func (k *Kernel) close(unpin bool) error {
	if k.closed {
		return nil
	}
	k.closed = true
	var errs []error
	for _, l := range k.links {
		if unpin {
			errs = append(errs, l.Unpin())
		}
		errs = append(errs, l.Close())
	}
	if unpin {
		removePins(k.dir)
	}
	errs = append(errs, k.objs.Close())
	return errors.Join(errs...)
}

// removePins removes every pin in dir, and dir.
func removePins(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		os.Remove(filepath.Join(dir, e.Name()))
	}
	os.Remove(dir)
}

// pinnedCookie reads the namespace cookie from a pinned settings map.
func pinnedCookie(dir string) (uint64, bool) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "settings"), nil)
	if err != nil {
		return 0, false
	}
	defer m.Close()
	var c decideKdConfig
	if err := m.Lookup(uint32(0), &c); err != nil {
		return 0, false
	}
	return c.NetnsCookie, true
}

// netnsCookie returns the cookie of ns (nil: the caller's namespace).
func netnsCookie(ns *os.File) (uint64, error) {
	var cookie uint64
	err := netns.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("kernel decisions: network namespace cookie: %w", err)
	}
	return cookie, nil
}

// ensureBPFFS mounts a bpf file system at dir unless one is there.
func ensureBPFFS(dir string) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err == nil && fs.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("kernel decisions: %w", err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("kernel decisions: mount bpf file system at %s: %w", dir, err)
	}
	return nil
}

// ExpiryClock names the clock decisions expire on: "tai" (the wall
// clock's; a step of the wall clock moves every decision's end with it)
// or "boot" (kernels before 6.1, which lack bpf_ktime_get_tai_ns).
func (k *Kernel) ExpiryClock() string {
	if k.tai {
		return "tai"
	}
	return "boot"
}

// expiryNow is the expiry clock's time in ns, as bpf/decide.c's
// expiry_now reads it.
func (k *Kernel) expiryNow() int64 {
	if k.tai {
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_TAI, &ts)
		return ts.Nano()
	}
	return bootNow()
}

// haveTAI reports whether the decision programs can read CLOCK_TAI.
func haveTAI() bool {
	for _, pt := range []ebpf.ProgramType{ebpf.CGroupSockAddr, ebpf.SocketFilter} {
		if features.HaveProgramHelper(pt, asm.FnKtimeGetTaiNs) != nil {
			return false
		}
	}
	return true
}

// bootNow is CLOCK_BOOTTIME in ns, bpf_ktime_get_boot_ns's clock.
func bootNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return ts.Nano()
}
