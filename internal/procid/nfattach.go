package procid

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Where nf_local_out runs among LOCAL_OUT's hooks. It must run before
// iptables' mangle (-150) and filter (0) tables, whose NFQUEUE rules hand
// the packet to the agent, so that the flow is recorded first.
//
// It must not share a priority with any other hook: the kernel refuses a
// BPF hook at a priority any hook of the same family and hook point
// already has (nf_hook_entries_grow in net/netfilter/core.c returns EBUSY
// when reg->priority == orig_ops[i]->priority for a NF_HOOK_OP_BPF reg),
// while the reverse, a hook added at a BPF hook's priority, is allowed.
// Conntrack's LOCAL_OUT hook sits at -200 (NF_IP_PRI_CONNTRACK,
// NF_IP6_PRI_CONNTRACK) and is registered in a namespace as soon as any
// rule uses conntrack, as the agent's own rules do. So at -200 the link
// attached in a fresh namespace (before the rules) but not after a crash
// left the rules behind, nor on a host whose firewall already uses
// conntrack. The window between conntrack (-200) and mangle (-150) is
// where the program belongs; it starts just after conntrack, which does
// not change the packet's socket, the only thing the program reads.
const (
	nfPriorityFirst = -199 // just after conntrack (-200)
	nfPriorityLast  = -151 // just before mangle (-150)
)

// attachNetfilterFamily attaches prog at LOCAL_OUT for pf at the first
// priority of [nfPriorityFirst, nfPriorityLast] that no other hook
// holds, and says so when it had to move past the first.
func attachNetfilterFamily(log *slog.Logger, prog *ebpf.Program, pf link.NetfilterProtocolFamily) (link.Link, error) {
	var busy []int32
	for prio := int32(nfPriorityFirst); prio <= nfPriorityLast; prio++ {
		l, err := link.AttachNetfilter(link.NetfilterOptions{
			Program:        prog,
			ProtocolFamily: pf,
			Hook:           link.NetfilterInetLocalOut,
			Priority:       prio,
		})
		if errors.Is(err, unix.EBUSY) {
			busy = append(busy, prio)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("attach netfilter link (family %d, priority %d): %w", pf, prio, err)
		}
		if len(busy) > 0 {
			log.Warn("netfilter link attached past priorities other hooks hold", "family", familyName(pf),
				"priority", prio, "busy_priorities", busy)
		} else {
			log.Debug("netfilter link attached", "family", familyName(pf), "priority", prio)
		}
		return l, nil
	}
	return nil, fmt.Errorf("attach netfilter link (family %d): every LOCAL_OUT priority from %d to %d is held by another hook in this network namespace (see `nft list hooks`): %w",
		pf, nfPriorityFirst, nfPriorityLast, unix.EBUSY)
}

func familyName(pf link.NetfilterProtocolFamily) string {
	switch pf {
	case link.NetfilterProtoIPv4:
		return "ipv4"
	case link.NetfilterProtoIPv6:
		return "ipv6"
	}
	return fmt.Sprint(uint32(pf))
}
