package agent

import (
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/bastion-fw/bastion/internal/dnsnames"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/fw"
	"github.com/bastion-fw/bastion/internal/nfq"
	"github.com/bastion-fw/bastion/internal/procid"
)

// dnsCopyLen is how much of each DNS answer the queue copies: the largest
// UDP payload resolvers use with EDNS (4096) and the headers, with room.
const dnsCopyLen = 8192

// nameBook learns destination names from the DNS answers queued to it and
// tells the connection path the name of an address for a process.
//
// SECURITY: an answer names addresses only for the UID (and first the
// process) whose query it answered. The agent sees each query leave: the
// first packet of every new UDP flow comes through the connection queue
// with its socket's UID (querySent), and queries on loopback, which that
// queue skips unless loopback is intercepted, come through the DNS queue
// (dnsVerdicts). An answer is read on the reply tuple of a query flow; one
// whose query the agent did not see names nothing. Answers to the queries
// of a trusted resolver UID name addresses for everyone.
type nameBook struct {
	log     *slog.Logger
	cache   *dnsnames.Cache
	queries *dnsnames.Queries
	trusted map[uint32]bool

	// changed is told of every address whose name changes for anyone
	// (Engine.ForgetName), before the answer that changed it is released.
	changed atomic.Pointer[func(netip.Addr)]

	answers   atomic.Uint64 // answers read (parsed, with or without addresses)
	malformed atomic.Uint64 // packets on the DNS queue that did not parse
	unbound   atomic.Uint64 // answers with addresses that named nothing: query not seen, or a wrong ID
}

func newNameBook(log *slog.Logger, cfg dnsnames.CacheConfig, trusted []uint32) *nameBook {
	b := &nameBook{log: log, queries: dnsnames.NewQueries(dnsnames.QueriesConfig{Now: cfg.Now}),
		trusted: make(map[uint32]bool, len(trusted))}
	cfg.OnChange = func(addr netip.Addr) {
		if f := b.changed.Load(); f != nil {
			(*f)(addr)
		}
	}
	b.cache = dnsnames.NewCache(cfg)
	for _, uid := range trusted {
		b.trusted[uid] = true
	}
	return b
}

// lookup returns the name answered for addr to proc's process or UID, ""
// when none. A nil book knows no names.
func (b *nameBook) lookup(proc flow.Process, addr netip.Addr) string {
	if b == nil {
		return ""
	}
	name, _ := b.cache.Lookup(dnsnames.Owner{UID: proc.UID, TGID: proc.TGID}, addr)
	return name
}

// onChange makes f hear of every address whose name changes (nil: no one).
func (b *nameBook) onChange(f func(netip.Addr)) {
	switch {
	case b == nil:
	case f == nil:
		b.changed.Store(nil)
	default:
		b.changed.Store(&f)
	}
}

// uniform reports whether every process of uid is told the same name for
// addr, and which (dnsnames.Cache.Uniform).
func (b *nameBook) uniform(uid uint32, addr netip.Addr) (string, time.Time, bool) {
	return b.cache.Uniform(uid, addr)
}

// querySent records the DNS query in pkt, sent on t by proc (UID from the
// kernel's queue metadata). Anything that is not a UDP DNS query to port
// 53 is ignored; for those it costs two comparisons.
func (b *nameBook) querySent(t flow.Tuple, transportOffset int, pkt []byte, proc flow.Process) {
	if b == nil || t.Proto != flow.UDP || t.DstPort != 53 {
		return
	}
	id, ok := dnsnames.QueryID(pkt, transportOffset)
	if !ok {
		return
	}
	b.queries.Sent(t, dnsnames.Owner{UID: proc.UID, TGID: proc.TGID}, proc.Socket, id)
}

// forgetQuery drops what was recorded of query flow t once socket, which
// sent it, is destroyed.
func (b *nameBook) forgetQuery(t flow.Tuple, socket uint64) {
	if b != nil && t.Proto == flow.UDP && t.DstPort == 53 {
		b.queries.Forget(t, socket)
	}
}

// learn reads one queued answer that arrived on tuple t. The payload is
// only valid during the call; nothing here keeps a reference to it (the
// parsed names are new strings).
func (b *nameBook) learn(t flow.Tuple, payload []byte) {
	ans, err := dnsnames.Parse(payload)
	if err != nil {
		b.malformed.Add(1)
		b.log.Debug("unreadable DNS answer", "err", err, "bytes", len(payload))
		return
	}
	b.answers.Add(1)
	if len(ans.Records) == 0 {
		return
	}
	owner, m := b.queries.Answered(t, ans.ID)
	switch m {
	case dnsnames.MatchUnknown, dnsnames.MatchWrongID:
		// SECURITY: nobody is known to have asked; the answer names
		// nothing for anyone.
		b.unbound.Add(1)
		b.log.Debug("DNS answer to no query seen names nothing", "host", ans.Name, "flow", t.String(),
			"id", ans.ID, "wrong_id", m == dnsnames.MatchWrongID)
		return
	}
	if b.trusted[owner.UID] {
		owner = dnsnames.Everyone
	}
	n := b.cache.Add(owner, ans)
	b.log.Debug("DNS answer", "host", ans.Name, "cnames", ans.CNAMEs, "addresses", n, "uid", owner.UID, "pid", owner.TGID)
}

// counts returns the answers read, the malformed packets and the
// addresses with a name (for some user); zeros for a nil book.
func (b *nameBook) counts() (answers, malformed uint64, names int) {
	if b == nil {
		return 0, 0, 0
	}
	return b.answers.Load(), b.malformed.Load(), b.cache.Addresses()
}

// sweep forgets expired names and idle query flows.
func (b *nameBook) sweep() {
	b.cache.Sweep()
	b.queries.Sweep()
}

// dnsVerdicts reads what the DNS queue brings and gives each packet its
// verdict the moment it has been read: NF_REPEAT with the Allow mark, so
// that it walks its chain again, returns from Bastion's rule and meets the
// rest of the chain like any packet (NF_ACCEPT would skip the
// administrator's later rules).
//
// The queue brings answers (mangle INPUT) and, unless loopback is
// intercepted, the queries programs send on loopback (filter OUTPUT), told
// apart by the hook they were queued from, never by their bytes. res names
// a loopback query's process where that is cheap (an eBPF map lookup); nil
// leaves it unknown (the UID still binds). guard, if set, learns the
// loopback query flows too, so that their records go with their sockets.
type dnsVerdicts struct {
	q     *nfq.Queue
	marks fw.Marks
	res   procid.Resolver
	guard *udpReuseGuard
}

func (v dnsVerdicts) handle(b *nameBook, p nfq.Packet) {
	// SECURITY: every packet is re-injected at once, whatever it says:
	// reading names must never hold or drop DNS.
	switch {
	case p.Hook == nfq.HookLocalOut:
		if p.ParseErr == nil && p.HasUID {
			proc := flow.Process{}
			if v.res != nil {
				if r, err := v.res.Resolve(p.Tuple); err == nil {
					proc = r
				}
			}
			// SECURITY: the UID is the kernel's, from the queue metadata.
			proc.UID, proc.GID = p.UID, p.GID
			v.guard.Sent(p.Tuple, proc)
			b.querySent(p.Tuple, p.Info.TransportOffset, p.Payload, proc)
		}
	case p.ParseErr != nil:
		b.malformed.Add(1)
	default:
		b.learn(p.Tuple, p.Payload)
	}
	if err := v.q.Repeat(p.ID, p.Mark&^v.marks.Mask|v.marks.Allow); err != nil {
		b.log.Warn("re-inject DNS packet", "packet_id", p.ID, "err", err)
	}
}
