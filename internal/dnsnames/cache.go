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
	DefaultMinTTL     = time.Minute
	DefaultMaxTTL     = time.Hour
	// DefaultGrace keeps a name past its TTL: applications connect a
	// moment after the answer, and reuse an address they resolved a while
	// ago (connection pools, their own DNS caches).
	DefaultGrace = 5 * time.Minute
)

// CacheConfig bounds a Cache; zero fields take the defaults.
type CacheConfig struct {
	MaxEntries     int
	MinTTL, MaxTTL time.Duration
	Grace          time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Cache maps addresses to the name most recently answered for them. It is
// bounded: past MaxEntries the least recently used address is forgotten.
// It is safe for concurrent use.
type Cache struct {
	cfg CacheConfig

	mu    sync.Mutex
	byIP  map[netip.Addr]*list.Element
	order *list.List // of *cacheEntry, most recently used first
}

type cacheEntry struct {
	addr    netip.Addr
	name    string
	expires time.Time
}

// NewCache returns an empty cache.
func NewCache(cfg CacheConfig) *Cache {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
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
	return &Cache{cfg: cfg, byIP: make(map[netip.Addr]*list.Element), order: list.New()}
}

// Add records every address of a. It returns how many it recorded.
func (c *Cache) Add(a Answer) int {
	if a.Name == "" || len(a.Records) == 0 {
		return 0
	}
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range a.Records {
		ttl := min(max(r.TTL, c.cfg.MinTTL), c.cfg.MaxTTL)
		c.putLocked(r.Addr.Unmap(), a.Name, now.Add(ttl+c.cfg.Grace))
	}
	return len(a.Records)
}

func (c *Cache) putLocked(addr netip.Addr, name string, expires time.Time) {
	if el, ok := c.byIP[addr]; ok {
		e := el.Value.(*cacheEntry)
		e.name, e.expires = name, expires
		c.order.MoveToFront(el)
		return
	}
	for c.order.Len() >= c.cfg.MaxEntries {
		c.removeLocked(c.order.Back())
	}
	c.byIP[addr] = c.order.PushFront(&cacheEntry{addr: addr, name: name, expires: expires})
}

func (c *Cache) removeLocked(el *list.Element) {
	delete(c.byIP, el.Value.(*cacheEntry).addr)
	c.order.Remove(el)
}

// Lookup returns the name last answered for addr, if it has not expired.
// It reads the clock only for an address it has a name for: it is asked
// about every queued connection, and a clock read costs as much as the
// rest of a miss.
func (c *Cache) Lookup(addr netip.Addr) (string, bool) {
	addr = addr.WithZone("").Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byIP[addr]
	if !ok {
		return "", false
	}
	e := el.Value.(*cacheEntry)
	if !c.cfg.Now().Before(e.expires) {
		c.removeLocked(el)
		return "", false
	}
	c.order.MoveToFront(el)
	return e.name, true
}

// Sweep forgets expired entries and returns how many are left.
func (c *Cache) Sweep() int {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.order.Back(); el != nil; {
		prev := el.Prev()
		if !now.Before(el.Value.(*cacheEntry).expires) {
			c.removeLocked(el)
		}
		el = prev
	}
	return c.order.Len()
}

// Len returns the number of addresses held (expired ones included until a
// Lookup or Sweep finds them).
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
