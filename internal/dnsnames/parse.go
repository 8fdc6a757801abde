package dnsnames

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/packet"
)

// Errors Parse returns; every error matches one of them.
var (
	// ErrNotDNS: the packet is not a UDP datagram from port 53, or is a
	// DNS query rather than a response.
	ErrNotDNS = errors.New("not a DNS response")
	// ErrMalformed: the IP, UDP or DNS bytes do not parse.
	ErrMalformed = errors.New("malformed DNS response")
)

// maxRecords bounds the answer records read from one message, and so the
// work and memory one packet can cause.
const maxRecords = 64

// maxChain bounds how many CNAME hops are followed from the question name.
const maxChain = 16

// Record is one address the answer gave for the name asked.
type Record struct {
	Addr netip.Addr
	TTL  time.Duration
}

// Answer is what one DNS response says: the name the application asked
// for (lower case, no trailing dot), the CNAME chain that led from it to
// the addresses (in order, without the question name), and the addresses.
type Answer struct {
	// ID is the DNS message ID, which a resolver matches to its query.
	ID      uint16
	Name    string
	CNAMEs  []string
	Records []Record
}

// Parse reads a DNS response from an IPv4 or IPv6 packet carrying UDP from
// source port 53. Answers with no A or AAAA record for the question name
// (directly or through CNAMEs) return an Answer with no Records and no error.
func Parse(pkt []byte) (Answer, error) {
	t, info, err := packet.Parse(pkt)
	if err != nil {
		return Answer{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if t.Proto != flow.UDP || t.SrcPort != 53 {
		return Answer{}, ErrNotDNS
	}
	off := info.TransportOffset + 8
	if info.TransportOffset == 0 || off > len(pkt) {
		return Answer{}, fmt.Errorf("%w: no UDP payload", ErrMalformed)
	}
	return ParseMessage(pkt[off:])
}

// ParseMessage reads a DNS response message (the UDP payload).
func ParseMessage(msg []byte) (Answer, error) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return Answer{}, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	if !h.Response {
		return Answer{}, ErrNotDNS
	}
	if h.RCode != dnsmessage.RCodeSuccess || h.Truncated {
		// NXDOMAIN, SERVFAIL...: no addresses. A truncated answer is
		// retried over TCP, which is not seen; what it holds may be cut.
		return Answer{}, nil
	}
	q, err := p.Question()
	if err != nil {
		return Answer{}, fmt.Errorf("%w: question: %w", ErrMalformed, err)
	}
	if q.Class != dnsmessage.ClassINET || (q.Type != dnsmessage.TypeA && q.Type != dnsmessage.TypeAAAA) {
		return Answer{}, nil
	}
	qname, ok := hostName(q.Name)
	if !ok {
		return Answer{}, fmt.Errorf("%w: question name %q", ErrMalformed, q.Name.String())
	}
	// Only the first question counts: resolvers send one.
	if err := p.SkipAllQuestions(); err != nil {
		return Answer{}, fmt.Errorf("%w: questions: %w", ErrMalformed, err)
	}

	type addrRec struct {
		owner string
		rec   Record
	}
	cnames := map[string]string{} // owner -> target
	var addrs []addrRec
	for range maxRecords {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return Answer{}, fmt.Errorf("%w: answer: %w", ErrMalformed, err)
		}
		owner, ok := hostName(rh.Name)
		if !ok || rh.Class != dnsmessage.ClassINET {
			if err := p.SkipAnswer(); err != nil {
				return Answer{}, fmt.Errorf("%w: answer: %w", ErrMalformed, err)
			}
			continue
		}
		ttl := time.Duration(rh.TTL) * time.Second
		switch rh.Type {
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return Answer{}, fmt.Errorf("%w: A record: %w", ErrMalformed, err)
			}
			addrs = append(addrs, addrRec{owner, Record{netip.AddrFrom4(r.A), ttl}})
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return Answer{}, fmt.Errorf("%w: AAAA record: %w", ErrMalformed, err)
			}
			addrs = append(addrs, addrRec{owner, Record{netip.AddrFrom16(r.AAAA), ttl}})
		case dnsmessage.TypeCNAME:
			r, err := p.CNAMEResource()
			if err != nil {
				return Answer{}, fmt.Errorf("%w: CNAME record: %w", ErrMalformed, err)
			}
			if target, ok := hostName(r.CNAME); ok {
				if _, dup := cnames[owner]; !dup {
					cnames[owner] = target
				}
			}
		default:
			if err := p.SkipAnswer(); err != nil {
				return Answer{}, fmt.Errorf("%w: answer: %w", ErrMalformed, err)
			}
		}
	}

	// Follow the chain from the question name; only records owned by a
	// name on it answer the question (others are unrelated or forged
	// "additional" data and are ignored).
	a := Answer{ID: h.ID, Name: qname}
	onChain := map[string]bool{qname: true}
	for cur := qname; len(a.CNAMEs) < maxChain; {
		next, ok := cnames[cur]
		if !ok || onChain[next] {
			break
		}
		a.CNAMEs = append(a.CNAMEs, next)
		onChain[next] = true
		cur = next
	}
	for _, r := range addrs {
		if onChain[r.owner] {
			a.Records = append(a.Records, r.rec)
		}
	}
	return a, nil
}

// QueryID returns the message ID of the DNS query in the UDP datagram pkt
// (an IPv4 or IPv6 packet to port 53 whose transport header starts at
// transportOffset), or false if its payload is not a DNS query header (too
// short, or a response). It reads three bytes: it runs on the packet path
// for every DNS query the agent sees.
func QueryID(pkt []byte, transportOffset int) (uint16, bool) {
	off := transportOffset + 8
	if transportOffset <= 0 || len(pkt) < off+12 || pkt[off+2]&0x80 != 0 {
		return 0, false
	}
	return uint16(pkt[off])<<8 | uint16(pkt[off+1]), true
}

// maxNameLen is the longest DNS name in text form, without the final dot.
const maxNameLen = 253

// hostName returns n in lower case without its final dot, if it is a host
// name a rule could name: letters, digits, '-', '_' and dots, no empty
// labels. Anything else (escaped bytes, spaces, the root) is refused, so
// no control or shell character ever reaches a prompt or a log.
func hostName(n dnsmessage.Name) (string, bool) {
	s := strings.TrimSuffix(n.String(), ".")
	if s == "" || len(s) > maxNameLen {
		return "", false
	}
	return Normalize(s)
}

// Normalize returns s in lower case without a trailing dot if it is a
// plain host name, or false.
func Normalize(s string) (string, bool) {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > maxNameLen {
		return "", false
	}
	lower := false
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			label++
		case c >= 'A' && c <= 'Z':
			lower = true
			label++
		case c == '.':
			if label == 0 {
				return "", false
			}
			label = 0
		default:
			return "", false
		}
		if label > 63 {
			return "", false
		}
	}
	if label == 0 {
		return "", false
	}
	if lower {
		s = strings.ToLower(s)
	}
	return s, true
}
