package agent

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/peercred"
)

// Scope says which later connections of a program a decision covers.
type Scope uint8

const (
	ScopeConnection      Scope = iota // only the connections held for the entry
	ScopeDestinationPort              // same protocol, destination and port
	ScopeDestination                  // same destination, any protocol and port
	ScopePort                         // same protocol and port, any destination
	ScopeAny                          // anywhere
)

func (s Scope) String() string {
	switch s {
	case ScopeDestinationPort:
		return "destination-port"
	case ScopeDestination:
		return "destination"
	case ScopePort:
		return "port"
	case ScopeAny:
		return "any"
	}
	return "connection"
}

// cacheKey is the decision cache's key. It is a fixed set of plain fields —
// UID, executable (exeKey: the path only when verified), protocol,
// destination and port, with the fields a scope
// leaves open zeroed — so that the same table can later be mirrored into a
// BPF hash map and consulted in the kernel (the executable then becomes its
// inode identity rather than its path).
type cacheKey struct {
	uid   uint32
	exe   string
	scope Scope
	proto flow.Proto
	dst   netip.Addr
	port  uint16
}

func keyFor(scope Scope, uid uint32, exe string, t flow.Tuple) cacheKey {
	k := cacheKey{uid: uid, exe: exe, scope: scope}
	switch scope {
	case ScopeDestinationPort:
		k.proto, k.dst, k.port = t.Proto, t.Dst, t.DstPort
	case ScopeDestination:
		k.dst = t.Dst
	case ScopePort:
		k.proto, k.port = t.Proto, t.DstPort
	}
	return k
}

// cacheEntry is one cached decision.
type cacheEntry struct {
	id  string
	by  string // "cache:" + id, as decisions name it (built once, not per hit)
	key cacheKey
	// exeShown is the executable as the API shows it (key.exe may be an
	// identity key, see exeKey).
	exeShown string
	action   flow.Action
	expires  time.Time // wall clock (no monotonic reading); zero: until the agent restarts or the entry is forgotten
	hits     uint64
	// older and newer link the entries of one UID, oldest first.
	older, newer *cacheEntry
}

func (e *cacheEntry) live(now time.Time) bool { return e.expires.IsZero() || now.Before(e.expires) }

// maxCachePerUID bounds the cached decisions of one UID. At the bound, a
// new decision replaces that UID's oldest entry: a user who answers
// without end can only push out their own older answers (whose
// connections are then asked about again), never another user's.
const maxCachePerUID = 4096

// uidEntries are one UID's cache entries, oldest first.
type uidEntries struct {
	oldest, newest *cacheEntry
	n              int
}

// decisionCache holds decisions that cover later connections. It is not
// safe for concurrent use; the engine's lock guards it.
type decisionCache struct {
	byKey  map[cacheKey]*cacheEntry
	byID   map[string]*cacheEntry
	byUID  map[uint32]*uidEntries
	nextID uint64
	// evicted counts entries pushed out by maxCachePerUID.
	evicted uint64
	// onChange, if set, is told of every UID whose entries change (an
	// entry added, replaced or removed), under the engine's lock.
	onChange func(uid uint32)
}

func newDecisionCache() *decisionCache {
	return &decisionCache{byKey: make(map[cacheKey]*cacheEntry), byID: make(map[string]*cacheEntry), byUID: make(map[uint32]*uidEntries)}
}

// countFor returns the number of entries of uid.
func (c *decisionCache) countFor(uid uint32) int {
	if u := c.byUID[uid]; u != nil {
		return u.n
	}
	return 0
}

// lookupOrder is the precedence among cached decisions: the most specific
// scope that covers a connection decides it.
var lookupOrder = [...]Scope{ScopeDestinationPort, ScopeDestination, ScopePort, ScopeAny}

func (c *decisionCache) lookup(uid uint32, exe string, t flow.Tuple, now time.Time) *cacheEntry {
	if len(c.byKey) == 0 {
		return nil
	}
	for _, s := range lookupOrder {
		if e := c.byKey[keyFor(s, uid, exe, t)]; e != nil && e.live(now) {
			return e
		}
	}
	return nil
}

// put adds or replaces the decision for key and returns its entry. At
// maxCachePerUID it first removes the UID's oldest entry.
func (c *decisionCache) put(key cacheKey, a flow.Action, expires time.Time) *cacheEntry {
	if old := c.byKey[key]; old != nil {
		c.remove(old)
	}
	u := c.byUID[key.uid]
	if u == nil {
		u = &uidEntries{}
		c.byUID[key.uid] = u
	}
	if u.n >= maxCachePerUID {
		c.remove(u.oldest)
		c.evicted++
	}
	if c.onChange != nil {
		c.onChange(key.uid)
	}
	c.nextID++
	id := "d" + strconv.FormatUint(c.nextID, 10)
	e := &cacheEntry{id: id, by: "cache:" + id, key: key, exeShown: key.exe, action: a, expires: expires}
	c.byKey[key] = e
	c.byID[e.id] = e
	e.older = u.newest
	if u.newest != nil {
		u.newest.newer = e
	} else {
		u.oldest = e
	}
	u.newest = e
	u.n++
	return e
}

func (c *decisionCache) remove(e *cacheEntry) {
	delete(c.byKey, e.key)
	delete(c.byID, e.id)
	u := c.byUID[e.key.uid]
	if e.older != nil {
		e.older.newer = e.newer
	} else {
		u.oldest = e.newer
	}
	if e.newer != nil {
		e.newer.older = e.older
	} else {
		u.newest = e.older
	}
	e.older, e.newer = nil, nil
	if u.n--; u.n == 0 {
		delete(c.byUID, e.key.uid)
	}
	if c.onChange != nil {
		c.onChange(e.key.uid)
	}
}

// expire drops entries whose lifetime has ended.
func (c *decisionCache) expire(now time.Time) {
	for _, e := range c.byID {
		if !e.live(now) {
			c.remove(e)
		}
	}
}

// CacheEntry is a cached decision as the API shows it.
type CacheEntry struct {
	ID      string
	UID     uint32
	Exe     string
	Scope   Scope
	Proto   flow.Proto
	Dst     netip.Addr
	Port    uint16
	Action  flow.Action
	Expires time.Time
	Hits    uint64
}

// ListCache returns the cached decisions caller may see.
func (e *Engine) ListCache(caller peercred.Cred) []CacheEntry {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	var out []CacheEntry
	for _, ce := range e.cache.byID {
		if !ce.live(now) || !visible(caller, ce.key.uid) {
			continue
		}
		out = append(out, CacheEntry{
			ID: ce.id, UID: ce.key.uid, Exe: ce.exeShown, Scope: ce.key.scope, Proto: ce.key.proto,
			Dst: ce.key.dst, Port: ce.key.port, Action: ce.action, Expires: ce.expires, Hits: ce.hits,
		})
	}
	return out
}

// ForgetCache removes the cache entry id, or every entry caller may see when
// id is empty.
func (e *Engine) ForgetCache(caller peercred.Cred, id string) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if id != "" {
		ce := e.cache.byID[id]
		// SECURITY: another user's entry is "not found", as a missing one.
		if ce == nil || !visible(caller, ce.key.uid) {
			return 0, errNotFound
		}
		e.cache.remove(ce)
		return 1, nil
	}
	n := 0
	for _, ce := range e.cache.byID {
		if visible(caller, ce.key.uid) {
			e.cache.remove(ce)
			n++
		}
	}
	return n, nil
}
