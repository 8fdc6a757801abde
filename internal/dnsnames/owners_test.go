package dnsnames

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/bastion-fw/bastion/internal/flow"
)

var (
	bob      = Owner{UID: 1001}
	aliceP10 = Owner{UID: 1000, TGID: 10}
	aliceP11 = Owner{UID: 1000, TGID: 11}
)

func answer(name string, ips ...string) Answer {
	a := Answer{Name: name}
	for _, ip := range ips {
		a.Records = append(a.Records, rec(ip, 60))
	}
	return a
}

// TestCacheNamesOnlyForTheOwner: a name answered to one UID never names an
// address for another; a process's own answer comes first; a trusted
// resolver's (Everyone) comes last.
func TestCacheNamesOnlyForTheOwner(t *testing.T) {
	c := NewCache(CacheConfig{})
	ip := netip.MustParseAddr("192.0.2.66")
	look := func(o Owner) string {
		n, _ := c.Lookup(o, ip)
		return n
	}
	c.Add(bob, answer("www.bank.example", "192.0.2.66"))
	if got := look(alice); got != "" {
		t.Fatalf("bob's answer names alice's connection: %q", got)
	}
	if got := look(aliceP10); got != "" {
		t.Fatalf("bob's answer names alice's process: %q", got)
	}
	if got := look(bob); got != "www.bank.example" {
		t.Fatalf("bob's own answer: %q", got)
	}
	c.Add(aliceP10, answer("shop.example", "192.0.2.66"))
	c.Add(aliceP11, answer("cdn.example", "192.0.2.66"))
	for o, want := range map[Owner]string{
		aliceP10:               "shop.example", // its own answer
		aliceP11:               "cdn.example",
		{UID: 1000, TGID: 12}:  "cdn.example", // its UID's latest
		alice:                  "cdn.example",
		bob:                    "www.bank.example",
		{UID: 1002}:            "",
		{UID: 1002, TGID: 10}:  "", // another UID's process number means nothing
		{UID: 0}:               "",
		{UID: EveryoneUID - 1}: "",
	} {
		if got := look(o); got != want {
			t.Errorf("lookup for %+v = %q, want %q", o, got, want)
		}
	}
	c.Add(Everyone, answer("resolver.example", "192.0.2.66", "192.0.2.67"))
	if got := look(Owner{UID: 1002}); got != "resolver.example" {
		t.Errorf("a trusted resolver's answer for a UID without its own: %q", got)
	}
	if got := look(alice); got != "cdn.example" {
		t.Errorf("alice's own answer must come before a trusted resolver's: %q", got)
	}
}

// TestCachePerUIDBound: one UID filling its share evicts only its own
// entries; past the total, the UID holding the most pays.
func TestCachePerUIDBound(t *testing.T) {
	c := NewCache(CacheConfig{MaxEntries: 10, MaxPerUID: 4})
	c.Add(alice, answer("a.example", "10.0.0.1", "10.0.0.2"))
	for i := range 100 {
		c.Add(bob, Answer{Name: "flood.example", Records: []Record{{Addr: netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}), TTL: time.Minute}}})
	}
	if n := c.Len(); n != 6 {
		t.Errorf("Len = %d, want alice's 2 and bob's 4", n)
	}
	for _, ip := range []string{"10.0.0.1", "10.0.0.2"} {
		if n, _ := c.Lookup(alice, netip.MustParseAddr(ip)); n != "a.example" {
			t.Errorf("bob's flood evicted alice's %s", ip)
		}
	}
	for uid := uint32(2000); uid < 2003; uid++ {
		c.Add(Owner{UID: uid}, answer("x.example", "10.2.0.1", "10.2.0.2"))
	}
	if n := c.Len(); n != 10 {
		t.Errorf("Len = %d, want the total bound 10", n)
	}
	if n, _ := c.Lookup(alice, netip.MustParseAddr("10.0.0.1")); n != "a.example" {
		t.Error("the total bound evicted alice rather than the biggest holder")
	}
}

var (
	client   = netip.MustParseAddr("192.0.2.1")
	server   = netip.MustParseAddr("198.51.100.53")
	query    = flow.Tuple{Proto: flow.UDP, Src: client, SrcPort: 40000, Dst: server, DstPort: 53}
	reply    = flow.Tuple{Proto: flow.UDP, Src: server, SrcPort: 53, Dst: client, DstPort: 40000}
	reply4in = flow.Tuple{Proto: flow.UDP, Src: netip.AddrFrom16(server.As16()), SrcPort: 53, Dst: client, DstPort: 40000}
)

func TestQueriesBindAnswersToWhoAsked(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	q := NewQueries(QueriesConfig{Idle: time.Minute, Now: clk.Now})
	if _, m := q.Answered(reply, 1); m != MatchUnknown {
		t.Fatalf("an answer to no query: %v", m)
	}
	q.Sent(query, aliceP10, 77, 0x1234)
	if _, m := q.Answered(reply, 0x4321); m != MatchWrongID {
		t.Errorf("wrong ID before any answer: %v, want MatchWrongID", m)
	}
	if o, m := q.Answered(reply4in, 0x1234); m != MatchID || o != aliceP10 {
		t.Errorf("the answer: %+v %v, want alice's process by ID (IPv4-mapped form too)", o, m)
	}
	// Later queries on an answered flow pass unseen: their answers
	// still belong to the flow's socket.
	if o, m := q.Answered(reply, 0x4321); m != MatchFlow || o != aliceP10 {
		t.Errorf("a later answer on the flow: %+v %v, want MatchFlow", o, m)
	}
	// Another user's socket on the same tuple takes the flow over.
	q.Sent(query, bob, 88, 0x5555)
	if o, m := q.Answered(reply, 0x1234); m != MatchWrongID {
		t.Errorf("alice's old ID after bob took the tuple: %+v %v, want MatchWrongID", o, m)
	}
	if o, _ := q.Answered(reply, 0x5555); o != bob {
		t.Errorf("bob's answer bound to %+v", o)
	}
	// Another socket of the same user too.
	q.Sent(query, bob, 89, 0x6666)
	if _, m := q.Answered(reply, 0x7777); m != MatchWrongID {
		t.Errorf("a new socket inherited the old one's answered flow: %v", m)
	}
	// Forget: only for the socket that sent it.
	q.Forget(query, 88)
	if q.Len() != 1 {
		t.Fatal("Forget by another socket removed the flow")
	}
	q.Forget(query, 89)
	if _, m := q.Answered(reply, 0x6666); m != MatchUnknown || q.Len() != 0 {
		t.Errorf("after Forget: %v, %d flows", m, q.Len())
	}
	// Idle flows are forgotten.
	q.Sent(query, alice, 0, 1)
	clk.t = clk.t.Add(time.Minute)
	if _, m := q.Answered(reply, 1); m != MatchUnknown {
		t.Errorf("an idle flow still binds: %v", m)
	}
	q.Sent(query, alice, 0, 1)
	clk.t = clk.t.Add(time.Minute)
	if n := q.Sweep(); n != 0 {
		t.Errorf("Sweep left %d", n)
	}
}

func TestQueriesBounds(t *testing.T) {
	q := NewQueries(QueriesConfig{MaxFlows: 10, MaxPerUID: 4})
	q.Sent(query, alice, 1, 1)
	for i := range 100 {
		f := query
		f.SrcPort = uint16(50000 + i)
		q.Sent(f, bob, uint64(100+i), 1)
	}
	if _, m := q.Answered(reply, 1); m != MatchID {
		t.Errorf("bob's queries evicted alice's flow")
	}
	if n := q.Len(); n != 5 {
		t.Errorf("Len = %d, want alice's 1 and bob's 4", n)
	}
	// Many IDs on one flow: the newest maxQueryIDs are kept.
	f := query
	f.SrcPort = 1
	for id := range uint16(20) {
		q.Sent(f, alice, 2, id)
	}
	r := flow.Tuple{Proto: flow.UDP, Src: server, SrcPort: 53, Dst: client, DstPort: 1}
	if _, m := q.Answered(r, 0); m != MatchWrongID {
		t.Errorf("the oldest ID survived: %v", m)
	}
	if _, m := q.Answered(r, 19); m != MatchID {
		t.Errorf("the newest ID: %v", m)
	}
}

func TestQueryID(t *testing.T) {
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: 0xbeef},
		Questions: []dnsmessage.Question{{Name: name("x.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	msg, _ := m.Pack()
	pkt := udp4(40000, msg)
	if id, ok := QueryID(pkt, 20); !ok || id != 0xbeef {
		t.Errorf("QueryID = %#x %v", id, ok)
	}
	if _, ok := QueryID(pkt[:30], 20); ok {
		t.Error("a short header read as a query")
	}
	if _, ok := QueryID(pkt, 0); ok {
		t.Error("no transport header read as a query")
	}
	m.Header.Response = true
	msg, _ = m.Pack()
	if _, ok := QueryID(udp4(40000, msg), 20); ok {
		t.Error("a response read as a query")
	}
}

// BenchmarkLookup is the cost per queued connection: a name found for the
// connection's process (hit), and an address no one named for anyone
// (miss: three map probes, no clock read).
func BenchmarkLookup(b *testing.B) {
	c := NewCache(CacheConfig{})
	for i := range 4096 {
		c.Add(aliceP10, Answer{Name: "n.example", Records: []Record{{Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), TTL: time.Hour}}})
	}
	hit, miss := netip.AddrFrom4([4]byte{10, 0, 1, 1}), netip.AddrFrom4([4]byte{10, 9, 9, 9})
	b.Run("hit", func(b *testing.B) {
		for b.Loop() {
			if _, ok := c.Lookup(aliceP10, hit); !ok {
				b.Fatal("miss")
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		for b.Loop() {
			if _, ok := c.Lookup(aliceP10, miss); ok {
				b.Fatal("hit")
			}
		}
	})
}

// BenchmarkQueryFlow is the added cost per DNS query and answer: recording
// the query and binding its answer.
func BenchmarkQueryFlow(b *testing.B) {
	q := NewQueries(QueriesConfig{})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		t := query
		t.SrcPort = uint16(i)
		r := reply
		r.DstPort = uint16(i)
		q.Sent(t, aliceP10, uint64(i), uint16(i))
		if _, m := q.Answered(r, uint16(i)); m != MatchID {
			b.Fatal(m)
		}
		q.Forget(t, uint64(i))
		i++
	}
}
