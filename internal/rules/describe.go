package rules

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

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

// ShortDuration rounds d for people, e.g. the time a rule has left: "45s",
// "14m59s", "2h5m", "3d4h".
func ShortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		d = d.Round(time.Second)
		if s := d % time.Minute; s != 0 {
			return fmt.Sprintf("%dm%ds", d/time.Minute, s/time.Second)
		}
		return fmt.Sprintf("%dm", d/time.Minute)
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		if m := d % time.Hour; m != 0 {
			return fmt.Sprintf("%dh%dm", d/time.Hour, m/time.Minute)
		}
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	d = d.Round(time.Hour)
	return fmt.Sprintf("%dd%dh", d/(24*time.Hour), (d%(24*time.Hour))/time.Hour)
}
