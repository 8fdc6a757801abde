package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// TestAttackIDOracleAndForeignCounters: user B probes user A's pending
// connection and cache entry IDs (deciding and forgetting them) and reads
// GetStatus. Each probe of a real ID of A's must answer exactly as a probe
// of an ID that does not exist, and B's status must show no count of A's.
func TestAttackIDOracleAndForeignCounters(t *testing.T) {
	b := bins(t)
	ns := testenv.NewNetNS(t)
	s := startServers(t, ns)
	a := startAgent(t, ns)
	ctx := testCtx(t, 2*time.Minute)
	// A: one connection answered for its destination (a cache entry),
	// then one held.
	start(t, dialer(ctx, ns, 1000, "-net", "tcp4", "-addr", hostPort(false, s.tcp4), "-timeout", "60s"))
	first := a.WaitPending(t, 10*time.Second, flowTo(tcp, 4, s.tcp4))
	a.Decide(t, first.GetId(), agentv1.Action_ACTION_ALLOW, agentv1.Scope_SCOPE_DESTINATION_PORT)
	start(t, dialer(ctx, ns, 1000, "-net", "udp4", "-addr", hostPort(false, s.udp4), "-reply", "-timeout", "60s"))
	held := a.WaitPending(t, 10*time.Second, flowTo(udp, 4, s.udp4))
	cache := a.Status(t).GetCacheEntries()
	if cache != 1 {
		t.Fatalf("A's cache entries: %d, want 1", cache)
	}
	var cacheID string
	{
		resp, err := a.Client.ListCache(ctx, &agentv1.ListCacheRequest{})
		if err != nil || len(resp.GetEntries()) != 1 {
			t.Fatalf("ListCache: %v %v", resp, err)
		}
		cacheID = resp.GetEntries()[0].GetId()
	}

	bastionctl := func(args ...string) string {
		out, code := run(t, ns.Command(ctx, 1001, 1001, b.ctl, append([]string{"--agent-socket", a.Socket}, args...)...))
		return fmt.Sprintf("exit %d: %s", code, strings.TrimSpace(out))
	}
	probes := []struct{ real, missing []string }{
		{[]string{"decide", held.GetId(), "allow"}, []string{"decide", "c999999", "allow"}},
		{[]string{"decide", held.GetId(), "deny", "--scope", "any"}, []string{"decide", "c999998", "deny", "--scope", "any"}},
		{[]string{"cache", "forget", cacheID}, []string{"cache", "forget", "d999999"}},
	}
	distinguishing := 0
	for _, p := range probes {
		real, missing := bastionctl(p.real...), bastionctl(p.missing...)
		if real != missing {
			distinguishing++
			t.Errorf("B's %v answers %q, but for a missing ID %q", p.real, real, missing)
		}
	}
	if len(a.ListPending(t)) != 1 || a.Status(t).GetCacheEntries() != 1 {
		t.Errorf("B's probes changed A's state")
	}

	// B's status: B has sent nothing, so every count it sees of
	// connections, packets and answers is someone else's.
	out, code := run(t, ns.Command(ctx, 1001, 1001, b.ctl, "--agent-socket", a.Socket, "--json", "status"))
	line, _, _ := strings.Cut(out, "\n")
	var st agentv1.GetStatusResponse
	if err := protojson.Unmarshal([]byte(line), &st); code != 0 || err != nil {
		t.Fatalf("bastionctl --json status as B: exit %d, %v: %s", code, err, out)
	}
	foreign, checked := 0, 0
	count := func(name string, v uint64) {
		checked++
		if v != 0 {
			foreign++
			t.Errorf("B's status shows %s = %d", name, v)
		}
	}
	k := st.GetCounters()
	count("pending", uint64(st.GetPending()))
	count("cache_entries", uint64(st.GetCacheEntries()))
	count("dns_names", uint64(st.GetDnsNames()))
	for name, v := range map[string]uint64{
		"packets": k.GetPackets(), "allowed": k.GetAllowed(), "denied": k.GetDenied(), "rejected": k.GetRejected(),
		"cache_hits": k.GetCacheHits(), "policy_decisions": k.GetPolicyDecisions(), "api_decisions": k.GetApiDecisions(),
		"deadline_decisions": k.GetDeadlineDecisions(), "identified": k.GetIdentified(), "unidentified": k.GetUnidentified(),
		"malformed": k.GetMalformed(), "udp_flows_released": k.GetUdpFlowsReleased(), "udp_reuse_races": k.GetUdpReuseRaces(),
		"dns_answers": k.GetDnsAnswers(), "dns_malformed": k.GetDnsMalformed(),
		"rule_decisions": k.GetRuleDecisions(), "kernel_decisions": k.GetKernelDecisions(),
		"silent_decisions": k.GetSilentDecisions(), "retransmit_decisions": k.GetRetransmitDecisions(),
		"other_decisions": k.GetOtherDecisions(), "held_packets": k.GetHeldPackets(),
	} {
		count(name, v)
	}
	checked++
	for _, uid := range st.GetWatchedUids() {
		if uid != 1001 {
			foreign++
			t.Errorf("B's status names UID %d's prompt client", uid)
		}
	}
	// Root still sees everything.
	if rs := a.Status(t); rs.GetPending() != 1 || rs.GetCounters().GetPackets() < 2 {
		t.Errorf("root's status: pending %d, packets %d; want A's", rs.GetPending(), rs.GetCounters().GetPackets())
	}
	reportAttack(t, "B probes A's connection and cache IDs and reads the status", len(probes)+checked, distinguishing+foreign, 0)
}
