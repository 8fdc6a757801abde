package rules

import (
	"fmt"
	"net/netip"
	"strconv"

	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// DestinationText splits a rule's destination operands into the two parts
// every display shows: where (the host, a single address without its /32 or
// /128, or a prefix; "" for anywhere) and ports ("443" or "8000-8999"; ""
// for any port). Clients add the protocol and their own wording.
func DestinationText(r *rulesv1.Rule) (where, ports string) {
	where = r.GetHost()
	if where == "" {
		where = r.GetDst()
		if p, err := netip.ParsePrefix(where); err == nil && p.IsSingleIP() {
			where = p.Addr().String()
		}
	}
	switch lo, hi := r.GetDstPortMin(), r.GetDstPortMax(); {
	case lo == 0 && hi == 0:
	case lo == hi || hi == 0:
		ports = strconv.FormatUint(uint64(lo), 10)
	default:
		ports = fmt.Sprintf("%d-%d", lo, hi)
	}
	return where, ports
}
