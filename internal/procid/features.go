package procid

import (
	"fmt"
	"slices"
	"strings"

	"github.com/bastion-fw/bastion/internal/kernelfeature"
)

// Features reports what the running kernel offers for process
// identification. A false field has its reason in Reasons.
type Features struct {
	BTF           bool // /sys/kernel/btf/vmlinux, needed by every eBPF mechanism
	NetfilterLink bool // BPF_PROG_TYPE_NETFILTER (kernel >= 6.4)
	SockOps       bool // cgroup sockops
	SockAddr      bool // cgroup connect/sendmsg hooks
	TpBtf         bool // BTF-enabled tracepoints, for exec tracking
	Reasons       map[string]string
}

// Detect probes the running kernel (package kernelfeature). It loads tiny
// probe programs and needs the same privileges as Open.
func Detect() Features {
	f := Features{Reasons: map[string]string{}}
	probe := func(feature kernelfeature.Feature) bool {
		if err := kernelfeature.Probe(feature); err != nil {
			f.Reasons[string(feature)] = err.Error()
			return false
		}
		return true
	}
	f.BTF = probe(kernelfeature.BTF)
	f.NetfilterLink = probe(kernelfeature.NetfilterLink)
	f.SockOps = probe(kernelfeature.SockOps)
	f.SockAddr = probe(kernelfeature.SockAddr)
	f.TpBtf = probe(kernelfeature.TpBtf)
	return f
}

// KernelFeatures lists what m needs from the kernel; exec tracking (tp_btf)
// is an improvement that neither eBPF mechanism requires.
func (m Mechanism) KernelFeatures() []kernelfeature.Feature {
	switch m {
	case MechNetfilterLink:
		return []kernelfeature.Feature{kernelfeature.BTF, kernelfeature.NetfilterLink}
	case MechSockOps:
		return []kernelfeature.Feature{kernelfeature.BTF, kernelfeature.SockOps, kernelfeature.SockAddr}
	}
	return nil
}

// Best is the mechanism MechAuto picks on a kernel that offers what f
// reports: netfilter-link (kernel 6.4+), else sockops (Debian 12's 6.1),
// else procfs.
func (f Features) Best() Mechanism {
	offered := map[kernelfeature.Feature]bool{
		kernelfeature.BTF: f.BTF, kernelfeature.NetfilterLink: f.NetfilterLink,
		kernelfeature.SockOps: f.SockOps, kernelfeature.SockAddr: f.SockAddr, kernelfeature.TpBtf: f.TpBtf,
	}
	for _, m := range []Mechanism{MechNetfilterLink, MechSockOps} {
		if !slices.ContainsFunc(m.KernelFeatures(), func(k kernelfeature.Feature) bool { return !offered[k] }) {
			return m
		}
	}
	return MechProcFS
}

func (f Features) String() string {
	var b strings.Builder
	for _, x := range []struct {
		name string
		ok   bool
	}{{"btf", f.BTF}, {"netfilter_link", f.NetfilterLink}, {"sockops", f.SockOps}, {"sock_addr", f.SockAddr}, {"tp_btf", f.TpBtf}} {
		if b.Len() > 0 {
			b.WriteString(" ")
		}
		if x.ok {
			fmt.Fprintf(&b, "%s=yes", x.name)
		} else {
			fmt.Fprintf(&b, "%s=no(%s)", x.name, f.Reasons[x.name])
		}
	}
	return b.String()
}
