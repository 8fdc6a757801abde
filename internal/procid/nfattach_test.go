package procid

import (
	"errors"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/kernelfeature"
	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// acceptAll is a netfilter program that accepts every packet.
func acceptAll(t *testing.T) *ebpf.Program {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Netfilter, AttachType: ebpf.AttachNetfilter, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}})
	if err != nil {
		t.Fatalf("load netfilter program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

func linkPriority(t *testing.T, l link.Link) int32 {
	t.Helper()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	return info.Netfilter().Priority
}

// TestAttachNetfilterMovesPastBusyPriorities: the kernel refuses a BPF
// hook at a priority another hook holds (EBUSY), as conntrack's -200 is
// after a crash left the agent's conntrack rules behind. The attach takes
// the next free priority before mangle (-150), and says why it cannot when
// every one is taken.
func TestAttachNetfilterMovesPastBusyPriorities(t *testing.T) {
	testenv.RequireKernelFeature(t, kernelfeature.NetfilterLink)
	ns, _ := newNetns(t)
	prog := acceptAll(t)
	err := netns.Do(ns, func() error {
		hold := func(prio int32) link.Link {
			l, err := link.AttachNetfilter(link.NetfilterOptions{Program: prog, ProtocolFamily: link.NetfilterProtoIPv4,
				Hook: link.NetfilterInetLocalOut, Priority: prio})
			if err != nil {
				t.Fatalf("hold priority %d: %v", prio, err)
			}
			t.Cleanup(func() { l.Close() })
			return l
		}
		l, err := attachNetfilterFamily(testLogger(t), prog, link.NetfilterProtoIPv4)
		if err != nil {
			t.Fatalf("free namespace: %v", err)
		}
		if got := linkPriority(t, l); got != nfPriorityFirst {
			t.Errorf("free namespace: attached at %d, want %d", got, nfPriorityFirst)
		}
		l.Close()

		hold(nfPriorityFirst)
		hold(nfPriorityFirst + 1)
		l, err = attachNetfilterFamily(testLogger(t), prog, link.NetfilterProtoIPv4)
		if err != nil {
			t.Fatalf("two priorities held: %v", err)
		}
		if got := linkPriority(t, l); got != nfPriorityFirst+2 {
			t.Errorf("two priorities held: attached at %d, want %d", got, nfPriorityFirst+2)
		}
		l.Close()

		for p := int32(nfPriorityFirst + 2); p <= nfPriorityLast; p++ {
			hold(p)
		}
		if l, err := attachNetfilterFamily(testLogger(t), prog, link.NetfilterProtoIPv4); !errors.Is(err, unix.EBUSY) {
			if l != nil {
				l.Close()
			}
			t.Errorf("every priority held: err %v, want EBUSY", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAttachNetfilterBesideConntrack is the crash-restart case: a rule
// that uses conntrack (as the agent's own rules do, and stay after a
// crash) registers conntrack's LOCAL_OUT hook at -200, where the kernel
// then refuses a BPF hook; the agent's priorities are free of it.
func TestAttachNetfilterBesideConntrack(t *testing.T) {
	testenv.RequireKernelFeature(t, kernelfeature.NetfilterLink)
	ns, _ := newNetns(t)
	prog := acceptAll(t)
	err := netns.Do(ns, func() error {
		// Started from a thread inside ns, iptables works on ns.
		if out, err := exec.Command("iptables", "-w", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT").CombinedOutput(); err != nil {
			t.Fatalf("iptables: %v: %s", err, out)
		}
		l, err := link.AttachNetfilter(link.NetfilterOptions{Program: prog, ProtocolFamily: link.NetfilterProtoIPv4,
			Hook: link.NetfilterInetLocalOut, Priority: -200})
		if err == nil {
			l.Close()
			t.Errorf("a BPF hook attached at conntrack's priority -200; the kernel used to refuse it (EBUSY)")
		} else if !errors.Is(err, unix.EBUSY) {
			t.Errorf("attach at -200 beside conntrack: %v, want EBUSY", err)
		}
		for _, pf := range []link.NetfilterProtocolFamily{link.NetfilterProtoIPv4, link.NetfilterProtoIPv6} {
			l, err := attachNetfilterFamily(testLogger(t), prog, pf)
			if err != nil {
				t.Fatalf("attach beside conntrack: %v", err)
			}
			l.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
