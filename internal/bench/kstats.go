package bench

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// KernelCounters are the kernel decision programs' own counters (the
// pinned `stats` map of bpf/decide.c, summed over CPUs).
type KernelCounters struct {
	Allowed  uint64 `json:"allowed"`  // connections allowed at their first packet
	Denied   uint64 `json:"denied"`   // connect() calls failed with EPERM
	Rejected uint64 `json:"rejected"` // connect() calls failed with ECONNREFUSED
	Lost     uint64 `json:"lost"`     // records the ring buffer had no room for
	Packets  uint64 `json:"packets"`  // packets xt_allow matched
}

// Sub returns c - o.
func (c KernelCounters) Sub(o KernelCounters) KernelCounters {
	return KernelCounters{c.Allowed - o.Allowed, c.Denied - o.Denied, c.Rejected - o.Rejected, c.Lost - o.Lost, c.Packets - o.Packets}
}

// Sent is the number of records the programs tried to send: one per
// decision.
func (c KernelCounters) Sent() uint64 { return c.Allowed + c.Denied + c.Rejected }

// kernelPins reads what an agent's kernel decisions pinned for one
// namespace, from outside the agent.
type kernelPins struct {
	dir   string
	stats *ebpf.Map
}

// openKernelPins opens the pins of the agent guarding ns. The folder is
// the one internal/kdecide.Open names (DefaultPinRoot/netns-<inode>): if
// that ever moves, this fails loudly rather than measuring nothing.
func openKernelPins(ns *testenv.NS) (*kernelPins, error) {
	dir := filepath.Join(kdecide.DefaultPinRoot, fmt.Sprintf("netns-%d", ns.Inode))
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "stats"), nil)
	if err != nil {
		return nil, fmt.Errorf("open the kernel decisions' counters in %s: %w", dir, err)
	}
	return &kernelPins{dir: dir, stats: m}, nil
}

// Counters reads the counters. Their indexes are KD_STAT_* in
// bpf/decide.c.
func (p *kernelPins) Counters() (KernelCounters, error) {
	var c KernelCounters
	var per []uint64
	for i, dst := range []*uint64{&c.Allowed, &c.Denied, &c.Rejected, &c.Lost, &c.Packets} {
		if err := p.stats.Lookup(uint32(i), &per); err != nil {
			return c, fmt.Errorf("read the kernel decisions' counters: %w", err)
		}
		for _, v := range per {
			*dst += v
		}
	}
	return c, nil
}

// ProgStat is what the kernel measured of one program while BPF run-time
// statistics were on.
type ProgStat struct {
	Runs     uint64  `json:"runs"`
	NsPerRun float64 `json:"ns_per_run"`
}

// progRuntimes returns the run count and run time so far of the connect4
// program (through its pinned link) and of xt_allow (pinned).
func (p *kernelPins) progRuntimes() (connect4, xtAllow ebpf.ProgramStats, err error) {
	l, err := link.LoadPinnedLink(filepath.Join(p.dir, "link_connect4"), nil)
	if err != nil {
		return connect4, xtAllow, fmt.Errorf("open connect4 link: %w", err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return connect4, xtAllow, err
	}
	c4, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return connect4, xtAllow, fmt.Errorf("open connect4 program: %w", err)
	}
	defer c4.Close()
	xt, err := ebpf.LoadPinnedProgram(filepath.Join(p.dir, "xt_allow"), nil)
	if err != nil {
		return connect4, xtAllow, fmt.Errorf("open xt_allow: %w", err)
	}
	defer xt.Close()
	s1, err1 := c4.Stats()
	s2, err2 := xt.Stats()
	if err := errors.Join(err1, err2); err != nil {
		return connect4, xtAllow, fmt.Errorf("program statistics: %w", err)
	}
	return *s1, *s2, nil
}

func progStat(before, after ebpf.ProgramStats) ProgStat {
	s := ProgStat{Runs: after.RunCount - before.RunCount}
	if s.Runs > 0 {
		s.NsPerRun = float64((after.Runtime - before.Runtime).Nanoseconds()) / float64(s.Runs)
	}
	return s
}

// Close closes the counters' map.
func (p *kernelPins) Close() error { return p.stats.Close() }
