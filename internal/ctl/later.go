package ctl

// later: connections the default decided while no prompt client was there.

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/inert"
	"github.com/bastion-fw/bastion/internal/rules"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

const laterUse = "later list | later rule ID --action A [--scope S] [OPERANDS] [--for D|--session|--forever] | later forget ID"

func (c *cli) later(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", errUsage, laterUse)
	}
	switch args[0] {
	case "list", "ls":
		if ops, err := c.parse(c.flagSet("later list"), args[1:]); err != nil || len(ops) != 0 {
			return orUsage(err, "later list")
		}
		return c.laterList(ctx)
	case "rule":
		return c.laterRule(ctx, args[1:])
	case "forget":
		ops, err := c.parse(c.flagSet("later forget"), args[1:])
		if err != nil || len(ops) != 1 {
			return orUsage(err, "later forget ID")
		}
		if _, err := c.ui.ResolveDecideLater(ctx, &uiv1.ResolveDecideLaterRequest{Id: ops[0]}); err != nil {
			if status.Code(err) == codes.NotFound {
				return status.Errorf(codes.NotFound, "there is no decide-later entry %q; `bastionctl later list` shows them", ops[0])
			}
			return c.uiErr(err)
		}
		if !c.json {
			fmt.Fprintln(c.out, "forgot", inert.String(ops[0]))
		}
		return nil
	}
	return fmt.Errorf("%w: %s", errUsage, laterUse)
}

func (c *cli) laterList(ctx context.Context) error {
	resp, err := c.ui.ListDecideLater(ctx, &uiv1.ListDecideLaterRequest{})
	if err != nil {
		return c.uiErr(err)
	}
	if c.json {
		for _, e := range resp.GetEntries() {
			c.emitJSON(e)
		}
		return nil
	}
	if len(resp.GetEntries()) == 0 {
		fmt.Fprintln(c.out, "Nothing to decide later.")
		return nil
	}
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tAPPLIED\tAPP\tDESTINATION\tCMDLINE")
	for _, e := range resp.GetEntries() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s %s\t%s\n", inert.String(e.GetId()), e.GetTime().AsTime().In(c.loc).Format(time.DateTime),
			ruleActionName(e.GetApplied()), orDash(inert.String(apiconv.ExeText(e.GetProcess()))), flowProtoName(e.GetFlow()),
			flowDestination(e.GetFlow(), e.GetHost()), orDash(inert.Elide(strings.Join(e.GetProcess().GetArgs(), " "), 40)))
	}
	return tw.Flush()
}

var scopeNames = map[string]rules.Scope{
	"destination-port": rules.ScopeDestinationPort,
	"host":             rules.ScopeHost,
	"domain":           rules.ScopeDomain,
	"port":             rules.ScopePort,
	"any":              rules.ScopeAny,
}

// laterRule makes the rule a prompt answer with --scope would have made
// for the entry; operand flags then override that rule's operands.
func (c *cli) laterRule(ctx context.Context, args []string) error {
	const use = "later rule ID --action allow|deny|reject [--scope destination-port|host|domain|port|any] [--with-cmdline] " +
		"[OPERANDS] [--for DURATION|--session|--forever] [--note TEXT]"
	fs := c.flagSet("later rule")
	action := fs.String("action", "", "allow, deny or reject")
	scopeArg := fs.String("scope", "destination-port", "destination-port, host, domain, port or any")
	withCmdline := fs.Bool("with-cmdline", false, "only with this command line")
	note := fs.String("note", "", "a note for yourself")
	var ops operandFlags
	ops.register(fs)
	var life lifetimeFlags
	life.register(fs)
	ops0, err := c.parse(fs, args)
	if err != nil || len(ops0) != 1 {
		return orUsage(err, use)
	}
	id := ops0[0]
	a, err := flow.ParseAction(*action)
	if err != nil {
		return fmt.Errorf("%w: --action: %v", errUsage, err)
	}
	scope, ok := scopeNames[*scopeArg]
	if !ok {
		return fmt.Errorf("%w: unknown scope %q", errUsage, *scopeArg)
	}
	var lr rules.Rule
	if err := life.apply(&lr, time.Time{}); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	resp, err := c.ui.ListDecideLater(ctx, &uiv1.ListDecideLaterRequest{})
	if err != nil {
		return c.uiErr(err)
	}
	var entry *uiv1.DecideLaterEntry
	for _, e := range resp.GetEntries() {
		if e.GetId() == id {
			entry = e
		}
	}
	if entry == nil {
		return status.Errorf(codes.NotFound, "there is no decide-later entry %q; `bastionctl later list` shows them", id)
	}
	choice := rules.Choice{Action: a, Lifetime: lr.Lifetime, For: life.dur, Scope: scope, WithCmdline: *withCmdline}
	r, err := rules.ForPrompt(apiconv.Process(entry.GetProcess()), apiconv.Tuple(entry.GetFlow()), entry.GetHost(), choice, c.ruleNow())
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := ops.apply(&r, setFlags(fs)); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	r.Note = *note
	r.Created = time.Time{} // the rules service assigns it
	if err := r.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	res, err := c.ui.ResolveDecideLater(ctx, &uiv1.ResolveDecideLaterRequest{Id: id, Rule: rules.ToProto(r)})
	if err != nil {
		return c.uiErr(err)
	}
	if c.json {
		c.emitJSON(res.GetRule())
		return nil
	}
	printRule(c.out, res.GetRule(), c.now(), c.loc)
	return nil
}
