package dnsnames

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/bastion-fw/bastion/internal/inert"
)

func name(s string) dnsmessage.Name { return dnsmessage.MustNewName(s) }

func rh(owner string, typ dnsmessage.Type, ttl uint32) dnsmessage.ResourceHeader {
	return dnsmessage.ResourceHeader{Name: name(owner), Type: typ, Class: dnsmessage.ClassINET, TTL: ttl}
}

// response builds a DNS response to one question with the given answers.
func response(t testing.TB, q string, qtype dnsmessage.Type, answers ...dnsmessage.Resource) []byte {
	t.Helper()
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 7, Response: true, RecursionAvailable: true},
		Questions: []dnsmessage.Question{{Name: name(q), Type: qtype, Class: dnsmessage.ClassINET}},
		Answers:   answers,
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func a(owner string, ttl uint32, ip string) dnsmessage.Resource {
	return dnsmessage.Resource{Header: rh(owner, dnsmessage.TypeA, ttl), Body: &dnsmessage.AResource{A: netip.MustParseAddr(ip).As4()}}
}

func aaaa(owner string, ttl uint32, ip string) dnsmessage.Resource {
	return dnsmessage.Resource{Header: rh(owner, dnsmessage.TypeAAAA, ttl), Body: &dnsmessage.AAAAResource{AAAA: netip.MustParseAddr(ip).As16()}}
}

func cname(owner string, ttl uint32, target string) dnsmessage.Resource {
	return dnsmessage.Resource{Header: rh(owner, dnsmessage.TypeCNAME, ttl), Body: &dnsmessage.CNAMEResource{CNAME: name(target)}}
}

// udp4 wraps payload in IPv4 and UDP headers from src:sport.
func udp4(sport uint16, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8], b[9] = 64, 17
	copy(b[12:16], []byte{127, 0, 0, 53})
	copy(b[16:20], []byte{127, 0, 0, 1})
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], 40000)
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload)
	return b
}

// udp6 wraps payload in IPv6 and UDP headers from sport.
func udp6(sport uint16, payload []byte) []byte {
	b := make([]byte, 48+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	b[6], b[7] = 17, 64
	b[23], b[39] = 1, 1 // ::1 -> ::1
	binary.BigEndian.PutUint16(b[40:], sport)
	binary.BigEndian.PutUint16(b[42:], 40000)
	binary.BigEndian.PutUint16(b[44:], uint16(8+len(payload)))
	copy(b[48:], payload)
	return b
}

func rec(ip string, ttl int) Record {
	return Record{Addr: netip.MustParseAddr(ip), TTL: time.Duration(ttl) * time.Second}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		pkt  []byte
		want Answer
		err  error
	}{
		{"A over IPv4", udp4(53, response(t, "WWW.Example.test.", dnsmessage.TypeA, a("www.example.test.", 300, "192.0.2.10"), a("www.example.test.", 300, "192.0.2.11"))),
			Answer{ID: 7, Name: "www.example.test", Records: []Record{rec("192.0.2.10", 300), rec("192.0.2.11", 300)}}, nil},
		{"AAAA over IPv6", udp6(53, response(t, "v6.example.test.", dnsmessage.TypeAAAA, aaaa("v6.example.test.", 30, "2001:db8::1"))),
			Answer{ID: 7, Name: "v6.example.test", Records: []Record{rec("2001:db8::1", 30)}}, nil},
		{"CNAME chain gives the question name", udp4(53, response(t, "www.example.test.", dnsmessage.TypeA,
			cname("www.example.test.", 60, "edge.cdn.test."), cname("edge.cdn.test.", 60, "node7.cdn.test."), a("node7.cdn.test.", 20, "198.51.100.7"))),
			Answer{ID: 7, Name: "www.example.test", CNAMEs: []string{"edge.cdn.test", "node7.cdn.test"}, Records: []Record{rec("198.51.100.7", 20)}}, nil},
		{"records off the chain are ignored", udp4(53, response(t, "www.example.test.", dnsmessage.TypeA,
			a("bank.example.", 60, "203.0.113.1"), a("www.example.test.", 60, "192.0.2.1"))),
			Answer{ID: 7, Name: "www.example.test", Records: []Record{rec("192.0.2.1", 60)}}, nil},
		{"CNAME loop ends", udp4(53, response(t, "a.test.", dnsmessage.TypeA, cname("a.test.", 60, "b.test."), cname("b.test.", 60, "a.test."))),
			Answer{ID: 7, Name: "a.test", CNAMEs: []string{"b.test"}}, nil},
		{"no records", udp4(53, response(t, "none.test.", dnsmessage.TypeA)), Answer{ID: 7, Name: "none.test"}, nil},
		{"MX question is skipped", udp4(53, response(t, "mail.test.", dnsmessage.TypeMX)), Answer{}, nil},
		{"not from port 53", udp4(5353, response(t, "x.test.", dnsmessage.TypeA, a("x.test.", 60, "192.0.2.1"))), Answer{}, ErrNotDNS},
		{"garbage", []byte{0x45, 1, 2, 3}, Answer{}, ErrMalformed},
		{"empty", nil, Answer{}, ErrMalformed},
		{"truncated DNS", udp4(53, response(t, "x.test.", dnsmessage.TypeA, a("x.test.", 60, "192.0.2.1"))[:30]), Answer{}, ErrMalformed},
		{"DNS header only", udp4(53, []byte{0, 1, 0x81}), Answer{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.pkt)
			if !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Fatalf("Parse error %v, want %v", err, tt.err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseQueryAndErrors(t *testing.T) {
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 1},
		Questions: []dnsmessage.Question{{Name: name("x.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	b, _ := q.Pack()
	if _, err := ParseMessage(b); !errors.Is(err, ErrNotDNS) {
		t.Errorf("a query: %v, want ErrNotDNS", err)
	}
	q.Header = dnsmessage.Header{ID: 1, Response: true, RCode: dnsmessage.RCodeNameError}
	q.Answers = []dnsmessage.Resource{a("x.test.", 60, "192.0.2.1")}
	b, _ = q.Pack()
	if got, err := ParseMessage(b); err != nil || len(got.Records) != 0 {
		t.Errorf("NXDOMAIN with a record: %+v, %v; want nothing", got, err)
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM.": "example.com", "a-b_c.d": "a-b_c.d", "": "", ".": "", "a..b": "", "a b": "", "a\x00": "",
		"x.": "x", "-": "-", "a/b": "",
	} {
		got, ok := Normalize(in)
		if got != want || ok != (want != "") {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

var alice = Owner{UID: 1000}

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func TestCacheTTL(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	c := NewCache(CacheConfig{MinTTL: time.Minute, MaxTTL: time.Hour, Grace: 10 * time.Second, Now: clk.Now})
	c.Add(alice, Answer{Name: "short.test", Records: []Record{rec("192.0.2.1", 1)}})
	c.Add(alice, Answer{Name: "long.test", Records: []Record{rec("192.0.2.2", 86400)}})
	c.Add(alice, Answer{Name: "v6.test", Records: []Record{rec("2001:db8::1", 600)}})
	look := func(ip string) string {
		n, _ := c.Lookup(alice, netip.MustParseAddr(ip))
		return n
	}
	if look("192.0.2.1") != "short.test" || look("::ffff:192.0.2.1") != "short.test" || look("2001:db8::1") != "v6.test" {
		t.Fatal("fresh entries not found (or IPv4-mapped form not unmapped)")
	}
	// A 1 s TTL lives for the minimum, 60 s, plus the grace period.
	clk.t = clk.t.Add(69 * time.Second)
	if look("192.0.2.1") != "short.test" {
		t.Error("entry gone before min TTL + grace")
	}
	clk.t = clk.t.Add(time.Second)
	if look("192.0.2.1") != "" {
		t.Error("entry alive after min TTL + grace")
	}
	// A day's TTL is clamped to an hour.
	clk.t = clk.t.Add(time.Hour)
	if look("192.0.2.2") != "" {
		t.Error("entry alive past max TTL + grace")
	}
	if n := c.Sweep(); n != 0 {
		t.Errorf("Sweep left %d entries, want 0", n)
	}
	// A newer answer for the same address replaces the name.
	c.Add(alice, Answer{Name: "a.test", Records: []Record{rec("192.0.2.9", 60)}})
	c.Add(alice, Answer{Name: "b.test", Records: []Record{rec("192.0.2.9", 60)}})
	if look("192.0.2.9") != "b.test" || c.Len() != 1 {
		t.Errorf("newer answer: %q, %d entries", look("192.0.2.9"), c.Len())
	}
}

func TestCacheEviction(t *testing.T) {
	c := NewCache(CacheConfig{MaxEntries: 3})
	for i := range 3 {
		c.Add(alice, Answer{Name: "n.test", Records: []Record{{Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), TTL: time.Minute}}})
	}
	// Using 10.0.0.0 makes 10.0.0.1 the least recently used.
	if _, ok := c.Lookup(alice, netip.AddrFrom4([4]byte{10, 0, 0, 0})); !ok {
		t.Fatal("10.0.0.0 missing")
	}
	c.Add(alice, Answer{Name: "new.test", Records: []Record{{Addr: netip.AddrFrom4([4]byte{10, 0, 0, 9}), TTL: time.Minute}}})
	if c.Len() != 3 {
		t.Errorf("Len = %d, want 3", c.Len())
	}
	if _, ok := c.Lookup(alice, netip.AddrFrom4([4]byte{10, 0, 0, 1})); ok {
		t.Error("the least recently used entry survived")
	}
	for _, last := range []byte{0, 2, 9} {
		if _, ok := c.Lookup(alice, netip.AddrFrom4([4]byte{10, 0, 0, last})); !ok {
			t.Errorf("10.0.0.%d evicted", last)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(udp4(53, response(f, "www.example.test.", dnsmessage.TypeA, cname("www.example.test.", 60, "e.cdn.test."), a("e.cdn.test.", 60, "192.0.2.1"))))
	f.Add(udp6(53, response(f, "v6.test.", dnsmessage.TypeAAAA, aaaa("v6.test.", 60, "2001:db8::1"))))
	f.Add(udp4(53, []byte{0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xc0, 0x0c}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		ans, err := Parse(pkt)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotDNS) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if len(ans.Records) > maxRecords || len(ans.CNAMEs) > maxChain {
			t.Fatalf("unbounded answer: %d records, %d cnames", len(ans.Records), len(ans.CNAMEs))
		}
		if len(ans.Records) > 0 {
			if n, ok := Normalize(ans.Name); !ok || n != ans.Name {
				t.Fatalf("name %q is not normalized", ans.Name)
			}
		}
		// Names are shown through inert.String; a learnt name must be
		// one it leaves as it is.
		for _, n := range append([]string{ans.Name}, ans.CNAMEs...) {
			if !inert.Safe(n) {
				t.Fatalf("learnt name %q is not inert", n)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	pkt := udp4(53, response(b, "www.example.test.", dnsmessage.TypeA,
		cname("www.example.test.", 60, "edge.cdn.test."), a("edge.cdn.test.", 60, "192.0.2.1"), a("edge.cdn.test.", 60, "192.0.2.2")))
	c := NewCache(CacheConfig{})
	b.ReportAllocs()
	for b.Loop() {
		ans, err := Parse(pkt)
		if err != nil {
			b.Fatal(err)
		}
		c.Add(alice, ans)
	}
}
