package fw

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bastion-fw/bastion/internal/netns"
)

// Backend is the iptables implementation the rules are written with.
type Backend string

// The two backends Debian's iptables package installs.
const (
	BackendNFT    Backend = "nft"    // iptables-nft, nf_tables with xt compat
	BackendLegacy Backend = "legacy" // iptables-legacy, x_tables
)

// DefaultChain is the name of Bastion's chain.
const DefaultChain = "BASTION-OUT"

// DefaultInputChain is the name of Bastion's INPUT chain, which queues DNS
// answers for the agent to read names from.
const DefaultInputChain = "BASTION-IN"

// Marks are the packet and connection mark values Bastion uses; all of them
// live within Mask, so other tools' marks outside it are left alone.
type Marks struct {
	Mask   uint32
	Allow  uint32
	Deny   uint32
	Reject uint32
	// Own marks the agent's own sockets (SO_MARK), which bypass the queue.
	Own uint32
}

// DefaultMarks returns the marks used when Config.Marks is zero.
func DefaultMarks() Marks {
	return Marks{Mask: 0x0F000000, Allow: 0x01000000, Deny: 0x02000000, Reject: 0x03000000, Own: 0x0F000000}
}

// Validate checks that the marks are non-zero, distinct and inside Mask.
func (m Marks) Validate() error {
	if m.Mask == 0 {
		return errors.New("fw: mark mask is zero")
	}
	vals := []struct {
		name string
		v    uint32
	}{{"allow", m.Allow}, {"deny", m.Deny}, {"reject", m.Reject}, {"own", m.Own}}
	for i, a := range vals {
		if a.v == 0 || a.v&^m.Mask != 0 {
			return fmt.Errorf("fw: %s mark %#x must be non-zero and inside mask %#x", a.name, a.v, m.Mask)
		}
		for _, b := range vals[:i] {
			if a.v == b.v {
				return fmt.Errorf("fw: %s and %s marks are both %#x", b.name, a.name, a.v)
			}
		}
	}
	return nil
}

// Config says where and how to install the rules.
type Config struct {
	// Backend selects iptables-nft or iptables-legacy; "" detects it with
	// DetectBackend.
	Backend Backend
	// NetNS is a namespace name under /run/netns or a path; "" is the
	// caller's namespace.
	NetNS string
	// QueueNum is the NFQUEUE number the agent listens on.
	QueueNum uint16
	// FailOpen adds --queue-bypass: while no program listens on the queue,
	// packets pass instead of being dropped.
	FailOpen bool
	// InterceptLoopback queues loopback traffic too.
	InterceptLoopback bool
	// Marks; the zero value means DefaultMarks.
	Marks Marks
	// Chain is the name of Bastion's chain; "" means DefaultChain.
	Chain string
	// DNSQueueNum, when not 0, is the NFQUEUE that UDP DNS answers
	// (source port 53, loopback included) are copied to from INPUT, always
	// with --queue-bypass: DNS must work while the agent is away.
	DNSQueueNum uint16
	// InputChain is the name of Bastion's INPUT chain; "" means
	// DefaultInputChain.
	InputChain string
	// KernelAllowPin, when set, is the path of a pinned socket-filter
	// program (internal/kdecide's xt_allow) that matches the first packets
	// of connections a decision remembered in the kernel allows: they
	// return before the queue rules (`-m bpf --object-pinned`).
	KernelAllowPin string
	// Accounting adds a rule that is never reached (after the chain's
	// last, unconditional queue rule) and matches on conntrack's byte
	// counters (xt_connbytes): loading it makes the kernel turn on
	// conntrack accounting (nf_conntrack_acct) in the namespace, which
	// the agent's traffic accounting reads, even where /proc/sys is
	// read-only (systemd's ProtectKernelTunables=).
	Accounting bool
	// Log receives notices (such as IPv6 being skipped); nil discards.
	Log *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Marks == (Marks{}) {
		c.Marks = DefaultMarks()
	}
	if c.Chain == "" {
		c.Chain = DefaultChain
	}
	if c.InputChain == "" {
		c.InputChain = DefaultInputChain
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate checks the configuration after defaults are applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch c.Backend {
	case "", BackendNFT, BackendLegacy:
	default:
		return fmt.Errorf("fw: unknown backend %q (want %q or %q)", c.Backend, BackendNFT, BackendLegacy)
	}
	if err := validChain(c.Chain); err != nil {
		return err
	}
	if err := validChain(c.InputChain); err != nil {
		return err
	}
	if p := c.KernelAllowPin; p != "" && (!strings.HasPrefix(p, "/") || strings.ContainsAny(p, " \t\n\"'\\")) {
		return fmt.Errorf("fw: kernel allow pin %q must be an absolute path without spaces or quotes", p)
	}
	if c.InputChain == c.Chain {
		return fmt.Errorf("fw: output and input chains are both %q", c.Chain)
	}
	if c.DNSQueueNum != 0 && c.DNSQueueNum == c.QueueNum {
		return fmt.Errorf("fw: DNS queue and connection queue are both %d", c.QueueNum)
	}
	return c.Marks.Validate()
}

func validChain(name string) error {
	// xtables chain names are at most 28 characters; keep to a safe
	// alphabet so a name never reads as an option or breaks a restore line.
	if len(name) == 0 || len(name) > 28 || name[0] == '-' {
		return fmt.Errorf("fw: invalid chain name %q", name)
	}
	for _, r := range name {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("fw: invalid chain name %q", name)
		}
	}
	switch name {
	case "INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING":
		return fmt.Errorf("fw: chain name %q is a built-in chain", name)
	}
	return nil
}

// family is IPv4 or IPv6.
type family struct {
	v6   bool
	name string // "iptables" or "ip6tables"
}

var (
	familyV4 = family{v6: false, name: "iptables"}
	familyV6 = family{v6: true, name: "ip6tables"}
)

// runner runs the iptables tools of one backend in one namespace.
type runner struct {
	backend Backend
	nsPath  string // "" = current namespace
}

func newRunner(cfg Config) (runner, error) {
	r := runner{backend: cfg.Backend}
	if cfg.NetNS != "" {
		r.nsPath = cfg.NetNS
		if !strings.Contains(cfg.NetNS, "/") {
			r.nsPath = filepath.Join(netns.RunDir, cfg.NetNS)
		}
		if _, err := os.Stat(r.nsPath); err != nil {
			return r, fmt.Errorf("fw: network namespace %q: %w", cfg.NetNS, err)
		}
	}
	return r, nil
}

// tool returns e.g. "ip6tables-nft-restore" for (v6, "-restore").
func (r runner) tool(f family, suffix string) string {
	return f.name + "-" + string(r.backend) + suffix
}

func (r runner) run(ctx context.Context, stdin string, bin string, args ...string) (string, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("fw: %s not found (install Debian package iptables): %w", bin, err)
	}
	var cmd *exec.Cmd
	if r.nsPath != "" {
		nsenter, err := exec.LookPath("nsenter")
		if err != nil {
			return "", fmt.Errorf("fw: nsenter not found (install util-linux): %w", err)
		}
		cmd = exec.CommandContext(ctx, nsenter, append([]string{"--net=" + r.nsPath, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			return stdout.String(), fmt.Errorf("fw: %s %s: %w: %s", bin, strings.Join(args, " "), err, msg)
		}
		return stdout.String(), fmt.Errorf("fw: %s %s: %w", bin, strings.Join(args, " "), err)
	}
	return stdout.String(), nil
}

func (r runner) save(ctx context.Context, f family) (string, error) {
	return r.run(ctx, "", r.tool(f, "-save"))
}

func (r runner) restore(ctx context.Context, f family, script string) error {
	_, err := r.run(ctx, script, r.tool(f, "-restore"), "-w", "--noflush")
	return err
}

// kernelHasIPv6 reports whether the kernel supports IPv6 at all. IPv6 being
// disabled by sysctl in a namespace does not count: ip6tables still works
// there and the rules are installed.
func kernelHasIPv6() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}

func families(cfg Config, op string) []family {
	if kernelHasIPv6() {
		return []family{familyV4, familyV6}
	}
	cfg.Log.Warn("kernel has no IPv6 support; skipping ip6tables", "op", op)
	return []family{familyV4}
}

func prepare(ctx context.Context, cfg Config) (Config, runner, error) {
	if err := cfg.Validate(); err != nil {
		return cfg, runner{}, err
	}
	cfg = cfg.withDefaults()
	if cfg.Backend == "" {
		b, err := DetectBackend(ctx, cfg.NetNS)
		if err != nil {
			return cfg, runner{}, err
		}
		cfg.Backend = b
		cfg.Log.Info("detected iptables backend", "backend", b)
	}
	r, err := newRunner(cfg)
	return cfg, r, err
}

// Install installs Bastion's chain and the jump to it in both families, and,
// when DNSQueueNum is set, the INPUT chain that queues DNS answers (without
// it, a leftover INPUT chain is removed). It is idempotent and repairs
// leftovers of a previous run (see package doc).
func Install(ctx context.Context, cfg Config) error {
	cfg, r, err := prepare(ctx, cfg)
	if err != nil {
		return err
	}
	for _, f := range families(cfg, "install") {
		saved, err := r.save(ctx, f)
		if err != nil {
			return err
		}
		st := inspect(saved, cfg.Chain, cfg.InputChain)
		var b strings.Builder
		b.WriteString("*filter\n")
		// In --noflush mode declaring a chain creates it, or flushes it if
		// it exists: either way it is rebuilt from scratch below.
		fmt.Fprintf(&b, ":%s - [0:0]\n", cfg.Chain)
		for _, rule := range chainRules(cfg, f.v6) {
			fmt.Fprintf(&b, "-A %s %s\n", cfg.Chain, rule)
		}
		for range st.jumps {
			fmt.Fprintf(&b, "-D OUTPUT -j %s\n", cfg.Chain)
		}
		fmt.Fprintf(&b, "-I OUTPUT 1 -j %s\n", cfg.Chain)
		b.WriteString("COMMIT\n")
		// The DNS chain lives in the mangle table, which INPUT walks
		// before filter: with --queue-bypass and no agent, a packet moves
		// on to the next table, so the administrator's filter rules still
		// see every answer.
		if cfg.DNSQueueNum != 0 || st.inChain || st.inJumps+st.oldInJumps > 0 {
			b.WriteString("*mangle\n")
			deleteInputJumps(&b, st, cfg.InputChain)
			if cfg.DNSQueueNum != 0 {
				fmt.Fprintf(&b, ":%s - [0:0]\n", cfg.InputChain)
				for _, rule := range inputRules(cfg) {
					fmt.Fprintf(&b, "-A %s %s\n", cfg.InputChain, rule)
				}
				fmt.Fprintf(&b, "-I INPUT 1 %s\n", inputJump(cfg.InputChain))
			} else if st.inChain {
				fmt.Fprintf(&b, "-F %s\n-X %s\n", cfg.InputChain, cfg.InputChain)
			}
			b.WriteString("COMMIT\n")
		}
		if err := r.restore(ctx, f, b.String()); err != nil {
			return fmt.Errorf("fw: install %s rules: %w", f.name, err)
		}
	}
	return nil
}

// Remove deletes every jump to Bastion's chains (filter OUTPUT, mangle INPUT)
// and the chains themselves, in both families, and nothing else. Removing
// what is not there is not an error.
func Remove(ctx context.Context, cfg Config) error {
	cfg, r, err := prepare(ctx, cfg)
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range families(cfg, "remove") {
		saved, err := r.save(ctx, f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st := inspect(saved, cfg.Chain, cfg.InputChain)
		if st == (state{}) {
			continue
		}
		var b strings.Builder
		b.WriteString("*filter\n")
		for range st.jumps {
			fmt.Fprintf(&b, "-D OUTPUT -j %s\n", cfg.Chain)
		}
		if st.chain {
			fmt.Fprintf(&b, "-F %s\n-X %s\n", cfg.Chain, cfg.Chain)
		}
		b.WriteString("COMMIT\n")
		if st.inJumps+st.oldInJumps > 0 || st.inChain {
			b.WriteString("*mangle\n")
			deleteInputJumps(&b, st, cfg.InputChain)
			if st.inChain {
				fmt.Fprintf(&b, "-F %s\n-X %s\n", cfg.InputChain, cfg.InputChain)
			}
			b.WriteString("COMMIT\n")
		}
		if err := r.restore(ctx, f, b.String()); err != nil {
			errs = append(errs, fmt.Errorf("fw: remove %s rules: %w", f.name, err))
		}
	}
	return errors.Join(errs...)
}

// state is what a saved filter table says about Bastion's rules.
type state struct {
	chain   bool // the chain exists
	jumps   int  // number of "-A OUTPUT -j CHAIN" rules
	inChain bool // the DNS chain exists in the mangle table
	inJumps int  // number of mangle "-A INPUT " + inputJump(INPUTCHAIN) rules
	// oldInJumps counts mangle "-A INPUT -j INPUTCHAIN" rules: the jump
	// for every packet that agents before the UDP-only jump installed,
	// left behind by one that crashed.
	oldInJumps int
}

// inputJump is the mangle INPUT rule (without "-A INPUT") that sends DNS
// answers to chain, as iptables-save prints it. Only UDP from port 53 takes
// the jump; every other packet the host receives (on loopback, also every
// packet it sends there) passes with one failed match.
func inputJump(chain string) string { return "-p udp -m udp --sport 53 -j " + chain }

// deleteInputJumps writes the deletion of every jump to the DNS chain that
// st found.
func deleteInputJumps(b *strings.Builder, st state, chain string) {
	for range st.inJumps {
		fmt.Fprintf(b, "-D INPUT %s\n", inputJump(chain))
	}
	for range st.oldInJumps {
		fmt.Fprintf(b, "-D INPUT -j %s\n", chain)
	}
}

func inspect(saved, chain, inputChain string) state {
	var st state
	table := ""
	for line := range strings.Lines(saved) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "*"):
			table = line
		case table == "*filter" && strings.HasPrefix(line, ":"+chain+" "):
			st.chain = true
		case table == "*filter" && line == "-A OUTPUT -j "+chain:
			st.jumps++
		case table != "*mangle":
		case strings.HasPrefix(line, ":"+inputChain+" "):
			st.inChain = true
		case line == "-A INPUT "+inputJump(inputChain):
			st.inJumps++
		case line == "-A INPUT -j "+inputChain:
			st.oldInJumps++
		}
	}
	return st
}

// chainRules returns the rules of Bastion's chain, without "-A CHAIN".
func chainRules(cfg Config, v6 bool) []string {
	m := cfg.Marks
	mark := func(v uint32) string { return fmt.Sprintf("%#x/%#x", v, m.Mask) }
	unreach, icmpEcho := "icmp-port-unreachable", "-p icmp --icmp-type echo-request"
	if v6 {
		unreach, icmpEcho = "icmp6-port-unreachable", "-p ipv6-icmp --icmpv6-type echo-request"
	}
	queue := fmt.Sprintf("-j NFQUEUE --queue-num %d", cfg.QueueNum)
	if cfg.FailOpen {
		queue += " --queue-bypass"
	}
	rules := []string{
		// Fast path for almost every packet: a connection that got past
		// its first packet was allowed (a denied or rejected first packet
		// is dropped before conntrack confirms the connection), and
		// RELATED packets (ICMP errors, the resets REJECT sends) belong to
		// a connection already decided. Only first packets, verdicts
		// re-injected with NF_REPEAT and not-yet-answered UDP flows go on.
		// A TCP SYN is never waved through here: conntrack maps a new
		// connection onto an old entry of the same 4-tuple that missed
		// its end (an out-of-window reset leaves it ESTABLISHED), and the
		// new connection, maybe another program's, would inherit the old
		// one's verdict.
		"-p tcp ! --syn -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
		"! -p tcp -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
		// SECURITY: only CAP_NET_ADMIN/CAP_NET_RAW processes can set SO_MARK.
		"-m mark --mark " + mark(m.Own) + " -j RETURN",
	}
	if !cfg.InterceptLoopback {
		if cfg.DNSQueueNum != 0 {
			// A program's query to a local stub resolver (127.0.0.53) is
			// not asked about, but the agent must see who sent it to
			// bind the stub's answer to that user. Every query on a
			// loopback flow before its first answer is read and
			// re-injected at once with the Allow mark, which skips this
			// rule; always --queue-bypass.
			rules = append(rules, fmt.Sprintf("-o lo -p udp --dport 53 -m conntrack --ctstate NEW -m mark --mark %s -j NFQUEUE --queue-num %d --queue-bypass",
				mark(0), cfg.DNSQueueNum))
		}
		rules = append(rules, "-o lo -j RETURN")
	}
	if cfg.KernelAllowPin != "" {
		// A connection a decision remembered in the kernel allows
		// (its socket's allow names this packet's destination), before
		// anything is queued. Denials never get here: the kernel fails
		// their connect() or sendmsg().
		rules = append(rules, "-m mark --mark "+mark(0)+" -m bpf --object-pinned "+cfg.KernelAllowPin+" -j RETURN")
	}
	rules = append(rules,
		// A re-injected verdict: saved on the connection, acted on below.
		fmt.Sprintf("-m mark ! --mark %s -j CONNMARK --save-mark --nfmask %#x --ctmask %#x", mark(0), m.Mask, m.Mask),
		// Every first SYN is asked, whatever conntrack remembers of its
		// tuple (the connmark of an earlier connection, for one). Its
		// retransmissions come here too; the agent answers them from the
		// verdict of the first.
		"-p tcp --syn -m mark --mark "+mark(0)+" "+queue,
		"-m connmark --mark "+mark(m.Allow)+" -j RETURN",
		"-m connmark --mark "+mark(m.Deny)+" -j DROP",
		// The TCP reset or ICMP error that REJECT sends is attached to the
		// rejected connection (ctstate RELATED) and so carries its connmark:
		// without the RELATED exception it would be rejected, that is
		// dropped, in turn and the application would time out instead of
		// seeing ECONNREFUSED.
		"-p tcp -m conntrack ! --ctstate RELATED -m connmark --mark "+mark(m.Reject)+" -j REJECT --reject-with tcp-reset",
		"-m conntrack ! --ctstate RELATED -m connmark --mark "+mark(m.Reject)+" -j REJECT --reject-with "+unreach,
		"-p udp -m conntrack --ctstate NEW "+queue,
		icmpEcho+" -m conntrack --ctstate NEW "+queue,
		// Below: every other protocol (UDP-Lite, SCTP, GRE, any number a
		// raw socket names), every ICMP type but echo, and packets that
		// conntrack calls INVALID or UNTRACKED (an unsolicited ICMP error
		// from a raw socket, say), which have no connection to carry a
		// verdict: each of them is queued, and comes back with its verdict
		// on the packet mark alone.
		"-m mark --mark "+mark(m.Allow)+" -j RETURN",
		"-p tcp -m mark --mark "+mark(m.Reject)+" -j REJECT --reject-with tcp-reset",
		"-m mark --mark "+mark(m.Reject)+" -j REJECT --reject-with "+unreach,
		"-m mark ! --mark "+mark(0)+" -j DROP",
		// TCP is asked at its SYN, above. What gets here is the TCP
		// stack's own late or out-of-window segments of decided
		// connections (INVALID) and connections conntrack picked up
		// mid-stream; raw sockets (CAP_NET_RAW) can send such segments
		// too: see docs/security.md.
		"-p tcp -j RETURN",
		// SECURITY: the kernel's own packets pass: those with no socket
		// (IGMP reports) or a kernel socket, which has no file (IPv6
		// neighbour discovery and MLD, ICMP errors about packets that
		// conntrack does not track, tunnel encapsulation). xt_owner's
		// --uid-owner matches only packets whose socket has a file, and
		// every socket a process can send from has one, so no packet a
		// process sends itself passes here.
		"-m owner ! --uid-owner "+anyUID+" -j RETURN",
		queue,
	)
	if cfg.Accounting {
		// After the unconditional queue rule: no packet walks it.
		rules = append(rules, accountingRule)
	}
	return rules
}

// accountingRule makes the kernel count every connection's bytes when it
// is loaded (xt_connbytes forces nf_conntrack_acct on); it has no target.
const accountingRule = "-m connbytes --connbytes 0 --connbytes-dir both --connbytes-mode bytes"

// anyUID is an xt_owner UID range that every socket with a file matches.
const anyUID = "0-4294967294"

// inputRules returns the rules of Bastion's INPUT chain, without "-A CHAIN".
func inputRules(cfg Config) []string {
	m := cfg.Marks
	return []string{
		// The agent re-injects each answer it has read with NF_REPEAT and
		// the Allow mark: the answer walks INPUT again, returns here and
		// meets the administrator's own INPUT rules, which NF_ACCEPT would
		// skip.
		fmt.Sprintf("-m mark --mark %#x/%#x -j RETURN", m.Allow, m.Mask),
		// SECURITY: always --queue-bypass, whatever FailOpen says: name
		// learning is best effort and must never stop DNS. Only answers
		// to queries this host sent (ESTABLISHED) are read: an unsolicited
		// packet from port 53 must at least hit a query's port pair.
		fmt.Sprintf("-p udp --sport 53 -m conntrack --ctstate ESTABLISHED -j NFQUEUE --queue-num %d --queue-bypass", cfg.DNSQueueNum),
	}
}
