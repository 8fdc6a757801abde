package ctl

// The agent's commands: pending connections, decisions and the cache.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/inert"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

func (c *cli) pending(ctx context.Context, args []string) error {
	fs := c.flagSet("pending")
	watch := fs.Bool("watch", false, "keep watching for new pending connections")
	if ops, err := c.parse(fs, args); err != nil || len(ops) != 0 {
		return orUsage(err, "pending [--watch]")
	}
	if !*watch {
		resp, err := c.agent.ListPending(ctx, &agentv1.ListPendingRequest{})
		if err != nil {
			return c.agentErr(err)
		}
		if len(resp.GetConnections()) == 0 && !c.json {
			fmt.Fprintln(c.out, "No connections are waiting.")
		}
		for _, p := range resp.GetConnections() {
			if c.json {
				c.emitJSON(p)
			} else {
				fmt.Fprintln(c.out, describePending(p))
			}
		}
		return nil
	}
	stream, err := c.agent.WatchPending(ctx, &agentv1.WatchPendingRequest{})
	if err != nil {
		return c.agentErr(err)
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return c.agentErr(err)
		}
		if c.json {
			c.emitJSON(ev)
			continue
		}
		switch ev.GetKind() {
		case agentv1.PendingEvent_KIND_ADDED:
			fmt.Fprintln(c.out, "+", describePending(ev.GetConnection()))
		case agentv1.PendingEvent_KIND_RESOLVED:
			fmt.Fprintf(c.out, "- %s %s by %s\n", inert.String(ev.GetConnection().GetId()), actionName(ev.GetAction()), inert.String(ev.GetDecidedBy()))
		}
	}
}

func (c *cli) decide(ctx context.Context, args []string) error {
	const use = "decide ID allow|deny|reject [--scope S] [--for DURATION]"
	fs := c.flagSet("decide")
	scopeArg := fs.String("scope", "connection", "connection, destination-port, destination, port or any")
	life := fs.Duration("for", 0, "how long the decision is cached (0: until the agent restarts)")
	ops, err := c.parse(fs, args)
	if err != nil || len(ops) != 2 {
		return orUsage(err, use)
	}
	id, actionArg := ops[0], ops[1]
	action, ok := map[string]agentv1.Action{
		"allow": agentv1.Action_ACTION_ALLOW, "deny": agentv1.Action_ACTION_DENY, "reject": agentv1.Action_ACTION_REJECT,
	}[actionArg]
	if !ok {
		return fmt.Errorf("%w: action %q is not allow, deny or reject", errUsage, actionArg)
	}
	scope, ok := map[string]agentv1.Scope{
		"connection": agentv1.Scope_SCOPE_CONNECTION, "destination-port": agentv1.Scope_SCOPE_DESTINATION_PORT,
		"destination": agentv1.Scope_SCOPE_DESTINATION, "port": agentv1.Scope_SCOPE_PORT, "any": agentv1.Scope_SCOPE_ANY,
	}[*scopeArg]
	if !ok {
		return fmt.Errorf("%w: unknown scope %q", errUsage, *scopeArg)
	}
	req := &agentv1.DecideRequest{Id: id, Action: action, Scope: scope}
	if *life > 0 {
		req.Lifetime = durationpb.New(*life)
	}
	resp, err := c.agent.Decide(ctx, req)
	if err != nil {
		return c.agentErr(err)
	}
	if c.json {
		c.emitJSON(resp)
		return nil
	}
	fmt.Fprintf(c.out, "%s: %s, %d packet(s) released", id, actionArg, resp.GetPackets())
	if resp.GetCacheId() != "" {
		fmt.Fprintf(c.out, ", cached as %s", inert.String(resp.GetCacheId()))
	}
	fmt.Fprintln(c.out)
	return nil
}

func (c *cli) decisions(ctx context.Context, args []string) error {
	fs := c.flagSet("decisions")
	follow := fs.Bool("follow", false, "keep printing new decisions")
	if ops, err := c.parse(fs, args); err != nil || len(ops) != 0 {
		return orUsage(err, "decisions [--follow]")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.agent.WatchDecisions(ctx, &agentv1.WatchDecisionsRequest{})
	if err != nil {
		return c.agentErr(err)
	}
	printed := 0
	// Without --follow, print what the agent has kept and stop once the
	// stream has been quiet briefly: the backlog arrives in one burst.
	evs := make(chan *agentv1.DecisionEvent)
	errc := make(chan error, 1)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			evs <- ev
		}
	}()
	for {
		var idle <-chan time.Time
		if !*follow {
			idle = time.After(c.quiet)
		}
		select {
		case ev := <-evs:
			if c.json {
				c.emitJSON(ev)
			} else {
				fmt.Fprintf(c.out, "%s %-6s %s %s (by %s)\n", ev.GetTime().AsTime().In(c.loc).Format(time.TimeOnly),
					actionName(ev.GetAction()), describeProcess(ev.GetProcess()), describeFlow(ev.GetFlow(), ev.GetHost()), decidedByLabel(ev.GetDecidedBy()))
			}
			printed++
		case err := <-errc:
			return c.agentErr(err)
		case <-idle:
			if printed == 0 && !c.json {
				fmt.Fprintln(c.out, "No decisions yet.")
			}
			return nil
		}
	}
}

func (c *cli) cache(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "forget") {
		return fmt.Errorf("%w: cache list | cache forget [ID]", errUsage)
	}
	ops, err := c.parse(c.flagSet("cache "+args[0]), args[1:])
	if err != nil {
		return err
	}
	switch args[0] {
	case "list":
		if len(ops) != 0 {
			return fmt.Errorf("%w: cache list", errUsage)
		}
		resp, err := c.agent.ListCache(ctx, &agentv1.ListCacheRequest{})
		if err != nil {
			return c.agentErr(err)
		}
		if len(resp.GetEntries()) == 0 && !c.json {
			fmt.Fprintln(c.out, "No decisions are remembered.")
		}
		for _, e := range resp.GetEntries() {
			if c.json {
				c.emitJSON(e)
				continue
			}
			until := "until restart"
			if e.GetExpires() != nil {
				until = "until " + e.GetExpires().AsTime().In(c.loc).Format(time.DateTime)
			}
			fmt.Fprintf(c.out, "%s uid=%d %s %s %s dst=%s port=%d %s, %d hits\n", inert.String(e.GetId()), e.GetUid(), inert.String(e.GetExe()),
				actionName(e.GetAction()), strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(e.GetScope().String()), "scope_"), "_", "-"),
				inert.String(e.GetDstIp()), e.GetDstPort(), until, e.GetHits())
		}
		return nil
	case "forget":
		if len(ops) > 1 {
			return fmt.Errorf("%w: cache forget [ID]", errUsage)
		}
		req := &agentv1.ForgetCacheRequest{}
		if len(ops) == 1 {
			req.Id = ops[0]
		}
		resp, err := c.agent.ForgetCache(ctx, req)
		if err != nil {
			return c.agentErr(err)
		}
		if c.json {
			c.emitJSON(resp)
		} else {
			fmt.Fprintf(c.out, "forgot %d cached decision(s)\n", resp.GetRemoved())
		}
		return nil
	}
	return fmt.Errorf("%w: cache list | cache forget [ID]", errUsage)
}

func actionName(a agentv1.Action) string {
	return strings.TrimPrefix(strings.ToLower(a.String()), "action_")
}

// describeProcess is "pid=PID EXE uid=UID": the process ID (tgid; the API's
// pid is the thread ID) first, then the executable as apiconv.ExeText shows
// it (with what it is when it is not the host's file).
func describeProcess(p *agentv1.Process) string {
	name := inert.String(apiconv.ExeText(p))
	if name == "" {
		name = "[" + inert.String(p.GetComm()) + "]"
	}
	return fmt.Sprintf("pid=%d %s uid=%d", p.GetTgid(), name, p.GetUid())
}

// describeFlow is "tcp 192.0.2.1:443", with " (example.com)" when the
// agent knows the destination's name.
func describeFlow(f *agentv1.Flow, host string) string {
	proto := apiconv.FlowProtoName(f)
	dst := inert.String(f.GetDstIp())
	if f.GetIpVersion() == 6 {
		dst = "[" + dst + "]"
	}
	out := fmt.Sprintf("%s %s:%d", proto, dst, f.GetDstPort())
	if h := inert.String(apiconv.Host(host)); h != "" {
		out += " (" + h + ")"
	}
	return out
}

func describePending(p *agentv1.PendingConnection) string {
	args := inert.Elide(strings.Join(p.GetProcess().GetArgs(), " "), 80)
	left := time.Until(p.GetDeadline().AsTime()).Round(time.Second)
	out := fmt.Sprintf("%s %s -> %s [%s] %d packet(s), %s in %v",
		inert.String(p.GetId()), describeProcess(p.GetProcess()), describeFlow(p.GetFlow(), p.GetHost()), args, p.GetPackets(),
		actionName(p.GetDeadlineAction()), left)
	return out + alsoProcesses(p.GetProcesses(), p.GetMoreProcesses())
}

// alsoProcesses lists the processes of a merged entry after the first, as
// "; also pid=2 [argv], pid=3 [argv] and 4 more", "" when there are none.
func alsoProcesses(procs []*agentv1.Process, more uint32) string {
	if len(procs) <= 1 && more == 0 {
		return ""
	}
	var parts []string
	for _, q := range procs[min(1, len(procs)):] {
		args := inert.Elide(strings.Join(q.GetArgs(), " "), 60)
		parts = append(parts, fmt.Sprintf("pid=%d [%s]", q.GetTgid(), args))
	}
	out := "; also " + strings.Join(parts, ", ")
	if more > 0 {
		out += fmt.Sprintf(" and %d more", more)
	}
	return out
}
