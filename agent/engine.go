package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/peercred"
	"github.com/bastion-fw/bastion/internal/policy"
	"github.com/bastion-fw/bastion/internal/rules"
)

// releaser gives held packets their verdict.
type releaser interface {
	Release(p PacketRef, a flow.Action) error
}

// PacketRef names a held packet: its queue ID and the mark it carried, which
// the verdict must preserve outside Bastion's own bits (VPNs route by mark).
type PacketRef struct {
	ID   uint32
	Mark uint32
}

// Errors the engine returns to API callers; api.go maps them to gRPC codes.
var (
	errNotFound         = errors.New("no such pending connection (already decided or expired)")
	errPermissionDenied = errors.New("connection belongs to another user")
	errInvalid          = errors.New("invalid request")
)

// pendingKey groups held packets into one question: the same program (UID
// and executable, by exeKey) going to the same destination. Parallel connections and
// datagrams resent while the first is held land in the same entry. (The
// kernel does not retransmit a SYN while its first copy sits in the queue;
// retransmissions after a verdict are answered from recent.)
type pendingKey struct {
	uid   uint32
	exe   string
	comm  string
	proto flow.Proto
	dst   netip.Addr
	port  uint16
}

type heldPacket struct {
	ref   PacketRef
	tuple flow.Tuple
	// proc is the process (thread) that sent the packet, shared by the
	// packets of one sender; its decision is logged under it.
	proc   *flow.Process
	socket uint64
}

// maxListedProcesses bounds Pending.Processes; more are only counted.
const maxListedProcesses = 16

// senderKey names one sending thread of one process image.
type senderKey struct {
	pid, tgid uint32
	start     uint64
}

// Pending is a connection that waits for a verdict.
type Pending struct {
	ID      string
	Process flow.Process
	Tuple   flow.Tuple
	// Host is the destination's name when a DNS answer gave it.
	Host      string
	FirstSeen time.Time
	Deadline  time.Time
	// DeadlineAction applies at Deadline.
	DeadlineAction flow.Action
	Packets        int
	// Processes lists every distinct process (by TGID and start time)
	// whose packets joined the entry, Process first, at most
	// maxListedProcesses; MoreProcesses counts the others.
	Processes     []flow.Process
	MoreProcesses int
}

type pending struct {
	Pending
	key  pendingKey
	held []heldPacket
	// senders holds one Process per sending thread, for held packets.
	senders map[senderKey]*flow.Process
	timer   *time.Timer
	// updateDue is set while a PendingUpdated announcement is scheduled.
	updateDue bool
}

// sender returns the Process of the thread that sent a packet joining p,
// recording it the first time, and adds a new process to p.Processes.
// Called with the engine's lock held.
func (p *pending) sender(proc flow.Process) *flow.Process {
	k := senderKey{pid: proc.PID, tgid: proc.TGID, start: proc.StartTime}
	if sp := p.senders[k]; sp != nil {
		return sp
	}
	// The process itself is recorded under its key with pid 0, which no
	// sending thread has.
	pk := senderKey{tgid: proc.TGID, start: proc.StartTime}
	_, seen := p.senders[pk]
	sp := &proc
	p.senders[k] = sp
	if !seen {
		p.senders[pk] = sp
		if len(p.Processes) < maxListedProcesses {
			p.Processes = append(p.Processes, proc)
		} else {
			p.MoreProcesses++
		}
	}
	return sp
}

// Counters are the engine's running totals.
//
// Every packet counted in Packets is, once decided, counted in exactly one
// bucket: RuleDecisions, CacheHits, PolicyDecisions, APIDecisions,
// DeadlineDecisions, SilentDecisions, Retransmits, OtherDecisions (by
// bucketOf, in releaseOne and RecordKernel), Shed or Malformed. Until then
// it is held (shares.held) or on its way to a verdict.
type Counters struct {
	Packets, Allowed, Denied, Rejected                          atomic.Uint64
	CacheHits, PolicyDecisions, APIDecisions, DeadlineDecisions atomic.Uint64
	RuleDecisions, SilentDecisions, OtherDecisions              atomic.Uint64
	// KernelDecisions counts the decisions the kernel made (kernel.go);
	// each also counts in Packets, Identified, Allowed/Denied/Rejected and
	// RuleDecisions or CacheHits.
	KernelDecisions                                                  atomic.Uint64
	Identified, Unidentified, Malformed, Retransmits, ReleaseFailure atomic.Uint64
	// Shed counts packets dropped beyond their UID's share (share.go).
	Shed atomic.Uint64
}

// bucket is where a decided packet counts in Counters.
type bucket int

const (
	bucketNone bucket = iota // unparsed: counted in Malformed on arrival
	bucketRule
	bucketCache
	bucketPolicy
	bucketAnswer
	bucketDeadline
	bucketSilent
	bucketRetransmit
	bucketOther
)

// bucketOf is the bucket of a decision made by by (Decision.DecidedBy).
func bucketOf(by string) bucket {
	switch {
	case strings.HasPrefix(by, "rule:"):
		return bucketRule
	case strings.HasPrefix(by, "cache:"):
		return bucketCache
	case by == "policy":
		return bucketPolicy
	case strings.HasPrefix(by, "api:"):
		return bucketAnswer
	case by == "deadline" || strings.HasPrefix(by, "deadline:"):
		return bucketDeadline
	case strings.HasPrefix(by, "default:"):
		return bucketSilent
	case by == "retransmit":
		return bucketRetransmit
	case by == "unparsed":
		return bucketNone
	}
	return bucketOther // shutdown, rules-busy
}

// countBucket counts one decided packet in its bucket of the totals.
func (k *Counters) countBucket(b bucket) {
	switch b {
	case bucketRule:
		k.RuleDecisions.Add(1)
	case bucketCache:
		k.CacheHits.Add(1)
	case bucketPolicy:
		k.PolicyDecisions.Add(1)
	case bucketAnswer:
		k.APIDecisions.Add(1)
	case bucketDeadline:
		k.DeadlineDecisions.Add(1)
	case bucketSilent:
		k.SilentDecisions.Add(1)
	case bucketRetransmit:
		k.Retransmits.Add(1)
	case bucketOther:
		k.OtherDecisions.Add(1)
	}
}

// Engine decides held connections. It never blocks the packet path on an
// API client: events go to bounded buffers, and a client that cannot keep
// up is dropped.
type Engine struct {
	log     *slog.Logger
	pol     policy.Policy
	release releaser
	now     func() time.Time
	after   func(time.Duration, func()) *time.Timer
	hashes  *exeHasher

	Counters Counters

	mu      sync.Mutex
	pending map[pendingKey]*pending
	byID    map[string]*pending
	// recent holds, per tuple, the verdicts that answer retransmissions;
	// almost always one.
	recent map[flow.Tuple][]recentVerdict
	cache  *decisionCache
	// shares bounds the held packets per UID (share.go).
	shares *shares
	// rules holds each UID's compiled rules. They are immutable once
	// built, so they are matched without the lock; SetRules replaces them.
	rules      map[uint32]*uidRules
	nextID     uint64
	watchers   map[*subscriber[PendingEvent]]struct{}
	watchedUID map[uint32]int
	history    []Decision // ring buffer
	histNext   int
	decSubs    map[*subscriber[Decision]]struct{}
	workers    ruleWorkers
	closed     bool
	// closeAction is what packets get once the engine is closed.
	closeAction flow.Action

	// budgets bound the watchers' queues of each non-root UID.
	budgets map[uint32]*queueBudget
	// byUID holds each UID's share of Counters; otherUIDs those of UIDs
	// beyond maxCountedUIDs.
	byUID     map[uint32]*uidCounters
	otherUIDs uidCounters
	// lastUID's counters are lastCounters (nil: none yet).
	lastUID      uint32
	lastCounters *uidCounters

	// kern remembers decisions in the kernel (kernel.go); nil: it does
	// not.
	kern       kernelDecider
	kernelExes exeNames
	splits     decisionSplits
	// names tells whether every process is told the same destination
	// name (nil: names are not learnt); hostDecs indexes the kernel
	// decisions that depend on one.
	names    hostNames
	hostDecs hostDecisions

	// traffic follows the connections allowed, for traffic accounting
	// (traffic.go); nil when accounting is not active.
	traffic atomic.Pointer[trafficTable]
}

func newEngine(log *slog.Logger, pol policy.Policy, r releaser) *Engine {
	e := &Engine{
		log:        log,
		pol:        pol,
		release:    r,
		now:        time.Now,
		after:      time.AfterFunc,
		hashes:     newExeHasher("/proc"),
		rules:      make(map[uint32]*uidRules),
		pending:    make(map[pendingKey]*pending),
		byID:       make(map[string]*pending),
		recent:     make(map[flow.Tuple][]recentVerdict),
		cache:      newDecisionCache(),
		shares:     newShares(defaultShareLimits()),
		watchers:   make(map[*subscriber[PendingEvent]]struct{}),
		watchedUID: make(map[uint32]int),
		budgets:    make(map[uint32]*queueBudget),
		byUID:      make(map[uint32]*uidCounters),
		decSubs:    make(map[*subscriber[Decision]]struct{}),
	}
	e.workers.init(&e.mu)
	return e
}

// Handle decides or holds one queued packet whose destination has no known
// name. It is called on the queue's goroutine and returns without waiting
// for anyone.
func (e *Engine) Handle(id PacketRef, t flow.Tuple, proc flow.Process) {
	e.HandleNamed(id, t, proc, "")
}

// HandleNamed is Handle for a packet whose destination address host was
// answered for (a hint from DNS; "" when unknown). Host rules match on it,
// and the pending entry and the decision carry it.
func (e *Engine) HandleNamed(id PacketRef, t flow.Tuple, proc flow.Process, host string) {
	e.Counters.Packets.Add(1)
	if proc.Known() && proc.Exe != "" {
		e.Counters.Identified.Add(1)
	} else {
		e.Counters.Unidentified.Add(1)
	}
	e.decide(id, t, proc, host, e.now(), nil)
}

// decide is HandleNamed past the counters, for a packet that arrived at
// now. w is the UID's rule worker when decide runs on it, nil on the packet
// goroutine.
func (e *Engine) decide(id PacketRef, t flow.Tuple, proc flow.Process, host string, now time.Time, w *ruleWorker) {
	e.mu.Lock()
	if w == nil { // on the worker, the packet was counted on its way there
		e.countPacketLocked(proc)
	}
	if e.closed {
		a := e.closeAction
		e.mu.Unlock()
		e.releaseOne(id, a, proc, t, host, "shutdown", now)
		return
	}
	if a, ok := e.recentLocked(t, recentSender{proc.UID, proc.TGID, proc.Exe, proc.Socket}, now); ok {
		e.mu.Unlock()
		e.releaseOne(id, a, proc, t, host, "retransmit", now)
		return
	}
	// SECURITY: a UID's rules are matched on that UID's worker
	// (ruleworker.go), so that one user's rules never delay another's
	// connections; a full queue costs only that UID's connections.
	if w == nil && e.rules[proc.UID] != nil {
		queued := e.enqueueRulesLocked(ruleJob{ref: id, t: t, proc: proc, host: host, now: now})
		e.mu.Unlock()
		if !queued {
			e.releaseOne(id, e.pol.TimeoutAction, proc, t, host, "rules-busy", now)
		}
		return
	}
	// The generation of the UID's kernel decisions, read before its
	// rules and cache: a decision remembered from rules or a cache that
	// changed after this point is stale (kernel.go).
	gen := e.kernelGen(proc.UID)
	// The UID's own rules come first. They are matched without the lock,
	// as a sha256 rule may wait for the executable's hash; if SetRules
	// replaced them meanwhile, the new ones are matched too, so that no
	// connection slips into the pending table past rules that already
	// cover it.
	for m := e.rules[proc.UID]; m != nil; {
		e.mu.Unlock()
		r, ok, late := m.match(e.hashes, proc, t, host, ruleTime(now), w)
		if late {
			// A hash the rules need was not ready by the prompt
			// deadline: the deadline's action, at the deadline.
			e.mu.Lock()
			a, by := e.pol.TimeoutAction, "deadline"
			if e.closed {
				a, by = e.closeAction, "shutdown"
			}
			e.mu.Unlock()
			e.releaseOne(id, a, proc, t, host, by, now)
			return
		}
		if ok {
			by := "rule:" + r.ID
			var expires time.Time
			if r.Lifetime == rules.Duration {
				expires = r.Expires
			}
			// Remembered before the packet goes: the program's next
			// connection, which may follow at once, is decided in the
			// kernel.
			e.rememberInKernel(gen, m, proc, t, host, now, r.Action, by, expires)
			e.releaseOne(id, r.Action, proc, t, host, by, now)
			return
		}
		e.mu.Lock()
		if e.closed {
			a := e.closeAction
			e.mu.Unlock()
			e.releaseOne(id, a, proc, t, host, "shutdown", now)
			return
		}
		next := e.rules[proc.UID]
		if next == m {
			break
		}
		m = next
	}
	exe := exeKey(proc)
	if ce := e.cache.lookup(proc.UID, exe, t, now); ce != nil {
		ce.hits++
		a, by, expires, m := ce.action, ce.by, ce.expires, e.rules[proc.UID]
		e.mu.Unlock()
		e.rememberInKernel(gen, m, proc, t, host, now, a, by, expires)
		e.releaseOne(id, a, proc, t, host, by, now)
		return
	}
	key := pendingKey{uid: proc.UID, exe: exe, proto: t.Proto, dst: t.Dst, port: t.DstPort}
	if proc.Exe == "" {
		key.comm = proc.Comm
	}
	if p := e.pending[key]; p != nil {
		if !e.shares.admit(proc.UID, false) {
			e.shedLocked(id, proc, now)
			return
		}
		p.held = append(p.held, heldPacket{id, t, p.sender(proc), proc.Socket})
		p.Packets = len(p.held)
		if !p.updateDue {
			p.updateDue = true
			e.after(updateInterval, func() { e.announceUpdate(p) })
		}
		e.mu.Unlock()
		return
	}
	rule := e.pol.For(proc.UID)
	if rule.Mode != policy.ModeAsk && e.watchedUID[proc.UID] == 0 {
		e.mu.Unlock()
		if rule.Log {
			e.log.Info("system policy decided", "uid", proc.UID, "pid", proc.TGID, "exe", proc.Exe,
				"dst", t, "verdict", rule.Mode.Action())
		}
		e.releaseOne(id, rule.Mode.Action(), proc, t, host, "policy", now)
		return
	}
	if !e.shares.admit(proc.UID, true) {
		e.shedLocked(id, proc, now)
		return
	}
	e.nextID++
	p := &pending{
		Pending: Pending{
			ID:             "c" + strconv.FormatUint(e.nextID, 10),
			Process:        proc,
			Tuple:          t,
			Host:           host,
			FirstSeen:      now,
			Deadline:       now.Add(e.pol.PromptTimeout),
			DeadlineAction: e.pol.TimeoutAction,
			Packets:        1,
		},
		key:     key,
		senders: make(map[senderKey]*flow.Process, 1),
	}
	p.held = []heldPacket{{id, t, p.sender(proc), proc.Socket}}
	p.timer = e.after(e.pol.PromptTimeout, func() { e.expire(p.ID) })
	e.pending[key] = p
	e.byID[p.ID] = p
	e.broadcastPendingLocked(PendingEvent{Kind: PendingAdded, Pending: p.Pending})
	e.mu.Unlock()
	e.log.Debug("holding connection", "id", p.ID, "uid", proc.UID, "pid", proc.TGID, "exe", proc.Exe, "dst", t, "host", host)
}

// HandleUnparsed gives a verdict to a packet whose headers could not be read.
// Such a packet cannot be attributed or asked about; the prompt timeout
// action applies to it at once.
func (e *Engine) HandleUnparsed(id PacketRef) {
	e.Counters.Packets.Add(1)
	e.Counters.Malformed.Add(1)
	e.releaseOne(id, e.pol.TimeoutAction, flow.Process{}, flow.Tuple{}, "", "unparsed", e.now())
}

// ruleTime is the time rules are matched at: the wall clock without Go's
// monotonic reading, exactly what rules.Now returns, taken from a reading
// the caller already has (a clock read costs ~200 ns on a VM). Comparisons
// with a monotonic reading would stop counting while the machine is
// suspended, and a Duration rule would outlive its expiry by the time
// spent asleep; the wall clock is advanced by the kernel on resume. The
// agent does not use a rules.BootClock: it starts at boot, often before
// the wall clock is synchronised, and would keep that error for its whole
// life, while rules' expiry times are wall times computed by the rules
// service.
func ruleTime(now time.Time) time.Time { return now.Round(0) }

// releaseOne gives a packet its verdict and records the decision as made
// at when. HandleNamed passes the clock reading it decided by (the cache
// entries, retransmission verdicts and rules were checked against it),
// so that a packet costs one clock read, not two: on a VM a read costs
// ~70 ns, as much as the rest of a cached decision.
func (e *Engine) releaseOne(id PacketRef, a flow.Action, proc flow.Process, t flow.Tuple, host, by string, when time.Time) {
	d := Decision{Time: when, Process: proc, Tuple: t, Host: host, Action: a, DecidedBy: by}
	if id, ok := strings.CutPrefix(by, "rule:"); ok {
		d.RuleID = id
	}
	// Followed before the packet goes: a short flow can end, and its
	// conntrack entry be destroyed, before the release call returns.
	e.follow(d)
	if err := e.release.Release(id, a); err != nil {
		e.Counters.ReleaseFailure.Add(1)
		e.log.Warn("release packet", "packet_id", id.ID, "verdict", a.String(), "err", err)
	}
	e.count(a)
	e.Counters.countBucket(bucketOf(by))
	if by != "retransmit" && by != "unparsed" { // the split counts connections
		e.splits.add(proc.UID, when, false)
	}
	e.publish(d)
}

func (e *Engine) count(a flow.Action) {
	switch a {
	case flow.ActionAllow:
		e.Counters.Allowed.Add(1)
	case flow.ActionDeny:
		e.Counters.Denied.Add(1)
	case flow.ActionReject:
		e.Counters.Rejected.Add(1)
	}
}

// resolveLocked removes p from the pending set and tells the watchers. The
// caller releases the returned packets after dropping the lock.
func (e *Engine) resolveLocked(p *pending, a flow.Action, by string) []heldPacket {
	delete(e.pending, p.key)
	delete(e.byID, p.ID)
	e.shares.release(p.Process.UID, len(p.held))
	p.timer.Stop()
	until := e.now().Add(retransmitWindow)
	for _, h := range p.held {
		e.rememberLocked(h.tuple, recentSender{h.proc.UID, h.proc.TGID, h.proc.Exe, h.socket}, a, until)
	}
	e.broadcastPendingLocked(PendingEvent{Kind: PendingResolved, Pending: p.Pending, Action: a, DecidedBy: by})
	return p.held
}

func (e *Engine) releaseHeld(p *pending, held []heldPacket, a flow.Action, by string) {
	for _, h := range held {
		e.releaseOne(h.ref, a, *h.proc, h.tuple, p.Host, by, e.now())
	}
}

func (e *Engine) expire(id string) {
	e.mu.Lock()
	p := e.byID[id]
	if p == nil {
		e.mu.Unlock()
		return
	}
	a := p.DeadlineAction
	held := e.resolveLocked(p, a, "deadline")
	e.mu.Unlock()
	e.log.Info("prompt deadline passed", "id", id, "uid", p.Process.UID, "exe", p.Process.Exe,
		"dst", p.Tuple.String(), "verdict", a.String())
	e.releaseHeld(p, held, a, "deadline")
}

// DecideRequest is an answer to a pending connection.
type DecideRequest struct {
	ID       string
	Action   flow.Action
	Scope    Scope
	Lifetime time.Duration // 0: until restart (ignored for ScopeConnection)
	Reason   DecideReason
}

// DecideReason says why a client decides: a person's answer, or the
// client's own deadline or silent action acting for nobody.
type DecideReason int

const (
	ReasonAnswer DecideReason = iota
	ReasonDeadline
	ReasonSilent
)

// decidedBy names a decision for uid's client, in the records and the
// counters (bucketOf).
func (r DecideReason) decidedBy(uid uint32) string {
	u := strconv.FormatUint(uint64(uid), 10)
	switch r {
	case ReasonDeadline:
		return "deadline:uid=" + u
	case ReasonSilent:
		return "default:uid=" + u
	}
	return "api:uid=" + u
}

// Decide answers a pending connection on behalf of caller. It returns the
// number of packets released and the cache entry made, if any.
func (e *Engine) Decide(caller peercred.Cred, req DecideRequest) (int, string, error) {
	if req.Action == flow.ActionNone || req.Scope > ScopeAny || req.Lifetime < 0 {
		return 0, "", errInvalid
	}
	e.mu.Lock()
	p := e.byID[req.ID]
	if p == nil {
		e.mu.Unlock()
		return 0, "", errNotFound
	}
	// SECURITY: a user decides only the connections of their own
	// processes, and another user's connection is "not found" to them, as
	// one that does not exist: the answer must not tell the two apart.
	if !visible(caller, p.Process.UID) {
		e.mu.Unlock()
		return 0, "", errNotFound
	}
	by := req.Reason.decidedBy(caller.UID)
	held := e.resolveLocked(p, req.Action, by)
	var (
		cacheID string
		kernel  func()
	)
	if req.Scope != ScopeConnection {
		var expires time.Time
		if req.Lifetime > 0 {
			// On the wall clock, as a rule's lifetime: it keeps
			// counting through suspend, and the kernel's copy of the
			// entry ends at the same wall time (internal/kdecide).
			expires = ruleTime(e.now()).Add(req.Lifetime)
		}
		ce := e.cache.put(keyFor(req.Scope, p.Process.UID, exeKey(p.Process), p.Tuple), req.Action, expires)
		ce.exeShown = p.Process.ExeDisplay()
		cacheID = ce.id
		e.settleCoveredLocked(ce, by)
		if req.Scope == ScopeDestinationPort && e.kern != nil {
			// The entry names one key: stored in the kernel at once,
			// under the generation its own addition made.
			gen, m, ceBy := e.kern.Gen(p.Process.UID), e.rules[p.Process.UID], ce.by
			kernel = func() { e.rememberCacheEntry(gen, m, p.Pending, req.Action, ceBy, expires) }
		}
	}
	e.mu.Unlock()
	if kernel != nil {
		kernel()
	}
	e.releaseHeld(p, held, req.Action, by)
	return len(held), cacheID, nil
}

// settleCoveredLocked decides the other pending entries a new cache entry
// covers, so that one answer with a wide scope clears every question it
// answers. Their packets are released by the goroutine it starts.
func (e *Engine) settleCoveredLocked(ce *cacheEntry, by string) {
	for _, other := range e.pending {
		if other.Process.UID != ce.key.uid || exeKey(other.Process) != ce.key.exe {
			continue
		}
		if keyFor(ce.key.scope, other.Process.UID, ce.key.exe, other.Tuple) != ce.key {
			continue
		}
		held := e.resolveLocked(other, ce.action, by)
		go e.releaseHeld(other, held, ce.action, by)
	}
}

// record follows d's connection for traffic accounting if it was allowed,
// counts d for its UID and publishes it to the history and the decision
// watchers.
func (e *Engine) record(d Decision) {
	e.follow(d)
	e.publish(d)
}

// follow remembers d's connection for traffic accounting if d allowed it.
func (e *Engine) follow(d Decision) {
	if tt := e.traffic.Load(); tt != nil && d.Action == flow.ActionAllow {
		tt.allowed(d)
	}
}

// publish counts d for its UID and publishes it to the history and the
// decision watchers.
func (e *Engine) publish(d Decision) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.countDecisionLocked(d)
	e.publishDecisionLocked(d)
}

// Stats returns the number of pending connections and cache entries.
func (e *Engine) Stats() (pendingN, cacheN int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.byID), len(e.cache.byID)
}

// HeldPackets returns the number of packets held for a decision.
func (e *Engine) HeldPackets() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.shares.held
}

// Run expires old retransmission verdicts and cache entries until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			e.gc()
		}
	}
}

func (e *Engine) gc() {
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	for t, rvs := range e.recent {
		rvs = slices.DeleteFunc(rvs, func(rv recentVerdict) bool { return !now.Before(rv.until) })
		if len(rvs) == 0 {
			delete(e.recent, t)
		} else {
			e.recent[t] = rvs
		}
	}
	e.cache.expire(now)
}

// Close releases every held packet with action and makes later packets get
// it too. It is the last thing the agent does with the queue.
func (e *Engine) Close(a flow.Action) {
	e.mu.Lock()
	e.closed, e.closeAction = true, a
	var all []*pending
	var helds [][]heldPacket
	for _, p := range e.byID {
		all = append(all, p)
		helds = append(helds, e.resolveLocked(p, a, "shutdown"))
	}
	for s := range e.watchers {
		e.dropWatcherLocked(s)
	}
	for s := range e.decSubs {
		e.dropDecisionWatcherLocked(s)
	}
	e.mu.Unlock()
	for i, p := range all {
		e.releaseHeld(p, helds[i], a, "shutdown")
	}
	e.stopWorkers()
}
