package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// Issue 11: what one user's rules can cost the shared agent. B (UID 1001)
// sets hostile rules through the agent's API as B; A (UID 1000) has a rule
// that allows its dialer and connects.

// decisionBound is the latency A's connections must stay under (p99) while
// B attacks. A decision takes well under a millisecond; the rest is
// margin for the shared machine.
const decisionBound = 5 * time.Millisecond

// maxNoise caps the margin latencyVerdict allows for the machine's load.
const maxNoise = 25 * time.Millisecond

// agentRSSKiB reads the agent's resident set size.
func agentRSSKiB(t *testing.T, a *Agent) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.Cmd.Process.Pid))
	if err != nil {
		t.Fatalf("agent status: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("no VmRSS in the agent's status")
	return 0
}

// setRulesAs calls SetRules as uid, through grpcurl run as that user, and
// returns grpcurl's output and exit code.
func setRulesAs(t *testing.T, ctx context.Context, ns *testenv.NS, a *Agent, uid uint32, rs []map[string]any) (string, int) {
	t.Helper()
	req, err := json.Marshal(map[string]any{"rules": rs})
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(ctx, uid, uid, "grpcurl", "-plaintext", "-unix", "-max-time", "120", "-d", "@", a.Socket,
		"bastion.agent.v1.AgentService/SetRules")
	cmd.Stdin = strings.NewReader(string(req))
	return run(t, cmd)
}

func cmdlineRule(id, cmdline string) map[string]any {
	return map[string]any{"id": id, "enabled": true, "action": "ACTION_ALLOW", "lifetime": "LIFETIME_FOREVER", "cmdline": cmdline}
}

// allowDialerFor makes a rule of root's that allows uid's dialer to port.
func allowDialerFor(t *testing.T, ctx context.Context, a *Agent, uid uint32, port int) {
	t.Helper()
	exe, err := filepath.EvalSymlinks(builtBins.dialer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client.SetRules(ctx, &agentv1.SetRulesRequest{Uid: proto.Uint32(uid), Rules: []*rulesv1.Rule{{
		Id: "a-allows-dialer", Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: exe,
		Protocol: rulesv1.Protocol_PROTOCOL_TCP, DstPortMin: uint32(port), DstPortMax: uint32(port),
		Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER,
	}}}); err != nil {
		t.Fatalf("A's allow rule: %v", err)
	}
}

// connectLatencies runs A's dialer to port one connection after the other,
// n times or until budget is spent, and returns each connect's duration.
func connectLatencies(t *testing.T, ctx context.Context, ns *testenv.NS, port, n int, budget time.Duration) []time.Duration {
	t.Helper()
	var out []time.Duration
	begin := time.Now()
	for i := 0; i < n && time.Since(begin) < budget; i++ {
		p := start(t, dialer(ctx, ns, uidA, "-net", "tcp4", "-addr", fmt.Sprintf("127.0.0.1:%d", port), "-timeout", "30s"))
		r := p.DialResult(t, time.Minute)
		if !r.OK {
			t.Fatalf("A's connection %d, which A's rule allows: %+v", i, r)
		}
		out = append(out, time.Duration(r.ElapsedUS)*time.Microsecond)
	}
	return out
}

// quantile returns the p quantile of lat.
func quantile(lat []time.Duration, p float64) time.Duration {
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// latencyVerdict summarises A's latencies and counts the connections slower
// than decisionBound plus a generous margin for the machine's own noise
// (noise: the p99 of A's latency measured just before, without the attack;
// 6-40 ms on the shared development machine at a load average of ~18,
// counted up to maxNoise), beyond the 1% that a p99 target leaves. Before
// the fix, A's connections waited seconds.
func latencyVerdict(t *testing.T, what string, lat []time.Duration, noise time.Duration) (tries, through int) {
	t.Helper()
	if len(lat) == 0 {
		t.Fatalf("%s: no connection of A's measured", what)
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	over := 0
	bound := decisionBound + 2*min(noise, maxNoise)
	for _, d := range s {
		if d > bound {
			over++
		}
	}
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	t.Logf("%s: A's connect latency over %d connections: p50 %v, p99 %v, max %v; %d over %v (%v + twice the unattacked p99 %v)",
		what, len(s), q(0.50), q(0.99), s[len(s)-1], over, bound, decisionBound, noise)
	return len(s), max(0, over-len(s)/100)
}

// bLoad keeps inFlight of B's connections to port in flight until the
// returned function is called: exe run as B with args. each, if set, runs
// before every connection.
func bLoad(t *testing.T, ctx context.Context, ns *testenv.NS, inFlight int, each func(), exe string, args ...string) (stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	started := 0
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if each != nil {
					mu.Lock()
					each()
					mu.Unlock()
				}
				cmd := ns.Command(ctx, uidB, uidB, exe, args...)
				if err := cmd.Start(); err != nil {
					return
				}
				mu.Lock()
				started++
				mu.Unlock()
				cmd.Wait() // the context kills it by PID
			}
		}()
	}
	return func() int {
		cancel()
		wg.Wait()
		return started
	}
}

// bDialerArgs are B's dialer's arguments: a connection to port, and filler
// that makes B's command line 470 bytes or more, as in the report.
func bDialerArgs(port int) []string {
	args := []string{"-net", "tcp4", "-addr", fmt.Sprintf("127.0.0.1:%d", port), "-timeout", "1s"}
	for range 9 {
		args = append(args, strings.Repeat("a", 50))
	}
	return args
}

// TestAttackRuleRegexSize: B sets a rule whose 4,088-byte command-line
// expression `a{1000}…` compiles to ~584,000 instructions. Each such call
// the agent accepts costs it hundreds of MB.
func TestAttackRuleRegexSize(t *testing.T) {
	requireAutoRun(t, "rule compilation does not depend on the mechanism")
	bins(t)
	ns := testenv.NewNetNS(t)
	a := startAgent(t, ns)
	ctx := testCtx(t, 5*time.Minute)
	hostile := strings.Repeat("a{1000}", 584)
	before := agentRSSKiB(t, a)
	tries, accepted := 4, 0
	for i := range tries {
		begin := time.Now()
		out, code := setRulesAs(t, ctx, ns, a, uidB, []map[string]any{cmdlineRule(fmt.Sprintf("big%d", i), hostile)})
		took := time.Since(begin)
		if code == 0 {
			accepted++
			t.Logf("B's SetRules %d (%d-byte a{1000}… expression) accepted in %v; agent RSS %d MiB", i, len(hostile), took, agentRSSKiB(t, a)>>10)
			continue
		}
		if !strings.Contains(out, "InvalidArgument") || !strings.Contains(out, "at most") {
			t.Errorf("B's SetRules %d refused without an InvalidArgument naming the limit: %s", i, out)
		}
		t.Logf("B's SetRules %d refused in %v: %s", i, took, strings.TrimSpace(out))
	}
	after := agentRSSKiB(t, a)
	t.Logf("agent RSS %d MiB before, %d MiB after %d hostile SetRules calls", before>>10, after>>10, tries)

	// The worst that is accepted: expressions at the bounds, as many as
	// one user may have, and 10,000 rules (the most a user may have).
	var worst []map[string]any
	wide := strings.Repeat("[a-z]x", 100) // 200 instructions
	for i := range 10_000 {
		worst = append(worst, cmdlineRule(fmt.Sprintf("w%d", i), wide))
	}
	for n := len(worst); n > 0; n = n * 3 / 4 {
		begin := time.Now()
		out, code := setRulesAs(t, ctx, ns, a, uidB, worst[:n])
		if code == 0 {
			t.Logf("worst accepted set: %d rules of a 200-instruction expression, SetRules took %v; agent RSS %d MiB",
				n, time.Since(begin), agentRSSKiB(t, a)>>10)
			break
		}
		if n == len(worst) {
			t.Logf("%d rules of a 200-instruction expression refused: %s", n, strings.TrimSpace(out))
		}
	}
	// 10,000 rules (the most a user may have) in one call: the costliest
	// to compile per byte of request, and a plausible large set.
	for _, tc := range []struct{ name, expr string }{
		{"(?:ab){500} (1,000 instructions each)", "(?:ab){500}"},
		{"[a-z]*x<n>ZQ.* (small)", "[a-z]*x%dZQ.*"},
	} {
		var many []*rulesv1.Rule
		for i := range 10_000 {
			expr := tc.expr
			if strings.Contains(expr, "%d") {
				expr = fmt.Sprintf(expr, i)
			}
			many = append(many, &rulesv1.Rule{Id: fmt.Sprintf("m%d", i), Enabled: true, Action: rulesv1.Action_ACTION_ALLOW,
				Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER, Cmdline: expr})
		}
		begin := time.Now()
		_, err := a.Client.SetRules(ctx, &agentv1.SetRulesRequest{Uid: proto.Uint32(uidB), Rules: many})
		t.Logf("10,000 rules of %s: SetRules took %v (err %v); agent RSS %d MiB", tc.name, time.Since(begin), err, agentRSSKiB(t, a)>>10)
	}

	reportAttack(t, "oversized command-line regex (a{1000}…, 4 KB) accepted by SetRules", tries, accepted, 0)
}

// TestAttackRuleRegexTime: B's rules that take long to match B's own
// connections must not delay A's, which A's rule allows at once.
func TestAttackRuleRegexTime(t *testing.T) {
	requireAutoRun(t, "rule matching does not depend on the mechanism")
	bins(t)
	ns := testenv.NewNetNS(t)
	a := startAgent(t, ns)
	ctx := testCtx(t, 10*time.Minute)
	portA := portOf(ns.Listen(t, "tcp4", "127.0.0.1:0").Addr())
	portB := portOf(ns.Listen(t, "tcp4", "127.0.0.1:0").Addr())
	allowDialerFor(t, ctx, a, uidA, portA)
	base := connectLatencies(t, ctx, ns, portA, 50, time.Minute)
	noise := quantile(base, 0.99)
	latencyVerdict(t, "no attack", base, 0)

	// The report's rule first; once that is refused, the costliest rules
	// the bounds accept, as many as B may have.
	hostile := []map[string]any{cmdlineRule("slow", strings.Repeat("(?:.?){1000}", 340)+"ZQ")}
	out, code := setRulesAs(t, ctx, ns, a, uidB, hostile)
	if code != 0 {
		t.Logf("B's (?:.?){1000}…ZQ rule refused: %s", strings.TrimSpace(out))
		var worst []map[string]any
		for i := range 1024 {
			worst = append(worst, cmdlineRule(fmt.Sprintf("w%d", i), "(?:.*){30}ZQ"))
		}
		for code != 0 && len(worst) > 0 {
			if out, code = setRulesAs(t, ctx, ns, a, uidB, worst); code != 0 {
				worst = worst[:len(worst)*7/8]
			}
		}
		t.Logf("B set %d rules of (?:.*){30}ZQ (the widest accepted): %s", len(worst), strings.TrimSpace(out))
	}
	stop := bLoad(t, ctx, ns, 3, nil, builtBins.dialer, bDialerArgs(portB)...)
	lat := connectLatencies(t, ctx, ns, portA, 100, 90*time.Second)
	started := stop()
	tries, through := latencyVerdict(t, fmt.Sprintf("B's costly rules, %d of B's connections", started), lat, noise)
	reportAttack(t, fmt.Sprintf("costly command-line regex of B delays A's connections over %v", decisionBound), tries, through, 0)
}

// TestAttackHashSize: B's sha256 rule and a 1,000 MB executable of B's must
// not delay A's connections while the agent hashes it.
func TestAttackHashSize(t *testing.T) {
	requireAutoRun(t, "hashing an executable for a rule does not depend on the mechanism")
	bins(t)
	ns := testenv.NewNetNS(t)
	a := startAgent(t, ns)
	ctx := testCtx(t, 10*time.Minute)
	portA := portOf(ns.Listen(t, "tcp4", "127.0.0.1:0").Addr())
	portB := portOf(ns.Listen(t, "tcp4", "127.0.0.1:0").Addr())
	allowDialerFor(t, ctx, a, uidA, portA)
	base := connectLatencies(t, ctx, ns, portA, 50, time.Minute)
	noise := quantile(base, 0.99)
	latencyVerdict(t, "no attack", base, 0)

	// B's huge executable: the dialer with a sparse tail, 1,000 MB.
	dir, err := testenv.MakeTempDir("bastion-e2e-bigexe-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	big := filepath.Join(dir, "big-dialer")
	src, err := os.ReadFile(builtBins.dialer)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 1000<<20); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(big, uidB, uidB); err != nil {
		t.Fatal(err)
	}
	if out, code := setRulesAs(t, ctx, ns, a, uidB, []map[string]any{{"id": "pinned", "enabled": true,
		"action": "ACTION_ALLOW", "lifetime": "LIFETIME_FOREVER", "exeSha256": strings.Repeat("0", 64)}}); code != 0 {
		t.Fatalf("B's sha256 rule: %s", out)
	}
	// Every connection of B's comes from a "new" file (B touches it), so
	// the agent hashes 1,000 MB again each time.
	n := 0
	touch := func() {
		n++
		ts := time.Unix(1_700_000_000+int64(n), 0)
		os.Chtimes(big, ts, ts)
	}
	stop := bLoad(t, ctx, ns, 1, touch, big, "-net", "tcp4", "-addr", fmt.Sprintf("127.0.0.1:%d", portB), "-timeout", "1s")
	lat := connectLatencies(t, ctx, ns, portA, 100, 90*time.Second)
	started := stop()
	tries, through := latencyVerdict(t, fmt.Sprintf("B's sha256 rule, %d connections from B's 1,000 MB executable", started), lat, noise)
	reportAttack(t, fmt.Sprintf("hashing B's 1,000 MB executable delays A's connections over %v", decisionBound), tries, through, 0)
}
