package kernelfeature

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Feature names one kernel feature. The names are those the agent's status
// reports.
type Feature string

// The features, in the order the status lists them.
const (
	BTF           Feature = "btf"            // /sys/kernel/btf/vmlinux, needed by every eBPF mechanism
	NetfilterLink Feature = "netfilter_link" // BPF_PROG_TYPE_NETFILTER and its link (kernel >= 6.4)
	SockOps       Feature = "sockops"        // cgroup sockops
	SockAddr      Feature = "sock_addr"      // cgroup connect4/6 and sendmsg4/6 hooks
	TpBtf         Feature = "tp_btf"         // BTF-enabled tracepoints, for exec tracking
)

// All returns every feature, in the order the status lists them.
func All() []Feature { return []Feature{BTF, NetfilterLink, SockOps, SockAddr, TpBtf} }

// Probed says what Probe tries for f, for messages.
func (f Feature) Probed() string {
	switch f {
	case BTF:
		return "loading the kernel's BTF"
	case NetfilterLink:
		return "loading a BPF_PROG_TYPE_NETFILTER program"
	case SockOps:
		return "loading a BPF_PROG_TYPE_SOCK_OPS program"
	case SockAddr:
		return "loading a BPF_PROG_TYPE_CGROUP_SOCK_ADDR program"
	case TpBtf:
		return "attaching a tp_btf program to sched_process_exit"
	}
	return "nothing (unknown feature)"
}

// Probe reports whether the running kernel offers f: nil when it does, an
// error wrapping ebpf.ErrNotSupported when the kernel lacks it, and any
// other error when the probe itself failed (without CAP_BPF, for one). It
// loads tiny probe programs and needs the same privileges as the agent.
func Probe(f Feature) error {
	switch f {
	case BTF:
		_, err := btf.LoadKernelSpec()
		return err
	case NetfilterLink:
		return features.HaveProgramType(ebpf.Netfilter)
	case SockOps:
		return features.HaveProgramType(ebpf.SockOps)
	case SockAddr:
		return features.HaveProgramType(ebpf.CGroupSockAddr)
	case TpBtf:
		return probeTpBtf()
	}
	return fmt.Errorf("probe kernel feature %q: no such feature", string(f))
}

// probeTpBtf loads and attaches an empty tp_btf program.
// features.HaveProgramType(ebpf.Tracing) would probe with fentry, which
// needs trampolines that some kernels lack while tp_btf works.
func probeTpBtf() error {
	if _, err := btf.LoadKernelSpec(); err != nil {
		return fmt.Errorf("tp_btf needs kernel btf: %w", err)
	}
	prog, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Type:       ebpf.Tracing,
		AttachType: ebpf.AttachTraceRawTp,
		AttachTo:   "sched_process_exit",
		Instructions: asm.Instructions{
			asm.LoadImm(asm.R0, 0, asm.DWord),
			asm.Return(),
		},
		License: "GPL",
	}, ebpf.ProgramOptions{LogDisabled: true})
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.E2BIG) {
		// As features.HaveProgramType reads them: a program type or
		// attach type the kernel does not know.
		return fmt.Errorf("load tp_btf program: %w: %w", ebpf.ErrNotSupported, err)
	}
	if err != nil {
		return fmt.Errorf("load tp_btf program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("attach tp_btf program: %w", err)
	}
	return l.Close()
}
