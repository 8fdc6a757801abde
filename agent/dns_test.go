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

func TestNameBookLearnsAndCounts(t *testing.T) {
	b := newNameBook(slog.New(slog.NewTextHandler(io.Discard, nil)), dnsnames.CacheConfig{})
	pkt := dnsAnswer4(t, "WWW.Example.Test.", "192.0.2.80", "192.0.2.81")
	b.learn(pkt)
	// The payload is only valid during the handler: overwriting it must
	// not change what was learnt.
	for i := range pkt {
		pkt[i] = 0xff
	}
	b.learn(pkt)          // now garbage
	b.learn([]byte{0x45}) // truncated
	for _, a := range []string{"192.0.2.80", "192.0.2.81", "::ffff:192.0.2.80"} {
		if got := b.lookup(netip.MustParseAddr(a)); got != "www.example.test" {
			t.Errorf("lookup(%s) = %q, want the question name www.example.test", a, got)
		}
	}
	if got := b.lookup(netip.MustParseAddr("192.0.2.82")); got != "" {
		t.Errorf("unanswered address named %q", got)
	}
	if answers, malformed, names := b.counts(); answers != 1 || malformed != 2 || names != 2 {
		t.Errorf("counts = %d answers, %d malformed, %d names; want 1, 2, 2", answers, malformed, names)
	}
	var none *nameBook
	if none.lookup(netip.MustParseAddr("192.0.2.80")) != "" {
		t.Error("a nil book named an address")
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
