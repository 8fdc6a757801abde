package dnsnames

import (
	"container/list"
	"sync"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Queries defaults.
const (
	// DefaultMaxQueryFlows bounds the query flows remembered in all.
	DefaultMaxQueryFlows = 65536
	// DefaultMaxQueryFlowsPerUID bounds one UID's: a resolver has a few
	// dozen lookups in flight at most, and most flows are forgotten when
	// their socket closes.
	DefaultMaxQueryFlowsPerUID = 4096
	// DefaultQueryIdle is how long a query flow is remembered after the
	// last query or answer seen on it: as long as conntrack keeps an
	// answered UDP flow (120 s), with room. A later query on the same
	// tuple is a new flow, seen again.
	DefaultQueryIdle = 3 * time.Minute
)

// maxQueryIDs bounds the message IDs remembered per flow: a resolver sends
// one or two queries (A and AAAA) per socket, musl a few per server.
const maxQueryIDs = 8

// QueriesConfig bounds Queries; zero fields take the defaults.
type QueriesConfig struct {
	MaxFlows, MaxPerUID int
	Idle                time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Match says how an answer relates to the queries seen on its flow.
type Match uint8

const (
	// MatchUnknown: no query was seen on the answer's flow (it left
	// before the agent started, or its record was forgotten).
	MatchUnknown Match = iota
	// MatchID: the answer's message ID is that of a query seen on the flow.
	MatchID
	// MatchFlow: the flow had an answer that matched a seen query before,
	// and this one answers a later query the agent could not see (queries
	// sent after a flow's first answer pass on conntrack's verdict).
	MatchFlow
	// MatchWrongID: queries were seen on the flow, none with the answer's
	// ID, and none has been answered yet.
	MatchWrongID
)

// Queries remembers the DNS queries the agent saw leave: per UDP flow (the
// query's 5-tuple), the UID and process of the socket that sent it and the
// message IDs, so that an answer on that flow's reply tuple can be bound to
// whoever asked (Answered). It is safe for concurrent use.
//
// SECURITY: a flow is bound to one socket. A query on a known flow from
// another UID or another socket replaces the record, and Forget drops it
// when the socket is destroyed, so a new socket that reuses the tuple never
// inherits the old one's owner.
type Queries struct {
	cfg QueriesConfig

	mu     sync.Mutex
	byFlow map[flow.Tuple]*list.Element
	users  map[uint32]*list.List // per UID, of *queryFlow, most recently active first
	n      int
}

type queryFlow struct {
	tuple    flow.Tuple
	owner    Owner
	socket   uint64
	ids      [maxQueryIDs]uint16
	nids     uint8 // IDs held; the oldest is overwritten past maxQueryIDs
	next     uint8 // where the next ID goes
	answered bool  // an answer matched a seen ID
	last     time.Time
}

// NewQueries returns an empty record of queries.
func NewQueries(cfg QueriesConfig) *Queries {
	if cfg.MaxFlows <= 0 {
		cfg.MaxFlows = DefaultMaxQueryFlows
	}
	if cfg.MaxPerUID <= 0 {
		cfg.MaxPerUID = DefaultMaxQueryFlowsPerUID
	}
	cfg.MaxPerUID = min(cfg.MaxPerUID, cfg.MaxFlows)
	if cfg.Idle <= 0 {
		cfg.Idle = DefaultQueryIdle
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Queries{cfg: cfg, byFlow: make(map[flow.Tuple]*list.Element), users: make(map[uint32]*list.List)}
}

// normal returns t with unmapped addresses, the form flows are keyed by.
func normal(t flow.Tuple) flow.Tuple {
	t.Src, t.Dst = t.Src.Unmap(), t.Dst.Unmap()
	return t
}

// Sent records a query with message ID id sent on flow t (towards the
// server) by socket (its inode; 0 unknown) of owner o.
func (q *Queries) Sent(t flow.Tuple, o Owner, socket uint64, id uint16) {
	t = normal(t)
	now := q.cfg.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	if el, ok := q.byFlow[t]; ok {
		f := el.Value.(*queryFlow)
		if f.owner.UID == o.UID && (f.socket == socket || f.socket == 0 || socket == 0) {
			if f.socket == 0 {
				f.socket = socket
			}
			if f.owner.TGID == 0 {
				f.owner.TGID = o.TGID
			}
			f.addID(id)
			f.last = now
			q.users[o.UID].MoveToFront(el)
			return
		}
		// SECURITY: another user or socket now sends on this tuple: it
		// inherits nothing.
		q.removeLocked(el)
	}
	l := q.users[o.UID]
	if l == nil {
		l = list.New()
		q.users[o.UID] = l
	}
	for l.Len() >= q.cfg.MaxPerUID {
		q.removeLocked(l.Back())
	}
	for q.n >= q.cfg.MaxFlows {
		var big *list.List
		for _, ul := range q.users {
			if big == nil || ul.Len() > big.Len() {
				big = ul
			}
		}
		q.removeLocked(big.Back())
	}
	if q.users[o.UID] == nil {
		q.users[o.UID] = l
	}
	f := &queryFlow{tuple: t, owner: o, socket: socket, last: now}
	f.addID(id)
	q.byFlow[t] = l.PushFront(f)
	q.n++
}

func (f *queryFlow) addID(id uint16) {
	for i := range f.nids {
		if f.ids[i] == id {
			return
		}
	}
	f.ids[f.next] = id
	f.next = (f.next + 1) % maxQueryIDs
	if f.nids < maxQueryIDs {
		f.nids++
	}
}

func (f *queryFlow) hasID(id uint16) bool {
	for i := range f.nids {
		if f.ids[i] == id {
			return true
		}
	}
	return false
}

func (q *Queries) removeLocked(el *list.Element) {
	f := el.Value.(*queryFlow)
	delete(q.byFlow, f.tuple)
	l := q.users[f.owner.UID]
	l.Remove(el)
	q.n--
	if l.Len() == 0 {
		delete(q.users, f.owner.UID)
	}
}

// Answered returns who sent the query that an answer with message ID id,
// arriving on reply tuple r (from the server's port 53), answers, and how
// it matched. The owner is valid for MatchID and MatchFlow only.
func (q *Queries) Answered(r flow.Tuple, id uint16) (Owner, Match) {
	t := normal(flow.Tuple{Proto: r.Proto, Src: r.Dst, Dst: r.Src, SrcPort: r.DstPort, DstPort: r.SrcPort})
	q.mu.Lock()
	defer q.mu.Unlock()
	el, ok := q.byFlow[t]
	if !ok {
		return Owner{}, MatchUnknown
	}
	f := el.Value.(*queryFlow)
	now := q.cfg.Now()
	if now.Sub(f.last) >= q.cfg.Idle {
		q.removeLocked(el)
		return Owner{}, MatchUnknown
	}
	var m Match
	switch {
	case f.hasID(id):
		m = MatchID
		f.answered = true
	case f.answered:
		m = MatchFlow
	default:
		// SECURITY: not what the program asked; the program will
		// most likely discard it too.
		return Owner{}, MatchWrongID
	}
	f.last = now
	q.users[f.owner.UID].MoveToFront(el)
	return f.owner, m
}

// Forget drops the record of flow t if it was sent by socket, or by an
// unknown socket: the socket is gone, and a new one that reuses the tuple
// must be seen afresh.
func (q *Queries) Forget(t flow.Tuple, socket uint64) {
	t = normal(t)
	q.mu.Lock()
	defer q.mu.Unlock()
	if el, ok := q.byFlow[t]; ok {
		if f := el.Value.(*queryFlow); f.socket == 0 || f.socket == socket {
			q.removeLocked(el)
		}
	}
}

// Sweep forgets flows idle for longer than the configured time and
// returns how many are left.
func (q *Queries) Sweep() int {
	now := q.cfg.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, l := range q.users {
		for el := l.Back(); el != nil; {
			prev := el.Prev()
			if now.Sub(el.Value.(*queryFlow).last) < q.cfg.Idle {
				break // the rest are more recent
			}
			q.removeLocked(el)
			el = prev
		}
	}
	return q.n
}

// Len returns the number of query flows held.
func (q *Queries) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}
