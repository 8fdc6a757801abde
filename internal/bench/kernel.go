package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// The kernel-decision rounds measure connections that a remembered
// decision covers, which the kernel decides (bpf/decide.c), against the
// same connections with no firewall, through a bare NFQUEUE, and through
// an agent with kernel decisions off (the queue path, as before they
// existed), all in the same run.
//
// One program dials in every case: the loop dialer, run as root directly
// in a cgroup (the agent's own for the agent cases: the kernel decides
// only for processes in the cgroup its programs are attached to), timing
// each blocking connect() inside the dialer. The cases take turns in
// slices, as in the paired rounds, so that a noisy neighbour skews a
// round rather than a case; the figures are medians over the rounds.
//
// Whether the kernel took its path is read from the programs' own
// counters (the pinned `stats` map): a case that should be decided in the
// kernel and was not fails the run, as does a connection a rule the
// kernel cannot evaluate (a command-line regex) decides that the kernel
// allowed.

// Kernel-round case names.
const (
	caseNone          = "no firewall"
	caseRefused       = "no firewall, closed port (ECONNREFUSED)"
	caseConntrack     = "no firewall, conntrack on"
	caseBare          = "bare NFQUEUE, first packets"
	caseKernelAllow   = "kernel: remembered allow (rule)"
	caseKernelDeny    = "kernel: remembered deny (rule)"
	caseQueueRule     = "kernel on: allow rule with cmdline regex (queue)"
	caseAPI           = "kernel on: API answers each"
	caseTodayAllow    = "kernel off: allow rule (queue)"
	caseTodayRule     = "kernel off: allow rule with cmdline regex (queue)"
	caseTodayAPI      = "kernel off: API answers each"
	floodDeny         = "flood of remembered denies"
	floodAllow        = "flood of remembered allows"
	floodStopped      = "flood of remembered allows, agent stopped (SIGSTOP)"
	kernelProfileTime = 2 * time.Second
	floodTime         = 3 * time.Second
)

// KernelReport is the kernel-decision rounds' part of the report.
type KernelReport struct {
	Dialer  string       `json:"dialer"`
	Threads int          `json:"threads"`
	Rounds  int          `json:"rounds"`
	SliceMS int64        `json:"slice_ms"`
	Cases   []KernelCase `json:"cases,omitempty"`
	Ratios  KernelRatios `json:"ratios"`
	// Programs is what the kernel measured of the decision programs
	// (BPF run-time statistics, on only for this) while the loop dialer
	// made remembered-allow and remembered-deny connections.
	Programs map[string]ProgStat `json:"programs,omitempty"`
	Floods   []Flood             `json:"floods,omitempty"`
	Skipped  string              `json:"skipped,omitempty"`
}

// KernelCase is one case over all rounds.
type KernelCase struct {
	Name string `json:"name"`
	// Expect is the connect() outcome counted: "ok", or the errno name.
	Expect     string `json:"expect"`
	Conns      int    `json:"conns"`      // connect() calls with that outcome
	Unexpected int    `json:"unexpected"` // with another one
	// Rates are the outcomes per second of each round; ConnPerSec is
	// their median.
	Rates      []float64 `json:"rates"`
	ConnPerSec float64   `json:"conn_per_sec"`
	// Medians over the rounds of each round's connect() latency
	// quantiles, and the rounds' range.
	P50US    float64    `json:"connect_p50_us"`
	P99US    float64    `json:"connect_p99_us"`
	P50Range [2]float64 `json:"connect_p50_us_range"`
	P99Range [2]float64 `json:"connect_p99_us_range"`
	// AgentCPUMsPer1000 is the agent's CPU time (utime+stime) during the
	// case's slices per 1,000 outcomes.
	AgentCPUMsPer1000 float64 `json:"agent_cpu_ms_per_1000,omitempty"`
	// Kernel is what the kernel's counters counted during the case's
	// slices (agent with kernel decisions only).
	Kernel *KernelCounters `json:"kernel,omitempty"`

	expect   string // "" for ok
	dialer   *LoopDialer
	addr     string
	timeout  time.Duration
	agent    *testenv.Agent
	pins     *kernelPins
	cpuTicks int64
	p50s     []float64
	p99s     []float64
}

// KernelRatios are medians of per-round ratios of conn/s, with the
// rounds' range.
type KernelRatios struct {
	KernelAllowVsNone Ratio `json:"kernel_allow_vs_no_firewall"`
	// Against connection tracking alone, and that against no firewall:
	// what of the kernel path's cost is conntrack's.
	KernelAllowVsConntrack Ratio `json:"kernel_allow_vs_conntrack"`
	ConntrackVsNone        Ratio `json:"conntrack_vs_no_firewall"`
	// Against the same rule decided through the queue by an agent
	// with kernel decisions off.
	KernelAllowVsQueueAllow Ratio `json:"kernel_allow_vs_queue_allow"`
	QueueAllowVsNone        Ratio `json:"queue_allow_kernel_off_vs_no_firewall"`
	// A rule the kernel cannot take: through the queue, with kernel
	// decisions on and off.
	QueueRuleVsNone      Ratio `json:"queue_rule_vs_no_firewall"`
	QueueRuleVsKernelOff Ratio `json:"queue_rule_vs_kernel_off"`
	QueueRuleOffVsNone   Ratio `json:"queue_rule_kernel_off_vs_no_firewall"`
	// First-seen connections, each answered through the API.
	APIVsNone      Ratio `json:"api_vs_no_firewall"`
	APIVsBare      Ratio `json:"api_vs_bare_first_packets"`
	APIVsKernelOff Ratio `json:"api_vs_kernel_off"`
	APIOffVsNone   Ratio `json:"api_kernel_off_vs_no_firewall"`
	APIOffVsBare   Ratio `json:"api_kernel_off_vs_bare_first_packets"`
	BareVsNone     Ratio `json:"bare_first_packets_vs_no_firewall"`
	// Agent CPU per 1,000 connections: remembered allows decided in
	// the kernel over the same allows decided through the queue.
	CPUKernelVsQueue float64 `json:"agent_cpu_kernel_allow_vs_queue_allow,omitempty"`
}

// Ratio is a median over rounds and the rounds' range.
type Ratio struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func (r Ratio) String() string { return fmt.Sprintf("%.3f (%.3f-%.3f)", r.Median, r.Min, r.Max) }

// Flood is the ring buffer under the highest rate of kernel decisions the
// machine can make: every decision the programs made (Sent), the records
// the agent took in (Recorded, its counters) and those the ring buffer
// had no room for (Lost, counted by the programs).
type Flood struct {
	Name    string  `json:"name"`
	Threads int     `json:"threads"`
	Seconds float64 `json:"seconds"`
	Calls   int     `json:"connect_calls"`
	PerSec  float64 `json:"decisions_per_sec"`
	Sent    uint64  `json:"sent"`
	// Recorded is the growth of the agent's kernel_decisions counter, read
	// once it stopped growing.
	Recorded uint64 `json:"recorded"`
	Lost     uint64 `json:"lost"`
	// Unaccounted is Sent - Recorded - Lost: records neither recorded
	// nor counted lost (0 when every record is accounted for).
	Unaccounted       int64   `json:"unaccounted"`
	AgentCPUMsPer1000 float64 `json:"agent_cpu_ms_per_1000"`
	// AgentCatchUpMS is how long after the flood the agent's counter
	// stopped growing.
	AgentCatchUpMS int64 `json:"agent_catch_up_ms"`
}

// kernelSide is one agent's namespace, dialer and targets.
type kernelSide struct {
	sess   *Session
	dialer *LoopDialer
	pins   *kernelPins // nil with kernel decisions off
	allow  string
	deny   string
	rule   string
	api    string
	// flood dials the ring buffer's flood; floodAllow is its own
	// listener, which a rule allows like allow (kernel side only).
	flood      *LoopDialer
	floodAllow string
}

// kernelRounds runs the kernel-decision rounds. An error means the run
// cannot be trusted (the kernel path was not taken, or a rule it must not
// take was); failures of setting up are recorded in the report.
func kernelRounds(ctx context.Context, cfg Config, runner BinaryAgent, bareBin string, out io.Writer) (rep KernelReport, err error) {
	rep = KernelReport{Threads: cfg.Workers, Rounds: cfg.KernelRounds, SliceMS: cfg.KernelSlice.Milliseconds()}
	var closers []func() error
	defer func() {
		var errs []error
		for _, c := range slices.Backward(closers) {
			errs = append(errs, c())
		}
		if cerr := errors.Join(errs...); cerr != nil && err == nil {
			err = fmt.Errorf("kernel rounds: clean up: %w", cerr)
		}
	}()
	dir, err := testenv.MakeTempDir("bastion-bench-loop-")
	if err != nil {
		return rep, err
	}
	closers = append(closers, func() error { return os.RemoveAll(dir) })
	bin, err := testenv.GoBuild(dir, "loopdialer", LoopDialerPackage)
	if err != nil {
		return rep, err
	}
	rep.Dialer = fmt.Sprintf("loopdialer (%s): Go, %d threads each on its own OS thread, blocking socket()+connect()+close(SO_LINGER 0) in a loop, connect() timed inside the dialer, run as root in the cgroup under test", LoopDialerPackage, cfg.Workers)

	// The baselines: no firewall (a listening port and a closed one),
	// and a bare NFQUEUE on first packets. Their dialers run in a
	// cgroup of their own, with no programs.
	baseCg, err := testenv.CreateCgroup()
	if err != nil {
		return rep, err
	}
	closers = append(closers, baseCg.Delete)
	newNS := func() (*testenv.NS, error) {
		ns, err := testenv.CreateNetNS("")
		if err == nil {
			closers = append(closers, ns.Delete)
		}
		return ns, err
	}
	startDialer := func(ns *testenv.NS, cg *testenv.Cgroup, threads int) (*LoopDialer, error) {
		d, err := StartLoopDialer(ctx, ns, cg, bin, threads)
		if err == nil {
			closers = append(closers, d.Close)
		}
		return d, err
	}
	noneNS, err := newNS()
	if err != nil {
		return rep, err
	}
	noneDialer, err := startDialer(noneNS, baseCg, cfg.Workers)
	if err != nil {
		return rep, err
	}
	noneAddr, err := noneDialer.Listen()
	if err != nil {
		return rep, err
	}
	closedAddr, err := closedPort(ctx, noneNS)
	if err != nil {
		return rep, err
	}
	// Connection tracking alone, as every namespace Bastion guards has
	// it: the part of the kernel path's cost that is not Bastion's.
	ctNS, err := newNS()
	if err != nil {
		return rep, err
	}
	if err := Iptables(ctNS, "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"); err != nil {
		return rep, err
	}
	ctDialer, err := startDialer(ctNS, baseCg, cfg.Workers)
	if err != nil {
		return rep, err
	}
	ctAddr, err := ctDialer.Listen()
	if err != nil {
		return rep, err
	}
	bareNS, err := newNS()
	if err != nil {
		return rep, err
	}
	q, err := StartBareQueue(ctx, bareNS, bareBin, 9, FirstPackets)
	if err != nil {
		return rep, err
	}
	closers = append(closers, func() error { _, err := q.Close(); return err })
	bareDialer, err := startDialer(bareNS, baseCg, cfg.Workers)
	if err != nil {
		return rep, err
	}
	bareAddr, err := bareDialer.Listen()
	if err != nil {
		return rep, err
	}

	// The agents: kernel decisions on (the default) and off.
	side := func(kernel bool) (*kernelSide, error) {
		r := runner
		if !kernel {
			r.Args = append(slices.Clone(r.Args), "--kernel-decisions=false")
		}
		sess, err := StartSession(ctx, r)
		if err != nil {
			return nil, err
		}
		closers = append(closers, sess.Close)
		s := &kernelSide{sess: sess}
		if s.dialer, err = startDialer(sess.NS, sess.Agent.Cgroup, cfg.Workers); err != nil {
			return nil, err
		}
		for _, a := range []*string{&s.allow, &s.deny, &s.rule, &s.api} {
			if *a, err = s.dialer.Listen(); err != nil {
				return nil, err
			}
		}
		if kernel {
			if s.flood, err = startDialer(sess.NS, sess.Agent.Cgroup, cfg.FloodThreads); err != nil {
				return nil, err
			}
			if s.floodAllow, err = s.flood.Listen(); err != nil {
				return nil, err
			}
		}
		if err := setLoopRules(ctx, sess.Agent, bin, s); err != nil {
			return nil, err
		}
		stop, err := decider(ctx, sess.Agent, agentv1.Scope_SCOPE_CONNECTION, nil)
		if err != nil {
			return nil, err
		}
		closers = append(closers, func() error { stop(); return nil })
		if kernel {
			if s.pins, err = openKernelPins(sess.NS); err != nil {
				return nil, err
			}
			closers = append(closers, s.pins.Close)
		}
		return s, s.warmUp(kernel)
	}
	on, err := side(true)
	if err != nil {
		return rep, fmt.Errorf("agent with kernel decisions: %w", err)
	}
	off, err := side(false)
	if err != nil {
		return rep, fmt.Errorf("agent with kernel decisions off: %w", err)
	}

	cases := []*KernelCase{
		{Name: caseNone, dialer: noneDialer, addr: noneAddr},
		{Name: caseRefused, expect: "ECONNREFUSED", dialer: noneDialer, addr: closedAddr, timeout: time.Second},
		{Name: caseConntrack, dialer: ctDialer, addr: ctAddr},
		{Name: caseBare, dialer: bareDialer, addr: bareAddr},
		{Name: caseKernelAllow, dialer: on.dialer, addr: on.allow, agent: on.sess.Agent, pins: on.pins},
		{Name: caseKernelDeny, expect: "EPERM", dialer: on.dialer, addr: on.deny, timeout: time.Second, agent: on.sess.Agent, pins: on.pins},
		{Name: caseQueueRule, dialer: on.dialer, addr: on.rule, agent: on.sess.Agent, pins: on.pins},
		{Name: caseAPI, dialer: on.dialer, addr: on.api, agent: on.sess.Agent, pins: on.pins},
		{Name: caseTodayAllow, dialer: off.dialer, addr: off.allow, agent: off.sess.Agent},
		{Name: caseTodayRule, dialer: off.dialer, addr: off.rule, agent: off.sess.Agent},
		{Name: caseTodayAPI, dialer: off.dialer, addr: off.api, agent: off.sess.Agent},
	}
	byName := map[string]*KernelCase{}
	for _, c := range cases {
		c.Expect = c.expect
		if c.Expect == "" {
			c.Expect = "ok"
		}
		if c.pins != nil {
			c.Kernel = &KernelCounters{}
		}
		byName[c.Name] = c
	}
	for i := range cfg.KernelRounds {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		for j := range cases {
			if err := cases[(i+j)%len(cases)].slice(cfg.KernelSlice); err != nil {
				return rep, fmt.Errorf("kernel round %d: %w", i, err)
			}
		}
	}
	for _, c := range cases {
		c.finish()
		rep.Cases = append(rep.Cases, *c)
	}
	rep.Ratios = kernelRatios(byName)

	// The checks: the kernel decided what it must, and nothing else.
	var errs []error
	if c := byName[caseKernelAllow]; c.Conns == 0 || c.Kernel.Allowed < uint64(c.Conns) {
		errs = append(errs, fmt.Errorf("kernel path not taken: %d of %d remembered allows were decided in the kernel", c.Kernel.Allowed, c.Conns))
	}
	if c := byName[caseKernelDeny]; c.Conns == 0 || c.Unexpected > 0 || c.Kernel.Denied < uint64(c.Conns) {
		errs = append(errs, fmt.Errorf("kernel path not taken: %d of %d connect() calls to a remembered deny failed with EPERM, %d denied in the kernel", c.Conns, c.Conns+c.Unexpected, c.Kernel.Denied))
	}
	for _, n := range []string{caseQueueRule, caseAPI} {
		if c := byName[n]; c.Kernel.Sent() != 0 {
			errs = append(errs, fmt.Errorf("%s: %d connections decided in the kernel, which must not decide them", n, c.Kernel.Sent()))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return rep, err
	}

	if rep.Programs, err = profilePrograms(on); err != nil {
		fmt.Fprintf(out, "kernel programs' run time: not measured: %v\n", err)
	}
	for _, f := range []struct {
		name, addr, expect string
		stopped            bool
	}{{floodDeny, on.deny, "EPERM", false}, {floodAllow, on.floodAllow, "", false}, {floodStopped, on.floodAllow, "", true}} {
		fl, err := flood(ctx, on, on.flood, f.name, f.addr, f.expect, cfg.FloodThreads, f.stopped)
		if err != nil {
			return rep, err
		}
		rep.Floods = append(rep.Floods, fl)
	}
	return rep, nil
}

// closedPort returns an address in ns where nothing listens.
func closedPort(ctx context.Context, ns *testenv.NS) (string, error) {
	var addr string
	err := ns.Do(func() error {
		l, err := (&net.ListenConfig{}).Listen(ctx, "tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr = l.Addr().String()
		return l.Close()
	})
	return addr, err
}

// setLoopRules gives root's connections from the loop dialer bin rules:
// allow to s.allow (and s.floodAllow) and deny to s.deny, which the kernel
// can take, and allow to s.rule with a command-line regex, which it
// cannot.
func setLoopRules(ctx context.Context, a *testenv.Agent, bin string, s *kernelSide) error {
	port := func(addr string) uint32 {
		ap, _ := net.ResolveTCPAddr("tcp", addr)
		return uint32(ap.Port)
	}
	rule := func(id string, act rulesv1.Action, addr, cmdline string) *rulesv1.Rule {
		p := port(addr)
		return &rulesv1.Rule{Id: id, Enabled: true, Action: act, Exe: bin, Cmdline: cmdline,
			DstPortMin: p, DstPortMax: p, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}
	}
	rs := []*rulesv1.Rule{
		rule("bench-allow", rulesv1.Action_ACTION_ALLOW, s.allow, ""),
		rule("bench-deny", rulesv1.Action_ACTION_DENY, s.deny, ""),
		rule("bench-cmdline", rulesv1.Action_ACTION_ALLOW, s.rule, ".*loopdialer.*"),
	}
	if s.floodAllow != "" {
		rs = append(rs, rule("bench-flood-allow", rulesv1.Action_ACTION_ALLOW, s.floodAllow, ""))
	}
	_, err := a.Client.SetRules(ctx, &agentv1.SetRulesRequest{Uid: proto.Uint32(0), Rules: rs})
	if err != nil {
		return fmt.Errorf("set the loop dialer's rules: %w", err)
	}
	return nil
}

// warmUp makes the first connection to each target, which the agent
// decides in userspace (and, with kernel decisions, remembers), and waits
// until the kernel applies the remembered allow and deny.
func (s *kernelSide) warmUp(kernel bool) error {
	for _, addr := range []string{s.allow, s.rule, s.api} {
		ok := testenv.Poll(10*time.Second, func() bool {
			r, err := s.dialer.Run(addr, time.Millisecond, 2*time.Second)
			return err == nil && r.OK > 0
		})
		if !ok {
			return fmt.Errorf("warm-up: no connection to %s allowed within 10s: %s", addr, s.sess.Agent.LogTail(5))
		}
	}
	if !kernel {
		return nil
	}
	for _, t := range []struct {
		d    *LoopDialer
		addr string
	}{{s.dialer, s.allow}, {s.flood, s.floodAllow}} {
		ok := testenv.Poll(10*time.Second, func() bool {
			k0, err := s.pins.Counters()
			if err != nil {
				return false
			}
			r, err := t.d.Run(t.addr, time.Millisecond, 2*time.Second)
			k1, err2 := s.pins.Counters()
			return err == nil && err2 == nil && r.OK > 0 && k1.Allowed > k0.Allowed
		})
		if !ok {
			return fmt.Errorf("warm-up: the remembered allow of %s is not applied in the kernel within 10s: %s", t.addr, s.sess.Agent.LogTail(5))
		}
	}
	// The first denied connect() is dropped in the queue: it waits for
	// its SO_SNDTIMEO. The next ones fail at once.
	ok := testenv.Poll(10*time.Second, func() bool {
		r, err := s.dialer.Run(s.deny, time.Millisecond, 300*time.Millisecond)
		return err == nil && r.Errors["EPERM"] > 0
	})
	if !ok {
		return fmt.Errorf("warm-up: the remembered deny does not fail connect() with EPERM within 10s: %s", s.sess.Agent.LogTail(5))
	}
	return nil
}

// slice runs the case for d and adds it up.
func (c *KernelCase) slice(d time.Duration) error {
	var u0 Usage
	var k0 KernelCounters
	var err error
	if c.agent != nil {
		if u0, err = ReadUsage(c.agent.Pid()); err != nil {
			return err
		}
	}
	if c.pins != nil {
		if k0, err = c.pins.Counters(); err != nil {
			return err
		}
	}
	r, err := c.dialer.Run(c.addr, d, c.timeout)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	if c.pins != nil {
		k1, err := c.pins.Counters()
		if err != nil {
			return err
		}
		dk := k1.Sub(k0)
		c.Kernel.Allowed += dk.Allowed
		c.Kernel.Denied += dk.Denied
		c.Kernel.Rejected += dk.Rejected
		c.Kernel.Lost += dk.Lost
		c.Kernel.Packets += dk.Packets
	}
	if c.agent != nil {
		u1, err := ReadUsage(c.agent.Pid())
		if err != nil {
			return err
		}
		c.cpuTicks += u1.CPUTicks - u0.CPUTicks
	}
	n := r.OK
	if c.expect != "" {
		n = r.Errors[c.expect]
	}
	c.Conns += n
	c.Unexpected += r.Calls() - n
	rate := 0.0
	if r.Seconds > 0 {
		rate = float64(n) / r.Seconds
	}
	c.Rates = append(c.Rates, rate)
	c.p50s = append(c.p50s, r.P50US)
	c.p99s = append(c.p99s, r.P99US)
	return nil
}

func (c *KernelCase) finish() {
	c.ConnPerSec = median(c.Rates)
	c.P50US, c.P99US = median(c.p50s), median(c.p99s)
	if len(c.p50s) > 0 {
		c.P50Range = [2]float64{slices.Min(c.p50s), slices.Max(c.p50s)}
		c.P99Range = [2]float64{slices.Min(c.p99s), slices.Max(c.p99s)}
	}
	if c.agent != nil && c.Conns > 0 {
		c.AgentCPUMsPer1000 = Usage{CPUTicks: c.cpuTicks}.CPUMillis() * 1000 / float64(c.Conns)
	}
}

// ratioOf is the median and range of a's rate over b's, round by round.
func ratioOf(a, b *KernelCase) Ratio {
	var rs []float64
	for i := range min(len(a.Rates), len(b.Rates)) {
		if b.Rates[i] > 0 {
			rs = append(rs, a.Rates[i]/b.Rates[i])
		}
	}
	if len(rs) == 0 {
		return Ratio{}
	}
	return Ratio{Median: median(rs), Min: slices.Min(rs), Max: slices.Max(rs)}
}

func kernelRatios(c map[string]*KernelCase) KernelRatios {
	r := KernelRatios{
		KernelAllowVsNone:       ratioOf(c[caseKernelAllow], c[caseNone]),
		KernelAllowVsConntrack:  ratioOf(c[caseKernelAllow], c[caseConntrack]),
		ConntrackVsNone:         ratioOf(c[caseConntrack], c[caseNone]),
		KernelAllowVsQueueAllow: ratioOf(c[caseKernelAllow], c[caseTodayAllow]),
		QueueAllowVsNone:        ratioOf(c[caseTodayAllow], c[caseNone]),
		QueueRuleVsNone:         ratioOf(c[caseQueueRule], c[caseNone]),
		QueueRuleVsKernelOff:    ratioOf(c[caseQueueRule], c[caseTodayRule]),
		QueueRuleOffVsNone:      ratioOf(c[caseTodayRule], c[caseNone]),
		APIVsNone:               ratioOf(c[caseAPI], c[caseNone]),
		APIVsBare:               ratioOf(c[caseAPI], c[caseBare]),
		APIVsKernelOff:          ratioOf(c[caseAPI], c[caseTodayAPI]),
		APIOffVsNone:            ratioOf(c[caseTodayAPI], c[caseNone]),
		APIOffVsBare:            ratioOf(c[caseTodayAPI], c[caseBare]),
		BareVsNone:              ratioOf(c[caseBare], c[caseNone]),
	}
	if q := c[caseTodayAllow].AgentCPUMsPer1000; q > 0 {
		r.CPUKernelVsQueue = c[caseKernelAllow].AgentCPUMsPer1000 / q
	}
	return r
}

// profilePrograms turns BPF run-time statistics on (for as long as it
// runs: the kernel turns them off when the descriptor closes) and
// measures the connect4 and xt_allow programs' time per run over
// remembered allows, then over remembered denies.
func profilePrograms(s *kernelSide) (map[string]ProgStat, error) {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable BPF statistics: %w", err)
	}
	defer stats.Close()
	out := map[string]ProgStat{}
	for _, p := range []struct {
		name, addr string
		timeout    time.Duration
	}{{"allow", s.allow, 0}, {"deny", s.deny, time.Second}} {
		c0, x0, err := s.pins.progRuntimes()
		if err != nil {
			return nil, err
		}
		if _, err := s.dialer.Run(p.addr, kernelProfileTime, p.timeout); err != nil {
			return nil, err
		}
		c1, x1, err := s.pins.progRuntimes()
		if err != nil {
			return nil, err
		}
		out["connect4 ("+p.name+")"] = progStat(c0, c1)
		if p.name == "allow" {
			out["xt_allow ("+p.name+")"] = progStat(x0, x1)
		}
	}
	return out, nil
}

// flood makes kernel decisions as fast as threads dialers can for
// floodTime, then waits until the agent's counter stops growing, and
// accounts for every record: recorded by the agent, or counted lost.
// With stopped, the agent is stopped (SIGSTOP) during the flood: the ring
// buffer fills, and what follows must be counted lost; the rate shows
// what the agent's reading costs the dialers.
func flood(ctx context.Context, s *kernelSide, d *LoopDialer, name, addr, expect string, threads int, stopped bool) (Flood, error) {
	f := Flood{Name: name, Threads: threads}
	a := s.sess.Agent
	counter := func() (uint64, error) {
		st, err := a.Client.GetStatus(ctx, &agentv1.GetStatusRequest{})
		if err != nil {
			return 0, fmt.Errorf("agent status: %w", err)
		}
		return st.GetCounters().GetKernelDecisions(), nil
	}
	c0, err := counter()
	if err != nil {
		return f, err
	}
	k0, err := s.pins.Counters()
	if err != nil {
		return f, err
	}
	u0, err := ReadUsage(a.Pid())
	if err != nil {
		return f, err
	}
	var timeout time.Duration
	if expect != "" || stopped {
		// With the agent stopped, a connection the queue must decide
		// (a retransmitted SYN, after the listener's backlog overflowed)
		// would wait for it until the flood is over, and the flood for
		// it: up to the kernel's 127 s of SYN retries.
		timeout = time.Second
	}
	if stopped {
		if err := a.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			return f, fmt.Errorf("%s: stop the agent: %w", name, err)
		}
	}
	r, err := d.Run(addr, floodTime, timeout)
	if stopped {
		if cerr := a.Cmd.Process.Signal(syscall.SIGCONT); cerr != nil {
			return f, fmt.Errorf("%s: continue the agent: %w", name, cerr)
		}
	}
	if err != nil {
		return f, fmt.Errorf("%s: %w", name, err)
	}
	end := time.Now()
	// The agent drains the ring buffer after the flood: wait until its
	// counter has stood still for 500ms (at most 30s).
	var c1 uint64
	last, still := time.Now(), time.Now()
	for time.Since(end) < 30*time.Second && time.Since(still) < 500*time.Millisecond {
		c, err := counter()
		if err != nil {
			return f, err
		}
		if c != c1 {
			c1, still, last = c, time.Now(), time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.AgentCatchUpMS = max(0, last.Sub(end).Milliseconds())
	u1, err := ReadUsage(a.Pid())
	if err != nil {
		return f, err
	}
	k1, err := s.pins.Counters()
	if err != nil {
		return f, err
	}
	dk := k1.Sub(k0)
	f.Seconds = r.Seconds
	f.Calls = r.Calls()
	f.Sent, f.Lost, f.Recorded = dk.Sent(), dk.Lost, c1-c0
	f.Unaccounted = int64(f.Sent) - int64(f.Recorded) - int64(f.Lost)
	if r.Seconds > 0 {
		f.PerSec = float64(f.Sent) / r.Seconds
	}
	if f.Sent > 0 {
		f.AgentCPUMsPer1000 = Usage{CPUTicks: u1.CPUTicks - u0.CPUTicks}.CPUMillis() * 1000 / float64(f.Sent)
	}
	n := r.OK
	if expect != "" {
		n = r.Errors[expect]
	}
	if uint64(n) > f.Sent {
		return f, fmt.Errorf("%s: kernel path not taken: %d of %d connect() calls decided in the kernel", name, f.Sent, n)
	}
	if f.Unaccounted != 0 {
		return f, fmt.Errorf("%s: %d of %d kernel decisions neither recorded (%d) nor counted lost (%d)", name, f.Unaccounted, f.Sent, f.Recorded, f.Lost)
	}
	return f, nil
}

// printKernel writes the rounds' table and figures.
func printKernel(out io.Writer, k KernelReport) {
	if k.Skipped != "" {
		fmt.Fprintf(out, "\nkernel decisions: skipped: %s\n", k.Skipped)
		return
	}
	fmt.Fprintf(out, "\nkernel decisions: %d rounds of %dms slices; dialer: %s\n", k.Rounds, k.SliceMS, k.Dialer)
	fmt.Fprintf(out, "%-52s %10s %10s %10s %10s  %s\n", "case", "outcomes", "/s median", "p50 us", "p99 us", "agent CPU ms/1000; kernel counters")
	for _, c := range k.Cases {
		note := ""
		if c.AgentCPUMsPer1000 > 0 || c.agent != nil {
			note = fmt.Sprintf("%.1f", c.AgentCPUMsPer1000)
		}
		if c.Kernel != nil {
			note += fmt.Sprintf("; allowed %d denied %d lost %d", c.Kernel.Allowed, c.Kernel.Denied, c.Kernel.Lost)
		}
		if c.Unexpected > 0 {
			note += fmt.Sprintf("; %d other outcomes", c.Unexpected)
		}
		fmt.Fprintf(out, "%-52s %10d %10.0f %10.1f %10.1f  %s\n", c.Name+" ["+c.Expect+"]", c.Conns, c.ConnPerSec, c.P50US, c.P99US, note)
	}
	r := k.Ratios
	var b strings.Builder
	fmt.Fprintf(&b, "ratios (median of rounds, range): kernel allow / no firewall %v (target >= 0.95); / the same rule through the queue %v; "+
		"that queue allow / no firewall %v\n", r.KernelAllowVsNone, r.KernelAllowVsQueueAllow, r.QueueAllowVsNone)
	fmt.Fprintf(&b, "  kernel allow / conntrack alone %v; conntrack alone / no firewall %v\n", r.KernelAllowVsConntrack, r.ConntrackVsNone)
	fmt.Fprintf(&b, "  rule with cmdline regex through the queue / no firewall %v, / with kernel decisions off %v (off / no firewall %v)\n",
		r.QueueRuleVsNone, r.QueueRuleVsKernelOff, r.QueueRuleOffVsNone)
	fmt.Fprintf(&b, "  API answers each / no firewall %v, / bare queue %v, / with kernel decisions off %v (off: / no firewall %v, / bare %v); bare / no firewall %v\n",
		r.APIVsNone, r.APIVsBare, r.APIVsKernelOff, r.APIOffVsNone, r.APIOffVsBare, r.BareVsNone)
	fmt.Fprintf(&b, "  agent CPU per 1,000 remembered allows, kernel / queue: %.3f\n", r.CPUKernelVsQueue)
	io.WriteString(out, b.String())
	for _, n := range slices.Sorted(maps.Keys(k.Programs)) {
		p := k.Programs[n]
		fmt.Fprintf(out, "  BPF %s: %d runs, %.0f ns per run\n", n, p.Runs, p.NsPerRun)
	}
	for _, f := range k.Floods {
		fmt.Fprintf(out, "%s (%d threads, %.1fs): %d connect() calls, %.0f kernel decisions/s; records sent %d, recorded %d, lost %d, unaccounted %d; agent %.1f ms CPU per 1000, caught up %d ms after\n",
			f.Name, f.Threads, f.Seconds, f.Calls, f.PerSec, f.Sent, f.Recorded, f.Lost, f.Unaccounted, f.AgentCPUMsPer1000, f.AgentCatchUpMS)
	}
}
