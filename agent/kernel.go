package agent

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/peercred"
	"github.com/bastion-fw/bastion/internal/rules"
)

// Kernel-side decisions (internal/kdecide). The engine decides a
// connection in userspace the first time; when the decision came from a
// rule or the cache and depends only on what the kernel knows at connect
// time, it is remembered in the kernel, which applies it to the same
// program's later connections to the same destination with no queue round
// trip. The kernel reports each decision it makes (RecordKernel), and the
// history, counters and watchers see it as if the engine had made it.
//
// Exactness: a decision is remembered only when
//   - the process is identified, its executable verified to be the host's
//     file (flow.Process.ExeVerified) and known by device and inode: the
//     kernel identifies the program by that file;
//   - the UID's rules decide it the same way for every process of that
//     program (rules.Matcher.KernelDeps: no rule that tests the command
//     line or the executable's hash could apply), and, if a rule that tests
//     the host name could apply, every process of the UID is told the same
//     name for the address (dnsnames.Cache.Uniform): the decision is then
//     remembered until that name's entry expires, and forgotten at once
//     when an answer changes what any process is told (hostDecisions);
//   - it is not a DNS query (UDP to port 53), which the agent must see to
//     learn names.
//
// Every remembered decision carries its UID's generation, read before the
// rules and the cache were consulted; changing the rules or the cache of a
// UID bumps the generation, so that all its remembered decisions stop
// applying at once, and one made from rules that changed meanwhile is
// never stored.

// KernelStatus says whether and how decisions are made in the kernel.
type KernelStatus struct {
	// Mechanism is "cgroup-sock-addr+xt-bpf" when active, "off" when
	// disabled by the configuration, "unavailable" when the kernel or
	// the machine does not allow it (Reason says why).
	Mechanism string
	Reason    string
}

// openKernel loads the kernel decision programs when the configuration
// asks for them; without them, every connection goes through the queue.
func openKernel(cfg Config, ns *os.File, log *slog.Logger) (*kdecide.Kernel, KernelStatus) {
	if !cfg.KernelDecisions {
		log.Info("kernel decisions off (kernel_decisions = false): every new connection goes through the queue")
		return nil, KernelStatus{Mechanism: "off", Reason: "kernel_decisions = false"}
	}
	k, err := kdecide.Open(kdecide.Config{NetNS: ns, CgroupPath: cfg.CgroupPath, Log: log})
	if err != nil {
		log.Warn("kernel decisions unavailable, falling back to the queue for every new connection", "err", err)
		return nil, KernelStatus{Mechanism: "unavailable", Reason: err.Error()}
	}
	// Decisions a crashed agent's cache made held while it was away; its
	// cache is gone, and with it what could forget them or count their
	// hits: they end now, as the cache's own entries did. (Those of rules
	// hold until the rules are set again.)
	if n, err := k.ForgetBy("cache:"); err != nil {
		log.Warn("kernel decisions of the previous agent's cache could not be removed", "err", err)
	} else if n > 0 {
		log.Info("kernel decisions of the previous agent's cache removed", "decisions", n)
	}
	log.Info("kernel decisions active: remembered decisions are applied in the kernel", "pins", k.PinDir(), "expiry_clock", k.ExpiryClock())
	return k, KernelStatus{Mechanism: KernelMechanism}
}

// KernelMechanism names how the kernel decides: cgroup sock_addr programs
// at connect()/sendmsg(), and an xt_bpf match in the chain.
const KernelMechanism = "cgroup-sock-addr+xt-bpf"

// kernelDecider is what the engine needs of internal/kdecide.Kernel.
type kernelDecider interface {
	Gen(uid uint32) uint32
	Invalidate(uid uint32) error
	Remember(kdecide.Decision) error
	Forget([]kdecide.Key) error
}

// hostNames is what the engine needs of the nameBook.
type hostNames interface {
	uniform(uid uint32, addr netip.Addr) (name string, until time.Time, ok bool)
}

// SetNames tells the engine where destination names come from, so that it
// can remember decisions that depend on a name; the book must report its
// changes to ForgetName.
func (e *Engine) SetNames(n hostNames) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.names = n
}

// hostDecisions indexes the kernel decisions that depend on a destination's
// name by address, so that a DNS answer that changes what a process is told
// about the address forgets them before the answer reaches anyone.
type hostDecisions struct {
	mu sync.Mutex
	// epoch counts changes; a decision whose name was checked before a
	// change is not stored.
	epoch uint64
	keys  map[netip.Addr][]kdecide.Key
	n     int
}

// maxHostDecisions bounds hostDecisions; past it, decisions that depend on
// a name stay in userspace.
const maxHostDecisions = 65536

// ForgetName forgets the kernel decisions that depend on addr's name. The
// nameBook calls it when an entry for addr changes, before the answer that
// changed it is released.
func (e *Engine) ForgetName(addr netip.Addr) {
	h := &e.hostDecs
	h.mu.Lock()
	h.epoch++
	ks := h.keys[addr]
	delete(h.keys, addr)
	h.n -= len(ks)
	h.mu.Unlock()
	if len(ks) > 0 && e.kern != nil {
		if err := e.kern.Forget(ks); err != nil {
			e.log.Error("kernel decisions that depend on a name could not be forgotten", "addr", addr, "err", err)
		}
	}
}

// SetKernel makes the engine remember its decisions in k (nil: nowhere).
// Call before the engine sees packets.
func (e *Engine) SetKernel(k kernelDecider) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if k == nil {
		e.kern, e.cache.onChange = nil, nil
		return
	}
	e.kern = k
	e.cache.onChange = e.invalidateKernel
}

// kernelGen returns uid's generation, 0 without kernel decisions.
func (e *Engine) kernelGen(uid uint32) uint32 {
	if e.kern == nil {
		return 0
	}
	return e.kern.Gen(uid)
}

// invalidateKernel makes uid's remembered decisions stale.
func (e *Engine) invalidateKernel(uid uint32) {
	if e.kern == nil {
		return
	}
	if err := e.kern.Invalidate(uid); err != nil {
		// The decisions stay in force: say so loudly.
		e.log.Error("kernel decisions of a uid could not be invalidated; they may still apply", "uid", uid, "err", err)
	}
}

// kernelKey returns the key the kernel would know proc's connection t by,
// and whether the connection may be remembered at all.
func kernelKey(proc flow.Process, t flow.Tuple) (kdecide.Key, bool) {
	if !proc.Known() || !proc.ExeVerified() || proc.ExeIno == 0 || proc.ExeDev == 0 || !t.Dst.IsValid() {
		return kdecide.Key{}, false
	}
	switch t.Proto {
	case flow.TCP, flow.ICMP, flow.ICMPv6:
	case flow.UDP:
		if t.DstPort == 53 {
			return kdecide.Key{}, false
		}
	default:
		return kdecide.Key{}, false
	}
	port := t.DstPort
	if t.Proto == flow.ICMP || t.Proto == flow.ICMPv6 {
		port = 0
	}
	return kdecide.Key{UID: proc.UID, ExeDev: proc.ExeDev, ExeIno: proc.ExeIno, Proto: t.Proto, Dst: t.Dst, Port: port}, true
}

// rememberInKernel stores a decision the rules (m, the UID's rules when
// they decided or were consulted; nil when the UID has none) or the cache
// made, if the kernel can apply it exactly. gen is the UID's generation
// read before m and the cache were consulted.
func (e *Engine) rememberInKernel(gen uint32, m *uidRules, proc flow.Process, t flow.Tuple, host string, now time.Time,
	a flow.Action, by string, expires time.Time) {
	if e.kern == nil || len(by) > 40 {
		return
	}
	key, ok := kernelKey(proc, t)
	if !ok {
		return
	}
	var byName bool
	if m != nil {
		process, name := m.kernelDeps(e.hashes, proc, t, host, ruleTime(now))
		if process {
			return
		}
		byName = name && e.names != nil
	}
	// The file's ctime, read now that the path was verified: if it was
	// renamed since, the path leads elsewhere and nothing is stored; if it
	// is renamed later, its ctime changes and the kernel stops applying
	// the decision.
	// A file with more than one name is never decided in the kernel
	// (bpf/decide.c): storing its decisions would only cost a write per
	// connection.
	f, ok := e.hashes.files.Identity(proc.Exe)
	if !ok || f.Dev != proc.ExeDev || f.Ino != proc.ExeIno || f.Nlink != 1 {
		return
	}
	d := kdecide.Decision{Key: key, Action: a, By: by, Expires: expires, Gen: gen,
		ExeCtime: kdecide.Ctime{Sec: f.CtimeSec, Nsec: f.CtimeNsec}}
	if byName && !e.rememberByName(d, host) {
		return
	}
	if !byName {
		if err := e.kern.Remember(d); err != nil {
			e.log.Warn("remember decision in the kernel", "uid", proc.UID, "dst", t.String(), "err", err)
			return
		}
	}
	e.kernelExes.put(proc.ExeDev, proc.ExeIno, proc.Exe)
}

// rememberCacheEntry stores in the kernel the decision of a new cache entry
// for p's destination and port, unless one of the UID's rules (m) decides
// p's connection, which would then come first.
func (e *Engine) rememberCacheEntry(gen uint32, m *uidRules, p Pending, a flow.Action, by string, expires time.Time) {
	now := e.now()
	if m != nil {
		if _, ok, _ := m.match(e.hashes, p.Process, p.Tuple, p.Host, ruleTime(now), nil); ok {
			return
		}
	}
	e.rememberInKernel(gen, m, p.Process, p.Tuple, p.Host, now, a, by, expires)
}

// maxEagerPerUID bounds the rules of one UID that SetRules stores in the
// kernel at once; the others are remembered from their first connection.
const maxEagerPerUID = 4096

// rememberRules stores in the kernel, at once, the decisions of uid's rules
// that name exactly one connection key (rules.ExactInstance), where that
// rule is the one that decides the key and its decision is exact, so that
// even a program's first connection they cover is decided there. The rules
// are m's, set from rs; call after the generation was bumped for them.
func (e *Engine) rememberRules(uid uint32, m *uidRules, rs []rules.Rule) {
	if e.kern == nil || m == nil {
		return
	}
	gen := e.kern.Gen(uid)
	now := ruleTime(e.now())
	n := 0
	for i := range rs {
		r := &rs[i]
		in, ok := rules.ExactInstance(*r)
		if !ok || (in.Proto == flow.UDP && in.Port == 53) {
			continue
		}
		if n++; n > maxEagerPerUID {
			return
		}
		// A process's path is its file's own, with no symbolic link in
		// it: a rule that names a link (/bin/curl on a merged /usr, or
		// /usr/bin/python3) matches no process, and must not be stored
		// for the file the link leads to.
		if real, err := filepath.EvalSymlinks(in.Exe); err != nil || real != in.Exe {
			continue
		}
		f, ok := e.hashes.files.Identity(in.Exe)
		if !ok || f.Nlink != 1 {
			continue // no such file (yet): remembered at its first connection; or hard links: never
		}
		c := rules.Conn{UID: uid, Exe: in.Exe, Tuple: flow.Tuple{Proto: in.Proto, Dst: in.Dst, DstPort: in.Port}}
		if process, name := m.m.KernelDeps(c, now); process || name {
			continue
		}
		if w, ok := m.m.Match(c, now); !ok || *w != *r {
			continue // another rule decides this key
		}
		d := kdecide.Decision{
			Key:    kdecide.Key{UID: uid, ExeDev: f.Dev, ExeIno: f.Ino, Proto: in.Proto, Dst: in.Dst, Port: in.Port},
			Action: r.Action, By: "rule:" + r.ID, Gen: gen,
			ExeCtime: kdecide.Ctime{Sec: f.CtimeSec, Nsec: f.CtimeNsec},
		}
		if len(d.By) > 40 {
			continue
		}
		if r.Lifetime == rules.Duration {
			d.Expires = r.Expires
		}
		if err := e.kern.Remember(d); err != nil {
			e.log.Warn("remember rule in the kernel", "uid", uid, "rule", r.ID, "err", err)
			return
		}
		e.kernelExes.put(f.Dev, f.Ino, in.Exe)
	}
}

// rememberByName stores d, made with the destination named host, if every
// process of the UID is told that name, until that changes.
func (e *Engine) rememberByName(d kdecide.Decision, host string) bool {
	addr := d.Dst.Unmap()
	h := &e.hostDecs
	h.mu.Lock()
	epoch := h.epoch
	h.mu.Unlock()
	name, until, ok := e.names.uniform(d.UID, addr)
	if !ok || name != host {
		return false
	}
	if !until.IsZero() && (d.Expires.IsZero() || until.Before(d.Expires)) {
		d.Expires = until
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.epoch != epoch || h.n >= maxHostDecisions {
		return false // a name changed meanwhile (maybe this one)
	}
	if err := e.kern.Remember(d); err != nil {
		e.log.Warn("remember decision in the kernel", "uid", d.UID, "dst", addr, "err", err)
		return false
	}
	if h.keys == nil {
		h.keys = make(map[netip.Addr][]kdecide.Key)
	}
	h.keys[addr] = append(h.keys[addr], d.Key)
	h.n++
	return true
}

// RecordKernel records decisions the kernel made, as the engine records
// its own.
func (e *Engine) RecordKernel(evs []kdecide.Event) {
	for i := range evs {
		ev := &evs[i]
		p := &ev.Process
		if p.Exe = e.kernelExes.get(p.ExeDev, p.ExeIno); p.Exe != "" {
			p.ExeIdentity = flow.ExeHost
		} else if exe, err := os.Readlink("/proc/" + strconv.FormatUint(uint64(p.TGID), 10) + "/exe"); err == nil {
			// The agent that remembered it is gone (a restart).
			p.Exe = exe
		}
		e.count(ev.Action)
		e.Counters.Packets.Add(1)
		e.Counters.Identified.Add(1)
		e.Counters.KernelDecisions.Add(1)
		e.Counters.countBucket(bucketOf(ev.By))
		d := Decision{Time: ev.Time, Process: *p, Tuple: ev.Tuple, Action: ev.Action, DecidedBy: ev.By}
		if id, ok := strings.CutPrefix(ev.By, "rule:"); ok {
			d.RuleID = id
		} else if id, ok := strings.CutPrefix(ev.By, "cache:"); ok {
			e.mu.Lock()
			if ce := e.cache.byID[id]; ce != nil {
				ce.hits++
			}
			e.mu.Unlock()
		}
		e.splits.add(p.UID, ev.Time, true)
		e.record(d)
	}
}

// exeNames maps executables the kernel knows by file to the path they were
// remembered with, for the records of kernel decisions.
type exeNames struct {
	mu sync.Mutex
	m  map[[2]uint64]string
}

// maxExeNames bounds exeNames; past it, the map starts again.
const maxExeNames = 16384

func (n *exeNames) put(dev uint32, ino uint64, exe string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := [2]uint64{uint64(dev), ino}
	if n.m[k] == exe {
		return
	}
	if n.m == nil || len(n.m) >= maxExeNames {
		n.m = make(map[[2]uint64]string)
	}
	n.m[k] = exe
}

func (n *exeNames) get(dev uint32, ino uint64) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m[[2]uint64{uint64(dev), ino}]
}

// decisionSplit counts the decisions of the last minute by where they were
// made, per second.
type decisionSplit struct {
	mu      sync.Mutex
	secs    [60]int64 // the second each bucket counts
	kernel  [60]uint64
	userspc [60]uint64
}

func (s *decisionSplit) add(t time.Time, kernel bool) {
	sec := t.Unix()
	i := int(sec % 60)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.secs[i] != sec {
		s.secs[i], s.kernel[i], s.userspc[i] = sec, 0, 0
	}
	if kernel {
		s.kernel[i]++
	} else {
		s.userspc[i]++
	}
}

// lastMinute returns the decisions made in the kernel and in userspace in
// the minute before now.
func (s *decisionSplit) lastMinute(now time.Time) (kernel, userspace uint64) {
	cur := now.Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.secs {
		if cur-s.secs[i] < 60 && s.secs[i] <= cur {
			kernel += s.kernel[i]
			userspace += s.userspc[i]
		}
	}
	return kernel, userspace
}

// maxSplitUIDs bounds the UIDs whose split is kept apart; the others
// count only in the total.
const maxSplitUIDs = 1024

// decisionSplits are the total split and each UID's.
type decisionSplits struct {
	all   decisionSplit
	mu    sync.Mutex
	byUID map[uint32]*decisionSplit
}

func (s *decisionSplits) add(uid uint32, t time.Time, kernel bool) {
	s.all.add(t, kernel)
	s.mu.Lock()
	u := s.byUID[uid]
	if u == nil && len(s.byUID) < maxSplitUIDs {
		if s.byUID == nil {
			s.byUID = make(map[uint32]*decisionSplit)
		}
		u = &decisionSplit{}
		s.byUID[uid] = u
	}
	s.mu.Unlock()
	if u != nil {
		u.add(t, kernel)
	}
}

// DecisionSplit returns the decisions of the last minute made in the
// kernel and in userspace: of every UID for root, else of the caller's.
func (e *Engine) DecisionSplit(caller peercred.Cred) (kernel, userspace uint64) {
	now := e.now()
	if caller.IsRoot() {
		return e.splits.all.lastMinute(now)
	}
	e.splits.mu.Lock()
	u := e.splits.byUID[caller.UID]
	e.splits.mu.Unlock()
	if u == nil {
		return 0, 0
	}
	return u.lastMinute(now)
}
