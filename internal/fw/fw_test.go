package fw

import (
	"context"
	"slices"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"backend nft", Config{Backend: BackendNFT}, true},
		{"bad backend", Config{Backend: "ebpf"}, false},
		{"chain too long", Config{Chain: strings.Repeat("X", 29)}, false},
		{"chain with space", Config{Chain: "A B"}, false},
		{"chain option-like", Config{Chain: "-j"}, false},
		{"builtin chain", Config{Chain: "OUTPUT"}, false},
		{"mark outside mask", Config{Marks: Marks{Mask: 0xff, Allow: 1, Deny: 2, Reject: 3, Own: 0x100}}, false},
		{"duplicate marks", Config{Marks: Marks{Mask: 0xff, Allow: 1, Deny: 1, Reject: 3, Own: 4}}, false},
		{"zero mark", Config{Marks: Marks{Mask: 0xff, Allow: 1, Deny: 2, Reject: 3}}, false},
		{"custom marks", Config{Marks: Marks{Mask: 0xf0, Allow: 0x10, Deny: 0x20, Reject: 0x30, Own: 0xf0}}, true},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestChainRules(t *testing.T) {
	cfg := Config{QueueNum: 7, FailOpen: true}.withDefaults()
	v4 := strings.Join(chainRules(cfg, false), "\n")
	for _, want := range []string{
		"-m mark --mark 0xf000000/0xf000000 -j RETURN",
		"-m mark ! --mark 0x0/0xf000000 -j CONNMARK --save-mark --nfmask 0xf000000 --ctmask 0xf000000",
		"-m connmark --mark 0x1000000/0xf000000 -j RETURN",
		"-m connmark --mark 0x2000000/0xf000000 -j DROP",
		"-p tcp -m conntrack ! --ctstate RELATED -m connmark --mark 0x3000000/0xf000000 -j REJECT --reject-with tcp-reset",
		"-j REJECT --reject-with icmp-port-unreachable",
		"-o lo -j RETURN",
		"-p tcp --syn -m mark --mark 0x0/0xf000000 -j NFQUEUE --queue-num 7 --queue-bypass",
		"-p icmp --icmp-type echo-request -m conntrack --ctstate NEW -j NFQUEUE --queue-num 7 --queue-bypass",
		// Verdicts on packets without a conntrack entry.
		"-m mark --mark 0x1000000/0xf000000 -j RETURN",
		"-p tcp -m mark --mark 0x3000000/0xf000000 -j REJECT --reject-with tcp-reset",
		"-m mark --mark 0x3000000/0xf000000 -j REJECT --reject-with icmp-port-unreachable",
		"-m mark ! --mark 0x0/0xf000000 -j DROP",
	} {
		if !strings.Contains(v4, want) {
			t.Errorf("IPv4 rules lack %q:\n%s", want, v4)
		}
	}
	cfg.InterceptLoopback, cfg.FailOpen = true, false
	v6 := strings.Join(chainRules(cfg, true), "\n")
	for _, bad := range []string{"-o lo", "--queue-bypass", "icmp-port-unreachable", "--icmp-type"} {
		if strings.Contains(v6, bad) {
			t.Errorf("IPv6 rules contain %q:\n%s", bad, v6)
		}
	}
	if !strings.Contains(v6, "-p ipv6-icmp --icmpv6-type echo-request") || !strings.Contains(v6, "icmp6-port-unreachable") {
		t.Errorf("IPv6 rules lack ICMPv6 forms:\n%s", v6)
	}

	// Every protocol is asked about: the chain ends by queueing whatever
	// the rules above let through, but for TCP (asked at its SYN) and the
	// kernel's own packets; nothing follows that would let a packet pass.
	for _, v6 := range []bool{false, true} {
		rules := chainRules(cfg, v6)
		want := []string{"-p tcp -j RETURN", "-m owner ! --uid-owner 0-4294967294 -j RETURN", "-j NFQUEUE --queue-num 7"}
		if got := rules[len(rules)-3:]; !slices.Equal(got, want) {
			t.Errorf("v6=%v: chain ends %q, want %q", v6, got, want)
		}
		// The TCP SYN path stays as short as it was: nothing new before
		// its queue rule.
		syn := slices.Index(rules, "-p tcp --syn -m mark --mark 0x0/0xf000000 -j NFQUEUE --queue-num 7")
		if syn != 4 {
			t.Errorf("v6=%v: the SYN queue rule is rule %d, want 4 (every TCP SYN walks the rules before it):\n%s", v6, syn, strings.Join(rules, "\n"))
		}
	}
}

// TestLoopbackDNSQueryRule: without loopback interception, DNS queries on
// loopback go to the DNS queue before loopback returns, always bypassing,
// and a re-injected query (verdict mark set) does not loop.
func TestLoopbackDNSQueryRule(t *testing.T) {
	cfg := Config{QueueNum: 7, DNSQueueNum: 8, FailOpen: false}.withDefaults()
	rules := chainRules(cfg, false)
	want := "-o lo -p udp --dport 53 -m conntrack --ctstate NEW -m mark --mark 0x0/0xf000000 -j NFQUEUE --queue-num 8 --queue-bypass"
	i, lo := slices.Index(rules, want), slices.Index(rules, "-o lo -j RETURN")
	if i < 0 || lo != i+1 {
		t.Errorf("want %q right before the loopback return:\n%s", want, strings.Join(rules, "\n"))
	}
	for _, c := range []Config{{QueueNum: 7, DNSQueueNum: 8, InterceptLoopback: true}, {QueueNum: 7}} {
		if got := strings.Join(chainRules(c.withDefaults(), false), "\n"); strings.Contains(got, "--dport 53") {
			t.Errorf("%+v: a loopback DNS query rule without need:\n%s", c, got)
		}
	}
}

func TestInputRules(t *testing.T) {
	cfg := Config{QueueNum: 7, DNSQueueNum: 8, FailOpen: false}.withDefaults()
	got := strings.Join(inputRules(cfg), "\n")
	want := "-m mark --mark 0x1000000/0xf000000 -j RETURN\n" +
		"-p udp --sport 53 -m conntrack --ctstate ESTABLISHED -j NFQUEUE --queue-num 8 --queue-bypass"
	if got != want {
		t.Errorf("inputRules =\n%s\nwant (always --queue-bypass, even fail-closed)\n%s", got, want)
	}
	for _, bad := range []Config{
		{QueueNum: 7, DNSQueueNum: 7},
		{InputChain: "BASTION-OUT"},
		{InputChain: "INPUT"},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted", bad)
		}
	}
}

func TestInspect(t *testing.T) {
	saved := `# Generated
*nat
:OUTPUT ACCEPT [0:0]
-A OUTPUT -j BASTION-OUT
COMMIT
*filter
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [3:180]
:BASTION-OUT - [0:0]
-A OUTPUT -j BASTION-OUT
-A OUTPUT -p tcp -j BASTION-OUT
-A OUTPUT -j BASTION-OUT
-A BASTION-OUT -j RETURN
COMMIT
`
	if got := inspect(saved, "BASTION-OUT", "BASTION-IN"); got != (state{chain: true, jumps: 2}) {
		t.Errorf("inspect = %+v, want chain and 2 jumps", got)
	}
	mangle := saved + "*mangle\n:INPUT ACCEPT [0:0]\n:BASTION-IN - [0:0]\n-A INPUT -p udp -m udp --sport 53 -j BASTION-IN\n" +
		"-A INPUT -j BASTION-IN\n-A INPUT -p udp -m udp --sport 53 -j BASTION-IN\n-A INPUT -p udp -j BASTION-IN\nCOMMIT\n" +
		"*filter\n-A INPUT -j BASTION-IN\nCOMMIT\n"
	if got := inspect(mangle, "BASTION-OUT", "BASTION-IN"); got != (state{chain: true, jumps: 2, inChain: true, inJumps: 2, oldInJumps: 1}) {
		t.Errorf("inspect with the DNS chain = %+v, want it, 2 mangle INPUT jumps and 1 old-style one", got)
	}
	if got := inspect(saved, "OTHER", "OTHER-IN"); got != (state{}) {
		t.Errorf("inspect(OTHER) = %+v, want nothing", got)
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"drops comments and counters", "# Generated on Mon\n*filter\n:INPUT ACCEPT [5:300]\n:OUTPUT DROP [1:2]\nCOMMIT\n# Completed\n",
			"*filter\n:INPUT ACCEPT\n:OUTPUT DROP\nCOMMIT\n"},
		{"drops trivial table", "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n", ""},
		{"keeps user chain", "*filter\n:OUTPUT ACCEPT [0:0]\n:X - [0:0]\nCOMMIT\n", "*filter\n:OUTPUT ACCEPT\n:X -\nCOMMIT\n"},
		{"keeps rules, strips -c counters", "*filter\n:OUTPUT ACCEPT [0:0]\n[3:4] -A OUTPUT -j ACCEPT\nCOMMIT\n", "*filter\n:OUTPUT ACCEPT\n-A OUTPUT -j ACCEPT\nCOMMIT\n"},
	}
	for _, tt := range tests {
		if got := normalize(tt.in); got != tt.want {
			t.Errorf("%s: normalize =\n%q\nwant\n%q", tt.name, got, tt.want)
		}
	}
}

func TestInstallRemove(t *testing.T) {
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		t.Run(string(backend), func(t *testing.T) {
			ns := newNetNS(t)
			ctx := context.Background()
			// An unrelated rule of the user's, in both families.
			nsRun(t, ns, "iptables-"+string(backend), "-w", "-A", "OUTPUT", "-p", "tcp", "--dport", "9", "-j", "ACCEPT")
			nsRun(t, ns, "ip6tables-"+string(backend), "-w", "-A", "OUTPUT", "-p", "tcp", "--dport", "9", "-j", "ACCEPT")
			cfg := Config{Backend: backend, NetNS: ns, QueueNum: 3, DNSQueueNum: 4, InterceptLoopback: true}

			before, err := Snapshot(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(before, "--dport 9 -j ACCEPT") {
				t.Fatalf("snapshot lacks the user's rule:\n%s", before)
			}

			for i := range 2 {
				if err := Install(ctx, cfg); err != nil {
					t.Fatalf("Install #%d: %v", i+1, err)
				}
			}
			installed, err := Snapshot(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("installed:\n%s", installed)
			checkInstalled(t, installed)

			// A crashed agent: an extra jump rule at the end of OUTPUT and
			// mangle INPUT, the unconditional INPUT jump of older agents,
			// and a stray rule in each chain. Install must repair all of
			// it.
			for _, tool := range []string{"iptables-", "ip6tables-"} {
				nsRun(t, ns, tool+string(backend), "-w", "-A", "OUTPUT", "-j", DefaultChain)
				nsRun(t, ns, tool+string(backend), "-w", "-A", DefaultChain, "-p", "udp", "--dport", "4242", "-j", "ACCEPT")
				nsRun(t, ns, tool+string(backend), "-w", "-t", "mangle", "-A", "INPUT", "-p", "udp", "--sport", "53", "-j", DefaultInputChain)
				nsRun(t, ns, tool+string(backend), "-w", "-t", "mangle", "-A", "INPUT", "-j", DefaultInputChain)
				nsRun(t, ns, tool+string(backend), "-w", "-t", "mangle", "-A", DefaultInputChain, "-p", "udp", "--dport", "4242", "-j", "ACCEPT")
			}
			if err := Install(ctx, cfg); err != nil {
				t.Fatalf("Install after crash: %v", err)
			}
			repaired, err := Snapshot(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			checkInstalled(t, repaired)
			if repaired != installed {
				t.Errorf("repair differs from a clean install:\n%s\nwant\n%s", repaired, installed)
			}

			// Without DNS snooping, Install takes the DNS chain away.
			noDNS := cfg
			noDNS.DNSQueueNum = 0
			if err := Install(ctx, noDNS); err != nil {
				t.Fatalf("Install without DNS: %v", err)
			}
			plain, err := Snapshot(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(plain, DefaultInputChain) || !strings.Contains(plain, "-A OUTPUT -j "+DefaultChain) {
				t.Errorf("Install without DNS left the DNS chain or lost the output chain:\n%s", plain)
			}
			if err := Install(ctx, cfg); err != nil {
				t.Fatal(err)
			}

			for i := range 2 {
				if err := Remove(ctx, cfg); err != nil {
					t.Fatalf("Remove #%d: %v", i+1, err)
				}
			}
			after, err := Snapshot(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if after != before {
				t.Errorf("Remove did not restore the ruleset:\n%s\nwant\n%s", after, before)
			}
		})
	}
}

func checkInstalled(t *testing.T, snap string) {
	t.Helper()
	for _, fam := range strings.SplitAfter(snap, "COMMIT\n") {
		if !strings.Contains(fam, "*filter") {
			continue
		}
		if n := strings.Count(fam, "-A OUTPUT -j "+DefaultChain+"\n"); n != 1 {
			t.Errorf("%d jump rules, want 1:\n%s", n, fam)
		}
		// The jump must be the first OUTPUT rule.
		if i, j := strings.Index(fam, "-A OUTPUT -j "+DefaultChain), strings.Index(fam, "-A OUTPUT -p tcp"); i < 0 || j < i {
			t.Errorf("jump rule is not first in OUTPUT:\n%s", fam)
		}
		if n := strings.Count(fam, "-A "+DefaultChain+" "); n != 18 {
			t.Errorf("%d rules in %s, want 18:\n%s", n, DefaultChain, fam)
		}
		// Everything not asked about above is asked at the end, except
		// the kernel's own packets; the kernel read the rules back as
		// written.
		tail := "-A " + DefaultChain + " -p tcp -j RETURN\n" +
			"-A " + DefaultChain + " -m owner ! --uid-owner 0-4294967294 -j RETURN\n" +
			"-A " + DefaultChain + " -j NFQUEUE --queue-num 3\n"
		if !strings.HasSuffix(strings.Split(fam, "COMMIT")[0], tail) {
			t.Errorf("%s does not end by queueing every other packet:\n%s", DefaultChain, fam)
		}
		// The fast path for decided connections must come first, and
		// must not let a TCP SYN through.
		fast := "-A " + DefaultChain + " -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n" +
			"-A " + DefaultChain + " ! -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n"
		if i, j := strings.Index(fam, fast), strings.Index(fam, "-A "+DefaultChain+" "); i < 0 || i != j {
			t.Errorf("%s does not start with the established fast path:\n%s", DefaultChain, fam)
		}
		if strings.Contains(fam, "4242") {
			t.Errorf("stray rule survived Install:\n%s", fam)
		}
	}
	if strings.Count(snap, "NFQUEUE --queue-num 3") != 8 {
		t.Errorf("want 4 NFQUEUE rules per family:\n%s", snap)
	}
	// The DNS chain: first in mangle INPUT, exactly two rules, always
	// bypassing the queue.
	for _, fam := range strings.SplitAfter(snap, "COMMIT\n") {
		if !strings.Contains(fam, "*mangle") {
			continue
		}
		if n := strings.Count(fam, "-A INPUT "+inputJump(DefaultInputChain)+"\n"); n != 1 || strings.Contains(fam, "-A INPUT -j "+DefaultInputChain) {
			t.Errorf("%d mangle INPUT jumps for DNS answers, want 1 and no other:\n%s", n, fam)
		}
		if i, j := strings.Index(fam, "-A INPUT "+inputJump(DefaultInputChain)), strings.Index(fam, "-A INPUT "); i != j {
			t.Errorf("DNS jump is not first in mangle INPUT:\n%s", fam)
		}
		if n := strings.Count(fam, "-A "+DefaultInputChain+" "); n != 2 || strings.Contains(fam, "4242") {
			t.Errorf("%d rules in %s, want 2 and no stray one:\n%s", n, DefaultInputChain, fam)
		}
	}
	if n := strings.Count(snap, "-A "+DefaultInputChain+" -p udp -m udp --sport 53 -m conntrack --ctstate ESTABLISHED -j NFQUEUE --queue-num 4 --queue-bypass\n"); n != 2 {
		t.Errorf("%d DNS queue rules, want one per family:\n%s", n, snap)
	}
	for _, tbl := range strings.SplitAfter(snap, "COMMIT\n") {
		if strings.Contains(tbl, "*filter") && strings.Contains(tbl, DefaultInputChain) {
			t.Errorf("DNS chain referenced outside mangle:\n%s", tbl)
		}
	}
}

func TestDetectBackend(t *testing.T) {
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		t.Run("rules in "+string(backend), func(t *testing.T) {
			ns := newNetNS(t)
			nsRun(t, ns, "iptables-"+string(backend), "-w", "-A", "OUTPUT", "-p", "tcp", "--dport", "9", "-j", "ACCEPT")
			got, err := DetectBackend(context.Background(), ns)
			if err != nil {
				t.Fatal(err)
			}
			if got != backend {
				t.Errorf("DetectBackend = %q, want %q", got, backend)
			}
		})
	}
	t.Run("empty namespace follows the system", func(t *testing.T) {
		ns := newNetNS(t)
		got, err := DetectBackend(context.Background(), ns)
		if err != nil {
			t.Fatal(err)
		}
		if want := systemBackend(); got != want {
			t.Errorf("DetectBackend = %q, want system's %q", got, want)
		}
	})
}

func TestBadNamespace(t *testing.T) {
	err := Install(context.Background(), Config{Backend: BackendNFT, NetNS: "bastion-t-does-not-exist"})
	if err == nil || !strings.Contains(err.Error(), "bastion-t-does-not-exist") {
		t.Errorf("Install in a missing namespace: %v", err)
	}
}
