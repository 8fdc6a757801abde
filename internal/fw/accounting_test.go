package fw

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestAccountingRule: the rule that turns conntrack accounting on comes
// after the chain's unconditional queue rule, where no packet walks it, and
// only when asked for.
func TestAccountingRule(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		cfg := Config{QueueNum: 7, Accounting: true}.withDefaults()
		rules := chainRules(cfg, v6)
		if got := rules[len(rules)-2:]; !slices.Equal(got, []string{"-j NFQUEUE --queue-num 7", accountingRule}) {
			t.Errorf("v6=%v: chain ends %q", v6, got)
		}
		cfg.Accounting = false
		if slices.Contains(chainRules(cfg, v6), accountingRule) {
			t.Errorf("v6=%v: the accounting rule without Accounting", v6)
		}
	}
}

// TestInstallTurnsAccountingOn: installing the chain with Accounting turns
// on nf_conntrack_acct in the namespace, with no write to /proc/sys, and
// removing it leaves the rest as it was.
func TestInstallTurnsAccountingOn(t *testing.T) {
	ns := newNetNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if got := strings.TrimSpace(nsRun(t, ns, "cat", "/proc/sys/net/netfilter/nf_conntrack_acct")); got != "0" {
		t.Skipf("nf_conntrack_acct is %s in a new namespace; nothing to show", got)
	}
	cfg := Config{NetNS: ns, QueueNum: 7, FailOpen: true, Accounting: true}
	if err := Install(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(nsRun(t, ns, "cat", "/proc/sys/net/netfilter/nf_conntrack_acct")); got != "1" {
		t.Errorf("nf_conntrack_acct %s after Install with Accounting, want 1", got)
	}
	if err := Remove(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if out := nsRun(t, ns, "iptables-save"); strings.Contains(out, "connbytes") || strings.Contains(out, DefaultChain) {
		t.Errorf("rules left after Remove:\n%s", out)
	}
}
