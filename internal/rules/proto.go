package rules

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/flow"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// ToProto converts r to its wire form. FromProto(ToProto(r)) == r for every
// valid r whose times are in UTC without a monotonic reading (as every
// rule read back from the wire, a file or the store is).
func ToProto(r Rule) *rulesv1.Rule {
	proto, num := ProtocolProto(r.Proto)
	return &rulesv1.Rule{
		Id:             r.ID,
		Enabled:        r.Enabled,
		Action:         ActionProto(r.Action),
		Exe:            r.Exe,
		Cmdline:        r.Cmdline,
		ExeSha256:      r.ExeSHA256,
		AnyMountNs:     r.AnyMountNS,
		Dst:            formatDst(r.Dst),
		DstPortMin:     uint32(r.PortMin),
		DstPortMax:     uint32(r.PortMax),
		Host:           r.Host,
		Protocol:       proto,
		ProtocolNumber: num,
		Lifetime:       rulesv1.Lifetime(r.Lifetime),
		Expires:        timeToProto(r.Expires),
		Created:        timeToProto(r.Created),
		Hits:           r.Hits,
		LastHit:        timeToProto(r.LastHit),
		Note:           r.Note,
	}
}

// FromProto converts a wire rule, which is untrusted, and validates it.
func FromProto(p *rulesv1.Rule) (Rule, error) {
	if p == nil {
		return Rule{}, fmt.Errorf("rule from wire: no rule")
	}
	r, err := fromProto(p)
	if err != nil {
		return Rule{}, fmt.Errorf("rule %q from wire: %w", p.GetId(), err)
	}
	if err := r.Validate(); err != nil {
		return Rule{}, fmt.Errorf("rule %q from wire: %w", p.GetId(), err)
	}
	return r, nil
}

func fromProto(p *rulesv1.Rule) (Rule, error) {
	r := Rule{
		ID:         p.GetId(),
		Enabled:    p.GetEnabled(),
		Exe:        p.GetExe(),
		Cmdline:    p.GetCmdline(),
		ExeSHA256:  p.GetExeSha256(),
		AnyMountNS: p.GetAnyMountNs(),
		Host:       p.GetHost(),
		Hits:       p.GetHits(),
		Note:       p.GetNote(),
	}
	var err error
	if r.Action, err = actionFromProto(p.GetAction()); err != nil {
		return Rule{}, err
	}
	switch l := p.GetLifetime(); l {
	case rulesv1.Lifetime_LIFETIME_ONCE, rulesv1.Lifetime_LIFETIME_DURATION,
		rulesv1.Lifetime_LIFETIME_SESSION, rulesv1.Lifetime_LIFETIME_FOREVER:
		r.Lifetime = Lifetime(l)
	default:
		return Rule{}, fmt.Errorf("lifetime: unknown value %d", int32(l))
	}
	if r.Proto, err = protoFromProto(p.GetProtocol(), p.GetProtocolNumber()); err != nil {
		return Rule{}, err
	}
	if r.Dst, err = parseDst(p.GetDst()); err != nil {
		return Rule{}, fmt.Errorf("dst: %w", err)
	}
	if p.GetDstPortMin() > math.MaxUint16 || p.GetDstPortMax() > math.MaxUint16 {
		return Rule{}, fmt.Errorf("ports: %d-%d out of range", p.GetDstPortMin(), p.GetDstPortMax())
	}
	r.PortMin, r.PortMax = uint16(p.GetDstPortMin()), uint16(p.GetDstPortMax())
	for _, t := range []struct {
		name string
		ts   *timestamppb.Timestamp
		dst  *time.Time
	}{{"expires", p.GetExpires(), &r.Expires}, {"created", p.GetCreated(), &r.Created}, {"last_hit", p.GetLastHit(), &r.LastHit}} {
		if *t.dst, err = timeFromProto(t.ts); err != nil {
			return Rule{}, fmt.Errorf("%s: %w", t.name, err)
		}
	}
	return r, nil
}

// ActionProto converts an action for the rules API; ActionNone becomes
// ACTION_UNSPECIFIED.
func ActionProto(a flow.Action) rulesv1.Action {
	switch a {
	case flow.ActionAllow:
		return rulesv1.Action_ACTION_ALLOW
	case flow.ActionDeny:
		return rulesv1.Action_ACTION_DENY
	case flow.ActionReject:
		return rulesv1.Action_ACTION_REJECT
	}
	return rulesv1.Action_ACTION_UNSPECIFIED
}

func actionFromProto(a rulesv1.Action) (flow.Action, error) {
	switch a {
	case rulesv1.Action_ACTION_ALLOW:
		return flow.ActionAllow, nil
	case rulesv1.Action_ACTION_DENY:
		return flow.ActionDeny, nil
	case rulesv1.Action_ACTION_REJECT:
		return flow.ActionReject, nil
	}
	return 0, fmt.Errorf("action: unknown value %d", int32(a))
}

// protoNames maps the protocols the rules API has a name for.
var protoNames = map[flow.Proto]rulesv1.Protocol{
	flow.TCP: rulesv1.Protocol_PROTOCOL_TCP, flow.UDP: rulesv1.Protocol_PROTOCOL_UDP,
	flow.ICMP: rulesv1.Protocol_PROTOCOL_ICMP, flow.ICMPv6: rulesv1.Protocol_PROTOCOL_ICMPV6,
	flow.UDPLite: rulesv1.Protocol_PROTOCOL_UDPLITE, flow.SCTP: rulesv1.Protocol_PROTOCOL_SCTP,
	flow.DCCP: rulesv1.Protocol_PROTOCOL_DCCP, flow.GRE: rulesv1.Protocol_PROTOCOL_GRE,
}

// ProtocolProto converts a rule's protocol (0: any) for the rules API: its
// name there, or PROTOCOL_OTHER and its number.
func ProtocolProto(p flow.Proto) (rulesv1.Protocol, uint32) {
	if p == 0 {
		return rulesv1.Protocol_PROTOCOL_UNSPECIFIED, 0
	}
	if rp, ok := protoNames[p]; ok {
		return rp, 0
	}
	return rulesv1.Protocol_PROTOCOL_OTHER, uint32(p)
}

// ProtocolOf is a wire rule's protocol, 0 for any or a value that names
// none.
func ProtocolOf(r *rulesv1.Rule) flow.Proto {
	p, err := protoFromProto(r.GetProtocol(), r.GetProtocolNumber())
	if err != nil {
		return 0
	}
	return p
}

// ProtocolName is the name of a wire rule's protocol ("udplite",
// "proto-253"), "" for any or a value that names none.
func ProtocolName(r *rulesv1.Rule) string {
	if p := ProtocolOf(r); p != 0 {
		return p.String()
	}
	return ""
}

func protoFromProto(p rulesv1.Protocol, num uint32) (flow.Proto, error) {
	if num > 255 {
		return 0, fmt.Errorf("protocol: number %d out of range 1-255", num)
	}
	switch p {
	case rulesv1.Protocol_PROTOCOL_UNSPECIFIED:
		if num != 0 {
			return 0, fmt.Errorf("protocol: number %d without PROTOCOL_OTHER or a protocol name", num)
		}
		return 0, nil
	case rulesv1.Protocol_PROTOCOL_OTHER:
		if num == 0 {
			return 0, fmt.Errorf("protocol: PROTOCOL_OTHER needs a protocol_number (1-255)")
		}
		return flow.Proto(num), nil
	}
	for fp, rp := range protoNames {
		if rp == p {
			if num != 0 && num != uint32(fp) {
				return 0, fmt.Errorf("protocol: %v is number %d, not %d", fp, fp, num)
			}
			return fp, nil
		}
	}
	return 0, fmt.Errorf("protocol: unknown value %d", int32(p))
}

func timeToProto(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func timeFromProto(ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, err
	}
	return ts.AsTime(), nil
}

// formatDst writes a single address without its length, and a prefix in
// CIDR form; the zero Prefix is "".
func formatDst(p netip.Prefix) string {
	switch {
	case !p.IsValid():
		return ""
	case p.IsSingleIP():
		return p.Addr().String()
	}
	return p.String()
}

// parseDst is the inverse of formatDst.
func parseDst(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%s: zones are not supported", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
