package ctl

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/bastion-fw/bastion/internal/inert"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// status shows the agent's status and the rules service's; it succeeds
// when at least one of them answered.
func (c *cli) status(ctx context.Context) int {
	ast, aerr := c.agent.GetStatus(ctx, &agentv1.GetStatusRequest{})
	if aerr == nil {
		if c.json {
			c.emitJSON(ast)
		} else {
			c.printAgentStatus(ast)
		}
	} else {
		fmt.Fprintf(c.errOut, "bastionctl: %s\n", inert.String(status.Convert(c.agentErr(aerr)).Message()))
	}
	ust, uerr := c.ui.GetStatus(ctx, &uiv1.GetStatusRequest{})
	if uerr == nil {
		if c.json {
			c.emitJSON(ust)
		} else {
			if aerr == nil {
				fmt.Fprintln(c.out)
			}
			c.printUIStatus(ust)
		}
	} else {
		fmt.Fprintf(c.errOut, "bastionctl: %s\n", inert.String(status.Convert(c.uiErr(uerr)).Message()))
	}
	switch {
	case aerr == nil || uerr == nil:
		return ExitOK
	case codeOf(aerr) == codeOf(uerr):
		return codeOf(aerr)
	}
	return ExitNoAgent
}

func (c *cli) printAgentStatus(st *agentv1.GetStatusResponse) {
	k := st.GetCounters()
	fmt.Fprintf(c.out, "agent %s, up since %s\n", inert.String(st.GetVersion()), st.GetStarted().AsTime().In(c.loc).Format(time.DateTime))
	fmt.Fprintf(c.out, "identification: %s\n", inert.String(st.GetMechanism()))
	fmt.Fprintf(c.out, "kernel features: %s\n", inert.String(strings.Join(st.GetFeatures(), " ")))
	ns := inert.String(st.GetNetns())
	if ns == "" {
		ns = "host"
	}
	fmt.Fprintf(c.out, "firewall: iptables-%s, queue %d, fail-open %v, network namespace %s\n",
		inert.String(st.GetFirewallBackend()), st.GetQueueNum(), st.GetFailOpen(), ns)
	reuse := inert.String(st.GetUdpReuseProtection())
	if reuse == "" {
		reuse = "unknown (the agent does not report it)"
	}
	fmt.Fprintf(c.out, "udp tuple-reuse protection: %s; flows released %d, reuse races %d\n",
		reuse, k.GetUdpFlowsReleased(), k.GetUdpReuseRaces())
	// The agent counts a non-root caller's own UID only.
	if uid := st.GetCallerUid(); uid != 0 {
		fmt.Fprintf(c.out, "counts below are UID %d's own (root sees every user's)\n", uid)
	}
	fmt.Fprintf(c.out, "pending: %d, cached decisions: %d, prompt clients for UIDs %v (you are UID %d)\n",
		st.GetPending(), st.GetCacheEntries(), st.GetWatchedUids(), st.GetCallerUid())
	if l := st.GetShareLimits(); l != nil {
		fmt.Fprintf(c.out, "held per UID: at most %d packets in %d connections (all UIDs: %d in %d, each UID's first %d in %d always); queue length %d; dropped beyond a share: %d\n",
			l.GetHeldPacketsPerUid(), l.GetPendingPerUid(), l.GetHeldPacketsTotal(), l.GetPendingTotal(),
			l.GetReservedHeldPacketsPerUid(), l.GetReservedPendingPerUid(), l.GetQueueMaxLen(), k.GetShed())
		for _, u := range st.GetShares() {
			fmt.Fprintf(c.out, "  UID %d: holds %d packets in %d connections, dropped beyond its share %d\n",
				u.GetUid(), u.GetHeldPackets(), u.GetPending(), u.GetShed())
		}
	}
	fmt.Fprintf(c.out, "packets: %d (allowed %d, denied %d, rejected %d; identified %d, unidentified %d)\n",
		k.GetPackets(), k.GetAllowed(), k.GetDenied(), k.GetRejected(), k.GetIdentified(), k.GetUnidentified())
	// Every packet is in exactly one of these (agentv1.Counters).
	fmt.Fprintf(c.out, "decided by: rules %d, cache %d, policy %d, answer %d, deadline %d, silent action %d, "+
		"resent (its first packet's verdict) %d, shutdown or busy rules %d, dropped beyond a share %d, unreadable %d; held now %d\n",
		k.GetRuleDecisions(), k.GetCacheHits(), k.GetPolicyDecisions(), k.GetApiDecisions(), k.GetDeadlineDecisions(),
		k.GetSilentDecisions(), k.GetRetransmitDecisions(), k.GetOtherDecisions(), k.GetShed(), k.GetMalformed(), k.GetHeldPackets())
	if n := k.GetPackets() - min(k.GetPackets(), decidedSum(k)); n > 0 {
		// Read while they were being decided.
		fmt.Fprintf(c.out, "  on their way to a verdict: %d\n", n)
	}
	fmt.Fprintf(c.out, "  in the kernel: %d of those by rules and the cache (no queue round trip)\n", k.GetKernelDecisions())
	c.printKernelDecisions(st)
	c.printTrafficAccounting(st)
	if q := st.GetDnsQueueNum(); q != 0 {
		fmt.Fprintf(c.out, "host names from DNS: queue %d, answers %d (malformed %d), addresses named %d\n",
			q, k.GetDnsAnswers(), k.GetDnsMalformed(), st.GetDnsNames())
	} else {
		fmt.Fprintln(c.out, "host names from DNS: off")
	}
}

// printTrafficAccounting says in one line whether the agent counts what
// connections carry and what that costs; nothing for an agent that does
// not report it.
func (c *cli) printTrafficAccounting(st *agentv1.GetStatusResponse) {
	ta := st.GetTrafficAccounting()
	if ta == nil {
		return
	}
	if ta.GetState() != "active" {
		fmt.Fprintf(c.out, "traffic accounting: %s\n", inert.String(ta.GetState()))
		return
	}
	fmt.Fprintf(c.out, "traffic accounting: active, counts read every %v; %d connections followed (~%d KiB), samples sent %d, dropped %d; connections lost %d\n",
		ta.GetInterval().AsDuration(), ta.GetTracked(), (ta.GetMemoryBytes()+1023)/1024, ta.GetSamplesSent(), ta.GetSamplesDropped(), ta.GetLost())
}

// decidedSum adds up the buckets of "decided by", held packets included.
func decidedSum(k *agentv1.Counters) uint64 {
	return k.GetRuleDecisions() + k.GetCacheHits() + k.GetPolicyDecisions() + k.GetApiDecisions() + k.GetDeadlineDecisions() +
		k.GetSilentDecisions() + k.GetRetransmitDecisions() + k.GetOtherDecisions() + k.GetShed() + k.GetMalformed() + k.GetHeldPackets()
}

// printKernelDecisions says how connections are decided in the kernel: the
// mechanism, the remembered decisions, the last minute's split and, for
// root, the kernel's counters.
func (c *cli) printKernelDecisions(st *agentv1.GetStatusResponse) {
	kd := st.GetKernelDecisions()
	if kd == nil {
		fmt.Fprintln(c.out, "kernel decisions: unknown (the agent does not report them)")
		return
	}
	mech, reason := inert.String(kd.GetMechanism()), inert.String(kd.GetReason())
	switch mech {
	case "off", "unavailable":
		fmt.Fprintf(c.out, "kernel decisions: %s: %s; every new connection goes through the queue\n", mech, reason)
	default:
		if reason != "" {
			fmt.Fprintf(c.out, "kernel decisions: %s; remembered decisions unknown: %s\n", mech, reason)
		} else {
			fmt.Fprintf(c.out, "kernel decisions: %s; %d remembered decisions in force\n", mech, kd.GetEntries())
		}
	}
	kern, user := kd.GetLastMinuteKernel(), kd.GetLastMinuteUserspace()
	if kern+user == 0 {
		fmt.Fprintln(c.out, "  last minute: no decisions")
	} else {
		fmt.Fprintf(c.out, "  last minute: %d in the kernel, %d in userspace (%s in the kernel)\n", kern, user, percent(kern, kern+user))
	}
	// The kernel's counters add up every UID's: root's alone.
	if st.GetCallerUid() == 0 && mech != "off" && mech != "unavailable" {
		fmt.Fprintf(c.out, "  kernel counters: allowed %d, denied %d, rejected %d, packets let through %d, records lost %d",
			kd.GetAllowed(), kd.GetDenied(), kd.GetRejected(), kd.GetPackets(), kd.GetLost())
		if kd.GetLost() != 0 {
			fmt.Fprint(c.out, " (decided, but missing from the history and counters)")
		}
		fmt.Fprintln(c.out)
	}
}

// percent is part/whole in whole percent, rounded down, and "<1%" rather
// than 0% when part is not 0.
func percent(part, whole uint64) string {
	p := part * 100 / whole
	if p == 0 && part != 0 {
		return "<1%"
	}
	return fmt.Sprintf("%d%%", p)
}

func (c *cli) printUIStatus(st *uiv1.GetStatusResponse) {
	fmt.Fprintf(c.out, "rules service %s for UID %d, store %s\n", inert.String(st.GetVersion()), st.GetUid(), inert.String(st.GetStorePath()))
	agent := "not connected"
	if st.GetAgentConnected() {
		agent = "connected"
	}
	fmt.Fprintf(c.out, "agent: %s\n", agent)
	fmt.Fprintf(c.out, "rules: %d, decide later: %d\n", st.GetRules(), st.GetDecideLater())
	fmt.Fprintf(c.out, "prompt clients: %d, pending prompts: %d\n", st.GetPromptClients(), st.GetPendingPrompts())
	fmt.Fprintf(c.out, "without a prompt client: silent %s; prompts time out after %v, then %s\n",
		ruleActionName(st.GetSilentAction()), st.GetPromptTimeout().AsDuration(), ruleActionName(st.GetTimeoutAction()))
	if p := st.GetPausedUntil(); p != nil {
		fmt.Fprintf(c.out, "protection paused until %s: your new connections are allowed and logged, not asked about\n",
			p.AsTime().Local().Format("15:04:05"))
	}
}
