package dnsnames

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// Cache defaults.
const (
	DefaultMaxEntries = 65536
	// DefaultMaxPerUID bounds one UID's entries, so that a user who makes
	// many queries forgets their own names first, not other users'.
	DefaultMaxPerUID = 16384
	DefaultMinTTL    = time.Minute
	DefaultMaxTTL    = time.Hour
	// DefaultGrace keeps a name past its TTL: applications connect a
	// moment after the answer, and reuse an address they resolved a while
	// ago (connection pools, their own DNS caches).
	DefaultGrace = 5 * time.Minute
)

// EveryoneUID is the Owner UID of names that hold for every user: answers
// to the queries of a trusted resolver. It is (uid_t)-1, which no socket
// ever has.
const EveryoneUID = ^uint32(0)

// Owner is who a DNS answer names addresses for: the UID whose query it
// answered and, when known, that query's process (TGID; 0 when unknown).
type Owner struct {
	UID, TGID uint32
}

// Everyone is the Owner of names that hold for every user.
var Everyone = Owner{UID: EveryoneUID}

// CacheConfig bounds a Cache; zero fields take the defaults.
type CacheConfig struct {
	MaxEntries     int
	MaxPerUID      int
	MinTTL, MaxTTL time.Duration
	Grace          time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// OnChange, if set, is called with an address whenever what some
	// process could be told its name is changes: an entry for it added,
	// renamed or removed (expired, evicted). It is called with the
	// cache's lock held and must not call the cache.
	OnChange func(addr netip.Addr)
}

// Cache maps (owner, address) to the name most recently answered to that
// owner for the address. SECURITY: a name is only ever looked up for the
// owner it was learnt for (see Lookup), so one user's answers never name
// another user's connections.
//
// Each answer is recorded twice when its process is known: for the UID and
// process, and for the UID alone. A connection then gets the name its own
// process asked for, else the one its UID last asked for.
//
// It is bounded: a UID holds at most MaxPerUID entries (its least recently
// used go first), and past MaxEntries in all the UID holding the most loses
// its least recently used. It is safe for concurrent use.
type Cache struct {
	cfg CacheConfig

	mu    sync.Mutex
	byKey map[cacheKey]*list.Element
	users map[uint32]*list.List // per UID, of *cacheEntry, most recently used first
	// addrs holds the keys of each address's entries, for whichever
	// owner: a connection to an address nobody was answered costs one
	// probe, and Uniform reads only that address's entries.
	addrs map[netip.Addr]map[cacheKey]struct{}
	n     int
}

type cacheKey struct {
	uid, tgid uint32
	addr      netip.Addr
}

type cacheEntry struct {
	key     cacheKey
	name    string
	expires time.Time
}

// NewCache returns an empty cache.
func NewCache(cfg CacheConfig) *Cache {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.MaxPerUID <= 0 {
		cfg.MaxPerUID = DefaultMaxPerUID
	}
	cfg.MaxPerUID = min(cfg.MaxPerUID, cfg.MaxEntries)
	if cfg.MinTTL <= 0 {
		cfg.MinTTL = DefaultMinTTL
	}
	if cfg.MaxTTL < cfg.MinTTL {
		cfg.MaxTTL = max(DefaultMaxTTL, cfg.MinTTL)
	}
	if cfg.Grace < 0 {
		cfg.Grace = 0
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Cache{cfg: cfg, byKey: make(map[cacheKey]*list.Element), users: make(map[uint32]*list.List), addrs: make(map[netip.Addr]map[cacheKey]struct{})}
}

// Add records every address of a for o. It returns how many addresses it
// recorded.
func (c *Cache) Add(o Owner, a Answer) int {
	if a.Name == "" || len(a.Records) == 0 {
		return 0
	}
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range a.Records {
		ttl := min(max(r.TTL, c.cfg.MinTTL), c.cfg.MaxTTL)
		expires := now.Add(ttl + c.cfg.Grace)
		addr := r.Addr.Unmap()
		c.putLocked(cacheKey{o.UID, 0, addr}, a.Name, expires)
		if o.TGID != 0 {
			c.putLocked(cacheKey{o.UID, o.TGID, addr}, a.Name, expires)
		}
	}
	return len(a.Records)
}

func (c *Cache) putLocked(k cacheKey, name string, expires time.Time) {
	if el, ok := c.byKey[k]; ok {
		e := el.Value.(*cacheEntry)
		renamed := e.name != name
		e.name, e.expires = name, expires
		c.users[k.uid].MoveToFront(el)
		if renamed && c.cfg.OnChange != nil {
			c.cfg.OnChange(k.addr)
		}
		return
	}
	l := c.users[k.uid]
	if l == nil {
		l = list.New()
		c.users[k.uid] = l
	}
	for l.Len() >= c.cfg.MaxPerUID {
		c.removeLocked(l, l.Back())
	}
	for c.n >= c.cfg.MaxEntries {
		// The UID holding the most pays; the map holds few UIDs.
		var big *list.List
		for _, ul := range c.users {
			if big == nil || ul.Len() > big.Len() {
				big = ul
			}
		}
		c.removeLocked(big, big.Back())
	}
	if c.users[k.uid] == nil { // emptied by the loops above
		c.users[k.uid] = l
	}
	c.byKey[k] = l.PushFront(&cacheEntry{key: k, name: name, expires: expires})
	keys := c.addrs[k.addr]
	if keys == nil {
		keys = make(map[cacheKey]struct{}, 2)
		c.addrs[k.addr] = keys
	}
	keys[k] = struct{}{}
	c.n++
	if c.cfg.OnChange != nil {
		c.cfg.OnChange(k.addr)
	}
}

func (c *Cache) removeLocked(l *list.List, el *list.Element) {
	k := el.Value.(*cacheEntry).key
	delete(c.byKey, k)
	l.Remove(el)
	if keys := c.addrs[k.addr]; keys != nil {
		delete(keys, k)
		if len(keys) == 0 {
			delete(c.addrs, k.addr)
		}
	}
	c.n--
	if l.Len() == 0 {
		delete(c.users, k.uid)
	}
	if c.cfg.OnChange != nil {
		c.cfg.OnChange(k.addr)
	}
}

// Lookup returns the name answered for addr to o: the one o's process
// asked for, else the one o's UID last asked for, else one a trusted
// resolver was answered (Everyone). It reads the clock only for an entry
// it found: it is asked about every queued connection, and a clock read
// costs as much as the rest of a miss.
func (c *Cache) Lookup(o Owner, addr netip.Addr) (string, bool) {
	addr = addr.WithZone("").Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.addrs[addr]) == 0 {
		return "", false
	}
	var now time.Time
	// SECURITY: only o's own entries and Everyone's are consulted.
	if o.TGID != 0 && o.UID != EveryoneUID {
		if n, ok := c.getLocked(cacheKey{o.UID, o.TGID, addr}, &now); ok {
			return n, true
		}
	}
	if n, ok := c.getLocked(cacheKey{o.UID, 0, addr}, &now); ok {
		return n, true
	}
	if o.UID != EveryoneUID {
		return c.getLocked(cacheKey{EveryoneUID, 0, addr}, &now)
	}
	return "", false
}

// Uniform reports whether every process of uid would be told the same
// name for addr by Lookup, and returns that name ("" when none) and the
// time until which that holds at the latest (zero: until an entry is
// added, which OnChange reports). It is what lets a decision that depends
// on addr's name be made once for every process of a UID.
func (c *Cache) Uniform(uid uint32, addr netip.Addr) (name string, until time.Time, ok bool) {
	addr = addr.WithZone("").Unmap()
	if uid == EveryoneUID {
		return "", time.Time{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := c.addrs[addr]
	if len(keys) == 0 {
		return "", time.Time{}, true
	}
	now := c.cfg.Now()
	live := func(k cacheKey) (*cacheEntry, bool) {
		el, ok := c.byKey[k]
		if !ok {
			return nil, false
		}
		e := el.Value.(*cacheEntry)
		return e, now.Before(e.expires)
	}
	// What a process without an entry of its own is told: its UID's
	// name, else Everyone's, else none.
	if e, ok := live(cacheKey{uid, 0, addr}); ok {
		name, until = e.name, e.expires
	} else if e, ok := live(cacheKey{EveryoneUID, 0, addr}); ok {
		name, until = e.name, e.expires
	}
	for k := range keys {
		if k.uid != uid || k.tgid == 0 {
			continue
		}
		if e, ok := live(k); ok && e.name != name {
			return "", time.Time{}, false
		}
	}
	return name, until, true
}

// getLocked returns k's name if it is live, reading the clock into *now
// the first time it needs it.
func (c *Cache) getLocked(k cacheKey, now *time.Time) (string, bool) {
	el, ok := c.byKey[k]
	if !ok {
		return "", false
	}
	if now.IsZero() {
		*now = c.cfg.Now()
	}
	e := el.Value.(*cacheEntry)
	l := c.users[k.uid]
	if !now.Before(e.expires) {
		c.removeLocked(l, el)
		return "", false
	}
	l.MoveToFront(el)
	return e.name, true
}

// Sweep forgets expired entries and returns how many are left.
func (c *Cache) Sweep() int {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.users {
		for el := l.Back(); el != nil; {
			prev := el.Prev()
			if !now.Before(el.Value.(*cacheEntry).expires) {
				c.removeLocked(l, el)
			}
			el = prev
		}
	}
	return c.n
}

// Addresses returns the number of addresses that have a name for some
// owner (expired ones included until a Lookup or Sweep finds them).
func (c *Cache) Addresses() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.addrs)
}

// Len returns the number of entries held (expired ones included until a
// Lookup or Sweep finds them). An answer whose process is known makes two
// entries per address.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
