package agent

import (
	"slices"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/peercred"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// Each UID's share of the held packets.
//
// Every held packet sits in the kernel's queue until its verdict, and the
// queue is one FIFO for all users: without a bound, one user's burst of
// connections fills it, and every other user's first packets are dropped
// by the kernel until the burst is decided (for up to the prompt timeout).
// So the engine bounds what each UID may keep held, and what all UIDs may
// keep held together; a packet beyond its UID's share is dropped at once
// (NF_DROP: TCP sends the SYN again after 1 s, 3 s, 7 s, ..., and it is
// asked about then if the share has room), counted per UID, and logged at
// most once per shedLogInterval per UID.
//
// The kernel queue is sized to hold every share plus a burst that the agent
// has not read yet (connQueueLen), and its socket to hold that many
// messages (connQueueReadBuffer), so that a burst is read, and its excess
// dropped by the agent, before it crowds out anyone else's packets.

// The kernel queue of connections: its length and its socket's receive
// buffer. docs/security.md (Resource limits) gives the memory they imply.
const (
	connQueueLen        = 16384
	connQueueReadBuffer = 16 << 20
)

// shedLogInterval bounds how often one UID's shedding is logged.
const shedLogInterval = 10 * time.Second

// shareLimits bounds the held packets and pending entries (prompts) of one
// UID and of all UIDs together. A UID that holds fewer than the reserved
// numbers is admitted even when the totals are reached, so that a few
// flooding UIDs cannot take every other UID's place.
type shareLimits struct {
	HeldPerUID, PendingPerUID           int
	HeldTotal, PendingTotal             int
	ReservedHeldPerUID, ReservedPending int
}

// defaultShareLimits are the agent's bounds. HeldPerUID leaves room for a
// program that opens hundreds of parallel connections to one destination
// while its user is asked.
func defaultShareLimits() shareLimits {
	return shareLimits{
		HeldPerUID: 1024, PendingPerUID: 128,
		HeldTotal: 4096, PendingTotal: 1024,
		ReservedHeldPerUID: 64, ReservedPending: 16,
	}
}

// uidShare is one UID's use of its share.
type uidShare struct {
	held, pending int
	// shed counts the packets dropped beyond the share since the agent
	// started; logged is its value when it was last logged.
	shed, logged uint64
	loggedAt     time.Time
}

// shares tracks the held packets and pending entries per UID. The engine
// calls it under its lock.
type shares struct {
	limits        shareLimits
	byUID         map[uint32]*uidShare
	held, pending int
}

func newShares(l shareLimits) *shares {
	return &shares{limits: l, byUID: make(map[uint32]*uidShare)}
}

func (s *shares) of(uid uint32) *uidShare {
	u := s.byUID[uid]
	if u == nil {
		u = &uidShare{}
		s.byUID[uid] = u
	}
	return u
}

// admit reports whether uid may hold one more packet, in a new pending
// entry when newEntry, and if so counts it.
//
// SECURITY: this bounds the kernel queue's held packets, and so what one
// user's burst can take from the others.
func (s *shares) admit(uid uint32, newEntry bool) bool {
	l := s.limits
	u := s.byUID[uid]
	var held, pending int
	if u != nil {
		held, pending = u.held, u.pending
	}
	if held >= l.HeldPerUID || held >= l.ReservedHeldPerUID && s.held >= l.HeldTotal {
		return false
	}
	if newEntry && (pending >= l.PendingPerUID || pending >= l.ReservedPending && s.pending >= l.PendingTotal) {
		return false
	}
	u = s.of(uid)
	u.held++
	s.held++
	if newEntry {
		u.pending++
		s.pending++
	}
	return true
}

// release gives back a decided entry's packets.
func (s *shares) release(uid uint32, packets int) {
	u := s.byUID[uid]
	if u == nil {
		return
	}
	u.held -= packets
	u.pending--
	s.held -= packets
	s.pending--
	if u.held == 0 && u.pending == 0 && u.shed == 0 {
		delete(s.byUID, uid)
	}
}

// shed counts a packet of uid dropped beyond its share. When the UID's
// shedding is due to be logged it returns the number shed since the last
// log line, else 0.
func (s *shares) shed(uid uint32, now time.Time) (toLog uint64) {
	u := s.of(uid)
	u.shed++
	if now.Sub(u.loggedAt) < shedLogInterval {
		return 0
	}
	toLog = u.shed - u.logged
	u.logged, u.loggedAt = u.shed, now
	return toLog
}

// ShareStatus is one UID's use of its share, as GetStatus reports it.
type ShareStatus struct {
	UID           uint32
	Held, Pending int
	// Shed is the number of packets dropped beyond the share since the
	// agent started.
	Shed uint64
}

// Shares returns the use of the UIDs that hold packets or have had some
// shed, of those caller may see, and the limits.
func (e *Engine) Shares(caller peercred.Cred) ([]ShareStatus, shareLimits) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []ShareStatus
	for uid, u := range e.shares.byUID {
		if visible(caller, uid) {
			out = append(out, ShareStatus{UID: uid, Held: u.held, Pending: u.pending, Shed: u.shed})
		}
	}
	slices.SortFunc(out, func(a, b ShareStatus) int { return int(int64(a.UID) - int64(b.UID)) })
	return out, e.shares.limits
}

// dropper is a releaser that can also discard a packet outright (NF_DROP),
// without re-injecting it with a verdict mark.
type dropper interface {
	Drop(p PacketRef) error
}

// shedLocked drops a packet of proc's UID that is beyond the UID's share;
// it is not a decision, so it is neither recorded nor remembered for
// retransmissions. It unlocks e.mu. Nothing is logged per packet, not
// even at debug: a flood would be written out packet by packet.
func (e *Engine) shedLocked(id PacketRef, proc flow.Process, now time.Time) {
	toLog := e.shares.shed(proc.UID, now)
	u := e.shares.byUID[proc.UID]
	held, pending := u.held, u.pending
	e.mu.Unlock()
	e.Counters.Shed.Add(1)
	var err error
	if d, ok := e.release.(dropper); ok {
		err = d.Drop(id)
	} else {
		err = e.release.Release(id, flow.ActionDeny)
	}
	if err != nil {
		e.Counters.ReleaseFailure.Add(1)
		e.log.Warn("drop packet beyond its uid's share", "packet_id", id.ID, "err", err)
	}
	if toLog > 0 {
		l := e.shares.limits
		e.log.Warn("uid is over its share of held connections: its new connections are dropped (TCP resends them) until some are decided",
			"uid", proc.UID, "held_packets", held, "pending", pending, "dropped", toLog,
			"held_per_uid", l.HeldPerUID, "pending_per_uid", l.PendingPerUID)
	}
}

func shareLimitsToProto(l shareLimits) *agentv1.ShareLimits {
	return &agentv1.ShareLimits{
		HeldPacketsPerUid: uint32(l.HeldPerUID), PendingPerUid: uint32(l.PendingPerUID),
		HeldPacketsTotal: uint32(l.HeldTotal), PendingTotal: uint32(l.PendingTotal),
		ReservedHeldPacketsPerUid: uint32(l.ReservedHeldPerUID), ReservedPendingPerUid: uint32(l.ReservedPending),
		QueueMaxLen: connQueueLen,
	}
}
