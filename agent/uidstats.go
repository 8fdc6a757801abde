package agent

import (
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/peercred"
)

// Per-UID counters: what GetStatus shows a non-root caller.
//
// SECURITY: a user sees the counts of their own UID only (packets,
// verdicts, pending and cached entries); how much another user connects,
// and where, is theirs. Root sees the totals.

// maxCountedUIDs bounds the UIDs counted one by one; later UIDs share one
// bucket that only the totals show. A user can only send as a handful of
// UIDs (their own, and the subordinate UIDs of their user namespaces).
const maxCountedUIDs = 4096

// uidCounters are one UID's share of the engine's counters. The engine's
// lock guards them.
type uidCounters struct {
	Packets, Allowed, Denied, Rejected                       uint64
	CacheHits, PolicyDecisions, APIDecisions, RuleDecisions  uint64
	DeadlineDecisions, Identified, Unidentified, Retransmits uint64
	SilentDecisions, OtherDecisions                          uint64
	// KernelDecisions counts the decisions the kernel made (kernel.go).
	KernelDecisions uint64
}

// UIDStats is what one UID may know of the engine's state.
type UIDStats struct {
	Counters       uidCounters
	Pending, Cache int
	// Held is the packets held for a decision.
	Held int
}

// uidCountersLocked returns uid's counters, or the shared bucket once
// maxCountedUIDs UIDs have counters.
func (e *Engine) uidCountersLocked(uid uint32) *uidCounters {
	// A packet is counted twice (arrival, verdict), and runs of packets
	// come from one UID: the last UID's counters skip the map.
	if e.lastCounters != nil && e.lastUID == uid {
		return e.lastCounters
	}
	c := e.byUID[uid]
	if c == nil {
		if len(e.byUID) >= maxCountedUIDs {
			return &e.otherUIDs
		}
		c = &uidCounters{}
		e.byUID[uid] = c
	}
	e.lastUID, e.lastCounters = uid, c
	return c
}

// countPacketLocked counts a packet of proc as it arrives.
func (e *Engine) countPacketLocked(proc flow.Process) {
	c := e.uidCountersLocked(proc.UID)
	c.Packets++
	if proc.Known() && proc.Exe != "" {
		c.Identified++
	} else {
		c.Unidentified++
	}
}

// countDecisionLocked counts a packet's verdict for its UID. Packets that
// could not be parsed belong to no UID.
func (e *Engine) countDecisionLocked(d Decision) {
	if d.DecidedBy == "unparsed" {
		return
	}
	c := e.uidCountersLocked(d.Process.UID)
	if d.Process.Source == kdecide.Source {
		// The kernel decided it: the agent never saw the packet
		// arrive, so it counts here, as in the totals (RecordKernel).
		c.KernelDecisions++
		c.Packets++
		c.Identified++
	}
	switch d.Action {
	case flow.ActionAllow:
		c.Allowed++
	case flow.ActionDeny:
		c.Denied++
	case flow.ActionReject:
		c.Rejected++
	}
	// The same bucket as in the totals (Counters.countBucket).
	switch bucketOf(d.DecidedBy) {
	case bucketRule:
		c.RuleDecisions++
	case bucketCache:
		c.CacheHits++
	case bucketPolicy:
		c.PolicyDecisions++
	case bucketAnswer:
		c.APIDecisions++
	case bucketDeadline:
		c.DeadlineDecisions++
	case bucketSilent:
		c.SilentDecisions++
	case bucketRetransmit:
		c.Retransmits++
	case bucketOther:
		c.OtherDecisions++
	}
}

// StatsFor returns what caller's UID may know: its counters and its
// pending and cached entries.
func (e *Engine) StatsFor(caller peercred.Cred) UIDStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	var st UIDStats
	if c := e.byUID[caller.UID]; c != nil {
		st.Counters = *c
	}
	for _, p := range e.byID {
		if p.Process.UID == caller.UID {
			st.Pending++
		}
	}
	st.Cache = e.cache.countFor(caller.UID)
	if u := e.shares.byUID[caller.UID]; u != nil {
		st.Held = u.held
	}
	return st
}
