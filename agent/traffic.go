package agent

import (
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/bastion-fw/bastion/internal/conntrack"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/peercred"
)

// Traffic accounting: what allowed connections carry, attributed to the
// process that opened them.
//
// Every allowed TCP or UDP connection whose source address and port the
// agent knows (every one the queue decided; those the kernel decided when
// its record carries them) is remembered in a trafficTable by its original
// tuple, with what the decision knew: process, destination name, what
// allowed it. The conntrack table is read every traffic_interval
// (traffic_sampler.go) and its counters (nf_conntrack_acct) joined with the
// remembered tuples; each connection whose counts grew gets a sample with
// the growth. Its final sample, marked ended, comes from the read that
// finds its TCP entry closed (TIME_WAIT or CLOSE), or from the first read
// that misses an entry gone at its timeout (the read before had its last
// counts); where the reads are too far apart to see every ended entry, from
// the kernel's notification that the entry was destroyed instead. The UDP
// tuple-reuse guard reads an entry's last counts before it deletes it.
// WatchTraffic streams the samples, each caller only those of its own UID
// (root all).
//
// Bounds: the table holds at most maxTrafficConns connections, and
// maxTrafficConnsPerUID of one UID (past either, the oldest connection of
// that UID, or of the UID with the most, is dropped and counted in lost), so
// that one user's connections cannot push another's out; a connection unseen in the conntrack table
// for trafficMissLimit reads is dropped (counted in lost, its bytes since
// the last read unknown, unless it was gone at its timeout); each stream
// queues at most
// trafficQueueLen samples and counts the ones it drops.

// maxTrafficConns bounds the connections followed at once (~18 MiB at
// trafficEntryBytes each); maxTrafficConnsPerUID those of one UID.
const (
	maxTrafficConns       = 32768
	maxTrafficConnsPerUID = 16384
)

// trafficMissLimit is how many reads of the conntrack table may miss a
// connection before it is taken for gone: its destroy notification may be
// on its way, or (for a connection just allowed) its entry not confirmed
// yet when the first read began.
const trafficMissLimit = 3

// trafficQueueLen bounds the samples queued for one WatchTraffic stream
// (~90 bytes each; 16 streams per UID at most, apilimits.go).
const trafficQueueLen = 4096

// trafficBatchLen bounds the samples of one TrafficBatch.
const trafficBatchLen = 256

// maxTrafficUIDs bounds the UIDs whose counts are kept apart for their own
// status; the others count only in the totals.
const maxTrafficUIDs = 4096

// trafficAttr is what the decision knew of a connection. It is immutable
// once made and shared by the connection's samples.
type trafficAttr struct {
	id     string
	proc   flow.Process
	tuple  flow.Tuple
	host   string
	by     string
	ruleID string
	first  time.Time
}

// trackedConn is one followed connection.
type trackedConn struct {
	attr *trafficAttr
	// ctID is the conntrack entry's ID once a read found it, 0 before.
	ctID uint32
	// orig and reply are the counts last read.
	orig, reply conntrack.Counters
	// seen is the number of the read that last found the entry; misses
	// counts the reads since that did not.
	seen   uint64
	misses uint8
	// expires is when the entry ends, as of the last read that found
	// it, unless a packet comes first; missedAt is the end of the first
	// read since then that did not find it.
	expires, missedAt time.Time
	// prev and next link the UID's connections oldest first, for
	// eviction; u is that UID's share.
	prev, next *trackedConn
	u          *uidTraffic
}

// trafficSample is one sample as queued for a stream.
type trafficSample struct {
	attr *trafficAttr
	time time.Time
	// Growth since the previous sample, and totals.
	sentBytes, recvBytes, sentPkts, recvPkts uint64
	totalSent, totalRecv                     uint64
	ended                                    bool
}

// uidTraffic is one UID's share: its connections, oldest first, and its
// counts.
type uidTraffic struct {
	oldest, newest      *trackedConn
	tracked             int
	sent, dropped, lost uint64
}

// trafficTable attributes conntrack's counts to the connections the agent
// allowed. It is safe for concurrent use.
type trafficTable struct {
	now       func() time.Time
	max       int
	maxPerUID int

	mu     sync.Mutex
	conns  map[flow.Tuple]*trackedConn
	nextID uint64
	// read numbers the reads of the conntrack table.
	read uint64
	// readsSeeEnds: the table is read more often than any ended entry
	// stays in it (trafficSampler), so the reads alone see every
	// connection's final counts, and no destroy notification comes.
	readsSeeEnds bool
	subs         map[*trafficSub]struct{}
	// Totals since start, and each UID's.
	sent, dropped, lost uint64
	byUID               map[uint32]*uidTraffic
	otherUIDs           uidTraffic
}

func newTrafficTable(max, maxPerUID int) *trafficTable {
	return &trafficTable{
		now:       time.Now,
		max:       max,
		maxPerUID: maxPerUID,
		conns:     make(map[flow.Tuple]*trackedConn),
		subs:      make(map[*trafficSub]struct{}),
		byUID:     make(map[uint32]*uidTraffic),
	}
}

// trafficKey is the tuple as conntrack reports it: IPv4-mapped addresses
// as IPv4, which is how the kernel tracks a dual-stack socket's IPv4 flows.
func trafficKey(t flow.Tuple) flow.Tuple {
	t.Src, t.Dst = t.Src.Unmap(), t.Dst.Unmap()
	return t
}

// followable reports whether a decision names a connection whose conntrack
// entry the table can find: TCP or UDP with a known source.
func followable(d *Decision) bool {
	t := &d.Tuple
	return d.Action == flow.ActionAllow && (t.Proto == flow.TCP || t.Proto == flow.UDP) &&
		t.Src.IsValid() && t.Dst.IsValid() && t.SrcPort != 0
}

// uidLocked returns uid's counts.
func (tt *trafficTable) uidLocked(uid uint32) *uidTraffic {
	u := tt.byUID[uid]
	if u == nil {
		if len(tt.byUID) >= maxTrafficUIDs {
			return &tt.otherUIDs
		}
		u = &uidTraffic{}
		tt.byUID[uid] = u
	}
	return u
}

// allowed starts following the connection an allow decision let through.
// A decision for a tuple already followed for the same process (a
// retransmission, or a datagram that joined the first one's question)
// changes nothing; one for another process ends the old connection, whose
// conntrack entry must be gone for the tuple to be decided again.
func (tt *trafficTable) allowed(d Decision) {
	if !followable(&d) {
		return
	}
	key := trafficKey(d.Tuple)
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if c := tt.conns[key]; c != nil {
		if c.attr.proc.UID == d.Process.UID && c.attr.proc.TGID == d.Process.TGID {
			return
		}
		tt.endLocked(c, conntrack.Counters{}, conntrack.Counters{}, false, tt.now())
	}
	u := tt.uidLocked(d.Process.UID)
	switch {
	case u.tracked >= tt.maxPerUID:
		tt.evictLocked(u)
	case len(tt.conns) >= tt.max:
		tt.evictLocked(tt.largestLocked())
	}
	tt.nextID++
	c := &trackedConn{attr: &trafficAttr{
		id: "t" + strconv.FormatUint(tt.nextID, 10), proc: d.Process, tuple: key,
		host: d.Host, by: d.DecidedBy, ruleID: d.RuleID, first: d.Time,
	}, seen: tt.read}
	tt.conns[key] = c
	c.u = u
	if u.newest == nil {
		u.oldest, u.newest = c, c
	} else {
		c.prev, u.newest.next, u.newest = u.newest, c, c
	}
	u.tracked++
}

// evictLocked stops following u's oldest connection: its further bytes
// are unknown.
func (tt *trafficTable) evictLocked(u *uidTraffic) {
	old := u.oldest
	if old == nil {
		return
	}
	tt.endLocked(old, old.orig, old.reply, false, tt.now())
	tt.lost++
	u.lost++
}

// largestLocked returns the share of the UID with the most connections.
// It runs only with the table full, and looks at each UID with any.
func (tt *trafficTable) largestLocked() *uidTraffic {
	big := &tt.otherUIDs
	for _, u := range tt.byUID {
		if u.tracked > big.tracked {
			big = u
		}
	}
	return big
}

// removeLocked stops following c.
func (tt *trafficTable) removeLocked(c *trackedConn) {
	delete(tt.conns, c.attr.tuple)
	u := c.u
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		u.oldest = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		u.newest = c.prev
	}
	c.prev, c.next = nil, nil
	u.tracked--
}

// endLocked publishes c's last sample, with counts orig and reply (those
// last read when the final ones are unknown), and stops following it.
// counted says whether the counts are the conntrack entry's own.
func (tt *trafficTable) endLocked(c *trackedConn, orig, reply conntrack.Counters, counted bool, now time.Time) {
	if !counted {
		orig, reply = c.orig, c.reply
	}
	tt.publishLocked(c, orig, reply, true, now)
	tt.removeLocked(c)
}

// publishLocked sends c's growth up to orig and reply to the streams that
// may see it, if it grew or ended, and remembers the counts.
func (tt *trafficTable) publishLocked(c *trackedConn, orig, reply conntrack.Counters, ended bool, now time.Time) {
	s := trafficSample{attr: c.attr, time: now, ended: ended,
		sentBytes: sub(orig.Bytes, c.orig.Bytes), recvBytes: sub(reply.Bytes, c.reply.Bytes),
		sentPkts: sub(orig.Packets, c.orig.Packets), recvPkts: sub(reply.Packets, c.reply.Packets),
		totalSent: max(orig.Bytes, c.orig.Bytes), totalRecv: max(reply.Bytes, c.reply.Bytes),
	}
	c.orig = conntrack.Counters{Packets: max(orig.Packets, c.orig.Packets), Bytes: s.totalSent}
	c.reply = conntrack.Counters{Packets: max(reply.Packets, c.reply.Packets), Bytes: s.totalRecv}
	if !ended && s.sentBytes == 0 && s.recvBytes == 0 && s.sentPkts == 0 && s.recvPkts == 0 {
		return
	}
	uid := c.attr.proc.UID
	for sb := range tt.subs {
		if !visible(sb.cred, uid) {
			continue
		}
		if !sb.push(s) {
			tt.dropped++
			tt.uidLocked(sb.cred.UID).dropped++
		}
	}
}

// sub is a - b, or 0 when counts went backwards (they never should).
func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// beginRead starts a read of the conntrack table.
func (tt *trafficTable) beginRead() {
	tt.mu.Lock()
	tt.read++
	tt.mu.Unlock()
}

// readFlows joins entries of the read in progress with the followed
// connections, publishing their growth.
func (tt *trafficTable) readFlows(flows []conntrack.Flow) {
	now := tt.now()
	tt.mu.Lock()
	defer tt.mu.Unlock()
	for i := range flows {
		f := &flows[i]
		c := tt.conns[f.Tuple]
		if c == nil || f.Zone != 0 {
			continue
		}
		if c.ctID != 0 && c.ctID != f.ID {
			// Another entry holds the tuple now: the followed one
			// ended unnoticed, and the new one is not known to be
			// the same program's.
			tt.endLocked(c, conntrack.Counters{}, conntrack.Counters{}, false, now)
			tt.lost++
			c.u.lost++
			continue
		}
		c.ctID, c.seen, c.misses = f.ID, tt.read, 0
		if f.HasTimeout {
			c.expires = now.Add(time.Duration(f.Timeout) * time.Second)
		}
		if f.Tuple.Proto == flow.TCP && f.TCPState.Closed() {
			// Closed: these counts are its last.
			tt.endLocked(c, f.Orig, f.Reply, f.HasCounters, now)
			continue
		}
		if f.HasCounters {
			tt.publishLocked(c, f.Orig, f.Reply, false, now)
		}
	}
}

// setReadsSeeEnds says whether the reads alone see connections' ends.
func (tt *trafficTable) setReadsSeeEnds(v bool) {
	tt.mu.Lock()
	tt.readsSeeEnds = v
	tt.mu.Unlock()
}

// wantsFinal reports whether a connection with tuple t is followed and
// its final counts can come only from the caller: its entry is about to be
// deleted, and no destroy notification will bring them.
func (tt *trafficTable) wantsFinal(t flow.Tuple) bool {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return tt.readsSeeEnds && tt.conns[trafficKey(t)] != nil
}

// endRead finishes a read: connections it did not find for
// trafficMissLimit reads in a row are taken for gone.
func (tt *trafficTable) endRead() {
	now := tt.now()
	tt.mu.Lock()
	defer tt.mu.Unlock()
	for _, c := range tt.conns {
		if c.seen == tt.read {
			continue
		}
		if c.misses == 0 {
			c.missedAt = now
		}
		if c.misses++; c.misses < trafficMissLimit {
			continue
		}
		if c.ctID != 0 && tt.readsSeeEnds && !c.expires.IsZero() && !c.missedAt.Before(c.expires) {
			// Gone no earlier than its timeout, as conntrack ends
			// an entry no packet renewed: none came after the last
			// read (one would have kept it for a whole timeout,
			// longer than a read's interval), whose counts are its
			// last.
			tt.endLocked(c, c.orig, c.reply, true, now)
			continue
		}
		// Deleted before its time, or never read: its last bytes (all
		// of them if it was never read) are unknown.
		tt.lost++
		c.u.lost++
		if c.ctID != 0 {
			tt.endLocked(c, c.orig, c.reply, true, now)
		} else {
			tt.removeLocked(c)
		}
	}
}

// destroyed publishes the final counts of destroyed conntrack entries.
func (tt *trafficTable) destroyed(flows []conntrack.Flow) {
	now := tt.now()
	tt.mu.Lock()
	defer tt.mu.Unlock()
	for i := range flows {
		f := &flows[i]
		c := tt.conns[f.Tuple]
		if c == nil || f.Zone != 0 || (c.ctID != 0 && c.ctID != f.ID) {
			continue // not followed, or an older entry of the tuple
		}
		tt.endLocked(c, f.Orig, f.Reply, f.HasCounters, now)
	}
}

// len returns the number of connections followed.
func (tt *trafficTable) len() int {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return len(tt.conns)
}

// trafficEntryBytes estimates the memory of one followed connection: its
// two structures, and 208 bytes for its map slot (key and pointer, at the
// map's load factor) and its ID, as BenchmarkTrafficTableMemory measured
// with 65,536 connections (592 bytes in all). Its strings (exe, command
// line, host) are the decision's, shared with the engine's history.
const trafficEntryBytes = int(unsafe.Sizeof(trackedConn{})+unsafe.Sizeof(trafficAttr{})) + 208

// TrafficStats is the accounting's status as one caller may see it.
type TrafficStats struct {
	Tracked             int
	MemoryBytes         uint64
	Sent, Dropped, Lost uint64
}

// stats returns the counts caller may see: all for root, its UID's for
// others.
//
// SECURITY: a non-root caller learns nothing of other UIDs' connections.
func (tt *trafficTable) stats(caller peercred.Cred) TrafficStats {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	var st TrafficStats
	if caller.IsRoot() {
		st = TrafficStats{Tracked: len(tt.conns), Sent: tt.sent, Dropped: tt.dropped, Lost: tt.lost}
	} else if u := tt.byUID[caller.UID]; u != nil {
		st = TrafficStats{Tracked: u.tracked, Sent: u.sent, Dropped: u.dropped, Lost: u.lost}
	}
	st.MemoryBytes = uint64(st.Tracked) * uint64(trafficEntryBytes)
	return st
}

// trafficSub is one WatchTraffic stream's queue.
type trafficSub struct {
	cred  peercred.Cred
	ready chan struct{}

	mu      sync.Mutex
	queue   []trafficSample
	dropped uint64
}

// push queues s, or counts it dropped when the queue is full.
func (sb *trafficSub) push(s trafficSample) bool {
	sb.mu.Lock()
	ok := len(sb.queue) < trafficQueueLen
	if ok {
		sb.queue = append(sb.queue, s)
	} else {
		sb.dropped++
	}
	sb.mu.Unlock()
	select {
	case sb.ready <- struct{}{}:
	default:
	}
	return ok
}

// take moves up to max queued samples to buf, oldest first, and returns
// the samples dropped since the previous take.
func (sb *trafficSub) take(buf []trafficSample, max int) ([]trafficSample, uint64) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	n := min(max, len(sb.queue))
	buf = append(buf, sb.queue[:n]...)
	rest := copy(sb.queue, sb.queue[n:])
	clear(sb.queue[rest:])
	sb.queue = sb.queue[:rest]
	if rest == 0 && cap(sb.queue) > trafficBatchLen {
		sb.queue = nil // a burst's memory goes back
	}
	d := sb.dropped
	sb.dropped = 0
	if rest > 0 || d > 0 {
		select {
		case sb.ready <- struct{}{}:
		default:
		}
	}
	return buf, d
}

// subscribe starts a stream of the samples caller may see.
func (tt *trafficTable) subscribe(caller peercred.Cred) *trafficSub {
	sb := &trafficSub{cred: caller, ready: make(chan struct{}, 1)}
	tt.mu.Lock()
	tt.subs[sb] = struct{}{}
	tt.mu.Unlock()
	return sb
}

func (tt *trafficTable) unsubscribe(sb *trafficSub) {
	tt.mu.Lock()
	delete(tt.subs, sb)
	tt.mu.Unlock()
}

// countSent counts samples a stream sent.
func (tt *trafficTable) countSent(sb *trafficSub, n int) {
	tt.mu.Lock()
	tt.sent += uint64(n)
	tt.uidLocked(sb.cred.UID).sent += uint64(n)
	tt.mu.Unlock()
}

// trafficAccounting is the accounting as the API sees it: the table, and
// whether it is fed.
type trafficAccounting struct {
	table    *trafficTable
	interval time.Duration

	mu    sync.Mutex
	state string
}

func (a *trafficAccounting) setState(s string) {
	a.mu.Lock()
	a.state = s
	a.mu.Unlock()
}

// State is "active", "off (reason)", "unavailable (reason)" or "stopped
// (reason)".
func (a *trafficAccounting) State() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

const trafficActive = "active"
