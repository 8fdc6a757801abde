package procid

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
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

// Detect probes the running kernel. It loads tiny probe programs and needs
// the same privileges as Open.
func Detect() Features {
	f := Features{Reasons: map[string]string{}}
	probe := func(name string, err error) bool {
		if err != nil {
			f.Reasons[name] = err.Error()
			return false
		}
		return true
	}
	_, err := btf.LoadKernelSpec()
	f.BTF = probe("btf", err)
	f.NetfilterLink = probe("netfilter_link", features.HaveProgramType(ebpf.Netfilter))
	f.SockOps = probe("sockops", features.HaveProgramType(ebpf.SockOps))
	f.SockAddr = probe("sock_addr", features.HaveProgramType(ebpf.CGroupSockAddr))
	// features.HaveProgramType(ebpf.Tracing) probes with fentry, which
	// needs trampolines that some kernels lack while tp_btf works: try the
	// real exec program instead.
	f.TpBtf = probe("tp_btf", probeTpBtf())
	return f
}

func probeTpBtf() error {
	spec, err := loadProcid()
	if err != nil {
		return err
	}
	var p struct {
		OnExit *ebpf.Program `ebpf:"on_exit"`
	}
	if err := spec.LoadAndAssign(&p, nil); err != nil {
		return err
	}
	defer p.OnExit.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: p.OnExit})
	if err != nil {
		return err
	}
	return l.Close()
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
