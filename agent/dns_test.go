package agent

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/bastion-fw/bastion/internal/dnsnames"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
)

// dnsAnswer4 is an IPv4/UDP packet from port 53 answering qname with a
// CNAME to edge.cdn.test and A records for addrs.
func dnsAnswer4(t *testing.T, qname string, addrs ...string) []byte {
	t.Helper()
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 9, Response: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(qname), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
		Answers: []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(qname), Type: dnsmessage.TypeCNAME, Class: dnsmessage.ClassINET, TTL: 60},
			Body:   &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("edge.cdn.test.")},
		}},
	}
	for _, a := range addrs {
		m.Answers = append(m.Answers, dnsmessage.Resource{
			Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("edge.cdn.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
			Body:   &dnsmessage.AResource{A: netip.MustParseAddr(a).As4()},
		})
	}
	msg, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 28+len(msg))
	b[0], b[8], b[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	copy(b[12:], []byte{127, 0, 0, 53, 127, 0, 0, 1})
	binary.BigEndian.PutUint16(b[20:], 53)
	binary.BigEndian.PutUint16(b[22:], 41000)
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(msg)))
	copy(b[28:], msg)
	return b
}

// The query flow dnsAnswer4's packets answer, and its reply tuple.
var (
	dnsQueryFlow = flow.Tuple{Proto: flow.UDP, Src: netip.MustParseAddr("127.0.0.1"), SrcPort: 41000, Dst: netip.MustParseAddr("127.0.0.53"), DstPort: 53}
	dnsReplyFlow = flow.Tuple{Proto: flow.UDP, Src: netip.MustParseAddr("127.0.0.53"), SrcPort: 53, Dst: netip.MustParseAddr("127.0.0.1"), DstPort: 41000}
)

// dnsQuery4 is an IPv4/UDP DNS query with message ID id on dnsQueryFlow.
func dnsQuery4(t *testing.T, id uint16) []byte {
	t.Helper()
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: id},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("www.example.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	msg, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 28+len(msg))
	b[0], b[8], b[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	copy(b[12:], []byte{127, 0, 0, 1, 127, 0, 0, 53})
	binary.BigEndian.PutUint16(b[20:], 41000)
	binary.BigEndian.PutUint16(b[22:], 53)
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(msg)))
	copy(b[28:], msg)
	return b
}

func TestNameBookLearnsAndCounts(t *testing.T) {
	b := newNameBook(slog.New(slog.NewTextHandler(io.Discard, nil)), dnsnames.CacheConfig{}, nil)
	pkt := dnsAnswer4(t, "WWW.Example.Test.", "192.0.2.80", "192.0.2.81")
	// Nobody was seen asking: the answer is read and names nothing.
	b.learn(dnsReplyFlow, pkt)
	if got := b.lookup(curl1000, netip.MustParseAddr("192.0.2.80")); got != "" {
		t.Fatalf("an answer to no query seen named %q", got)
	}
	b.querySent(dnsQueryFlow, 20, dnsQuery4(t, 9), curl1000)
	b.learn(dnsReplyFlow, pkt)
	// The payload is only valid during the handler: overwriting it must
	// not change what was learnt.
	for i := range pkt {
		pkt[i] = 0xff
	}
	b.learn(dnsReplyFlow, pkt)          // now garbage
	b.learn(dnsReplyFlow, []byte{0x45}) // truncated
	for _, a := range []string{"192.0.2.80", "192.0.2.81", "::ffff:192.0.2.80"} {
		if got := b.lookup(curl1000, netip.MustParseAddr(a)); got != "www.example.test" {
			t.Errorf("lookup(%s) = %q, want the question name www.example.test", a, got)
		}
	}
	if got := b.lookup(curl1000, netip.MustParseAddr("192.0.2.82")); got != "" {
		t.Errorf("unanswered address named %q", got)
	}
	other := curl1000
	other.UID, other.TGID = 1001, 4242
	if got := b.lookup(other, netip.MustParseAddr("192.0.2.80")); got != "" {
		t.Errorf("UID 1000's answer names UID 1001's connection: %q", got)
	}
	if answers, malformed, names := b.counts(); answers != 2 || malformed != 2 || names != 2 || b.unbound.Load() != 1 {
		t.Errorf("counts = %d answers, %d malformed, %d named addresses, %d unbound; want 2, 2, 2, 1", answers, malformed, names, b.unbound.Load())
	}
	var none *nameBook
	if none.lookup(curl1000, netip.MustParseAddr("192.0.2.80")) != "" {
		t.Error("a nil book named an address")
	}
	none.querySent(dnsQueryFlow, 20, dnsQuery4(t, 9), curl1000)
	none.forgetQuery(dnsQueryFlow, 0)
}

// TestNameBookTrustedResolver: the answers to a trusted resolver UID's
// queries name addresses for every user; an untrusted one's only for it.
func TestNameBookTrustedResolver(t *testing.T) {
	resolver := flow.Process{UID: 990, TGID: 500}
	b := newNameBook(slog.New(slog.NewTextHandler(io.Discard, nil)), dnsnames.CacheConfig{}, []uint32{990})
	b.querySent(dnsQueryFlow, 20, dnsQuery4(t, 9), resolver)
	b.learn(dnsReplyFlow, dnsAnswer4(t, "www.example.test.", "192.0.2.80"))
	if got := b.lookup(curl1000, netip.MustParseAddr("192.0.2.80")); got != "www.example.test" {
		t.Errorf("a trusted resolver's answer for UID 1000: %q", got)
	}
	b = newNameBook(slog.New(slog.NewTextHandler(io.Discard, nil)), dnsnames.CacheConfig{}, nil)
	b.querySent(dnsQueryFlow, 20, dnsQuery4(t, 9), resolver)
	b.learn(dnsReplyFlow, dnsAnswer4(t, "www.example.test.", "192.0.2.80"))
	if got := b.lookup(curl1000, netip.MustParseAddr("192.0.2.80")); got != "" {
		t.Errorf("an untrusted resolver's answer named UID 1000's connection: %q", got)
	}
	if got := b.lookup(resolver, netip.MustParseAddr("192.0.2.80")); got != "www.example.test" {
		t.Errorf("the resolver's own answer: %q", got)
	}
}

func TestHostRulesMatchNamedConnections(t *testing.T) {
	e, r, _ := newRuleEngine(t)
	cancel := e.WatchPending(alice).Cancel
	defer cancel()
	decisions := e.WatchDecisions(alice)
	cancelD := decisions.Cancel
	defer cancelD()
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{
		{ID: "example", Enabled: true, Action: flow.ActionAllow, Exe: "/usr/bin/curl", Host: "*.example.test",
			PortMin: 443, PortMax: 443, Lifetime: rules.Forever},
	}}); err != nil {
		t.Fatal(err)
	}
	e.HandleNamed(PacketRef{ID: 1}, tcp("192.0.2.80", 40000, 443), curl1000, "www.example.test")
	if got := r.verdict(1); got != flow.ActionAllow {
		t.Fatalf("named connection: verdict %v, want allow by the host rule", got)
	}
	if d := next(t, decisions); d.Host != "www.example.test" || decisionToProto(d).GetHost() != "www.example.test" || d.RuleID != "example" {
		t.Errorf("decision host %q rule %q, want www.example.test and example", d.Host, d.RuleID)
	}
	// The same address without a name, and another name, are asked about.
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.80", 40001, 443), curl1000)
	e.HandleNamed(PacketRef{ID: 3}, tcp("192.0.2.99", 40002, 443), curl1000, "example.org")
	if r.verdict(2) != flow.ActionNone || r.verdict(3) != flow.ActionNone {
		t.Fatalf("unnamed / other-named connections decided: %v, %v", r.verdict(2), r.verdict(3))
	}
	var named *Pending
	for _, p := range e.ListPending(alice) {
		if p.Tuple.Dst == netip.MustParseAddr("192.0.2.99") {
			named = &p
		}
	}
	if named == nil || named.Host != "example.org" || pendingToProto(*named).GetHost() != "example.org" {
		t.Fatalf("pending entry %+v, want host example.org", named)
	}
	// A rule set later settles the pending entry by its host.
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{
		{ID: "org", Enabled: true, Action: flow.ActionReject, Host: "example.org", Lifetime: rules.Forever},
	}}); err != nil {
		t.Fatal(err)
	}
	if got := r.verdict(3); got != flow.ActionReject {
		t.Errorf("pending named entry after a host rule: %v, want reject", got)
	}
	if got := r.verdict(2); got != flow.ActionNone {
		t.Errorf("unnamed entry decided by a host rule: %v", got)
	}
}
