package procid

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/bastion-fw/bastion/internal/flow"
)

// Mechanism names how connections are attributed.
type Mechanism string

// The mechanisms, best first.
const (
	MechNetfilterLink Mechanism = "netfilter-link"
	MechSockOps       Mechanism = "sockops" // cgroup sockops + sock_addr
	MechProcFS        Mechanism = "procfs"  // sock_diag + /proc, no BPF
	MechAuto          Mechanism = "auto"
)

// ParseMechanism parses a mechanism name as given on a command line.
func ParseMechanism(s string) (Mechanism, error) {
	switch m := Mechanism(s); m {
	case MechNetfilterLink, MechSockOps, MechProcFS, MechAuto:
		return m, nil
	case "":
		return MechAuto, nil
	}
	return "", fmt.Errorf("unknown mechanism %q (want auto, netfilter-link, sockops or procfs)", s)
}

// ErrNotFound is returned (wrapped) when nothing is known about a flow.
var ErrNotFound = errors.New("process not found")

// Resolver finds the process that sent a flow's first packet.
//
// Implementations are safe for concurrent use.
type Resolver interface {
	// Resolve returns the process that sent t's first packet, or an
	// error wrapping ErrNotFound when nothing is known.
	Resolve(t flow.Tuple) (flow.Process, error)
	// Forget drops what is recorded about t once the caller has decided
	// it, so that the kernel maps do not fill with dead flows. The maps
	// are LRU, so forgetting is an optimisation, not a requirement.
	Forget(t flow.Tuple)
	Mechanism() Mechanism
	Close() error
}

// Completer is implemented by resolvers that can complete a process that
// was decided in the kernel (internal/kdecide), whose record names it by
// thread group, start time and exec count only: Complete sets p's command
// line and parent (and mount namespace, if unset) from the process images
// the resolver has seen, the exec map, or /proc while the process lives;
// it leaves them as they are when it knows nothing of that image.
type Completer interface {
	Complete(p *flow.Process, execID uint64)
}

// Config configures Open.
type Config struct {
	Mechanism Mechanism // MechAuto (or "") picks the best available
	// NetNS is the network namespace whose traffic is attributed; nil
	// means the caller's. Keep it open while the Resolver is used.
	NetNS *os.File
	// CgroupPath is the cgroup v2 directory the sockops and sock_addr
	// programs attach to; "" means the cgroup2 mount's root (package
	// cgroup2 finds it). Only processes inside it are attributed by
	// MechSockOps.
	CgroupPath string
	// ProcFS is the /proc used to complete processes that started before
	// the agent, and by MechProcFS; "" means /proc.
	ProcFS string
	// FallbackFor, when set, opens MechProcFS as the second chance of
	// that primary mechanism, for the flows it missed: it is logged as a
	// fallback, not as the mechanism in use.
	FallbackFor Mechanism
	Log         *slog.Logger
}

// Validate checks c.
func (c Config) Validate() error {
	if _, err := ParseMechanism(string(c.Mechanism)); err != nil {
		return err
	}
	return nil
}

// Open starts attributing connections with the configured mechanism. With
// MechAuto it tries netfilter-link, then sockops, then procfs, and logs which
// one it uses and why the better ones were skipped.
func Open(cfg Config) (Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "procid")
	if cfg.ProcFS == "" {
		cfg.ProcFS = "/proc"
	}

	switch cfg.Mechanism {
	case MechNetfilterLink, MechSockOps:
		r, err := openBPF(cfg, cfg.Mechanism, log)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", cfg.Mechanism, withAdvice(err))
		}
		log.Info("process identification ready", "mechanism", cfg.Mechanism)
		return r, nil
	case MechProcFS:
		r, err := openProcFS(cfg)
		if err != nil {
			return nil, fmt.Errorf("open procfs: %w", err)
		}
		if cfg.FallbackFor != "" {
			log.Info("process identification fallback ready: flows the primary mechanism missed are looked up "+
				"with sock_diag and /proc while their socket exists",
				"mechanism", MechProcFS, "fallback_for", cfg.FallbackFor)
			return r, nil
		}
		log.Info("process identification ready", "mechanism", MechProcFS,
			"note", "no eBPF: short-lived processes may not be identified")
		return r, nil
	}

	// MechAuto.
	var skipped []string
	for _, m := range []Mechanism{MechNetfilterLink, MechSockOps} {
		r, err := openBPF(cfg, m, log)
		if err == nil {
			log.Info("process identification ready", "mechanism", m, "skipped", strings.Join(skipped, "; "))
			return r, nil
		}
		log.Info("process identification mechanism unavailable", "mechanism", m, "err", err)
		skipped = append(skipped, fmt.Sprintf("%s: %v", m, err))
	}
	r, err := openProcFS(cfg)
	if err != nil {
		return nil, fmt.Errorf("no process identification mechanism works: %s; procfs: %w",
			strings.Join(skipped, "; "), err)
	}
	log.Info("process identification ready", "mechanism", MechProcFS,
		"skipped", strings.Join(skipped, "; "),
		"note", "no eBPF: short-lived processes may not be identified")
	return r, nil
}

// withAdvice adds what to do to an eBPF load or attach error.
func withAdvice(err error) error {
	if _, statErr := os.Stat("/sys/kernel/btf/vmlinux"); statErr != nil {
		return fmt.Errorf("kernel has no BTF at /sys/kernel/btf/vmlinux (%v), so the eBPF programs cannot be relocated; run with --mechanism=procfs: %w", statErr, err)
	}
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (needs root or CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON; or run with --mechanism=procfs)", err)
	}
	return fmt.Errorf("%w (try --mechanism=auto to fall back, or --mechanism=procfs)", err)
}
