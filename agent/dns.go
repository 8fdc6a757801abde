package agent

import (
	"log/slog"
	"net/netip"
	"sync/atomic"

	"github.com/bastion-fw/bastion/internal/dnsnames"
	"github.com/bastion-fw/bastion/internal/fw"
	"github.com/bastion-fw/bastion/internal/nfq"
)

// dnsCopyLen is how much of each DNS answer the queue copies: the largest
// UDP payload resolvers use with EDNS (4096) and the headers, with room.
const dnsCopyLen = 8192

// nameBook learns destination names from the DNS answers queued to it and
// tells the connection path the name of an address.
type nameBook struct {
	log   *slog.Logger
	cache *dnsnames.Cache

	answers   atomic.Uint64 // answers read (parsed, with or without addresses)
	malformed atomic.Uint64 // packets on the DNS queue that did not parse
}

func newNameBook(log *slog.Logger, cfg dnsnames.CacheConfig) *nameBook {
	return &nameBook{log: log, cache: dnsnames.NewCache(cfg)}
}

// lookup returns the name answered for addr, "" when none. A nil book
// knows no names.
func (b *nameBook) lookup(addr netip.Addr) string {
	if b == nil {
		return ""
	}
	name, _ := b.cache.Lookup(addr)
	return name
}

// learn reads one queued packet. The payload is only valid during the
// call; nothing here keeps a reference to it (the parsed names are new
// strings).
func (b *nameBook) learn(payload []byte) {
	ans, err := dnsnames.Parse(payload)
	if err != nil {
		b.malformed.Add(1)
		b.log.Debug("unreadable DNS answer", "err", err, "bytes", len(payload))
		return
	}
	b.answers.Add(1)
	if n := b.cache.Add(ans); n > 0 {
		b.log.Debug("DNS answer", "host", ans.Name, "cnames", ans.CNAMEs, "addresses", n)
	}
}

// counts returns the answers read, the malformed packets and the addresses
// with a name; zeros for a nil book.
func (b *nameBook) counts() (answers, malformed uint64, names int) {
	if b == nil {
		return 0, 0, 0
	}
	return b.answers.Load(), b.malformed.Load(), b.cache.Len()
}

// dnsVerdicts gives each DNS answer its verdict the moment it has been
// read: NF_REPEAT with the Allow mark, so that it walks mangle INPUT again,
// returns from Bastion's DNS chain and meets the rest of INPUT like any
// packet (NF_ACCEPT would skip the administrator's later INPUT rules).
type dnsVerdicts struct {
	q     *nfq.Queue
	marks fw.Marks
}

func (v dnsVerdicts) handle(b *nameBook, p nfq.Packet) {
	// SECURITY: every answer is re-injected at once, whatever it says:
	// reading names must never hold or drop DNS.
	b.learn(p.Payload)
	if err := v.q.Repeat(p.ID, p.Mark&^v.marks.Mask|v.marks.Allow); err != nil {
		b.log.Warn("re-inject DNS answer", "packet_id", p.ID, "err", err)
	}
}
