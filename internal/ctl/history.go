package ctl

// watch and history: the rules service's decision history.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/inert"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

func (c *cli) watch(ctx context.Context, args []string) error {
	if ops, err := c.parse(c.flagSet("watch"), args); err != nil || len(ops) != 0 {
		return orUsage(err, "watch")
	}
	stream, err := c.ui.WatchHistory(ctx, &uiv1.WatchHistoryRequest{})
	if err != nil {
		return c.uiErr(err)
	}
	for {
		e, err := stream.Recv()
		if err != nil {
			return c.uiErr(err)
		}
		c.printHistory(e)
	}
}

// history prints the stored history: WatchHistory's backlog, which ends
// when the stream has been quiet for c.quiet (the backlog arrives in one
// burst) or ends.
func (c *cli) history(ctx context.Context, args []string) error {
	fs := c.flagSet("history")
	limit := fs.Int("limit", 0, "print only the newest N entries (0: all)")
	if ops, err := c.parse(fs, args); err != nil || len(ops) != 0 || *limit < 0 {
		return orUsage(err, "history [--limit N]")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.ui.WatchHistory(ctx, &uiv1.WatchHistoryRequest{})
	if err != nil {
		return c.uiErr(err)
	}
	type recv struct {
		e   *uiv1.HistoryEntry
		err error
	}
	ch := make(chan recv)
	go func() {
		for {
			e, err := stream.Recv()
			select {
			case ch <- recv{e, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var backlog []*uiv1.HistoryEntry
	idle := time.NewTimer(c.quiet)
	defer idle.Stop()
loop:
	for {
		select {
		case r := <-ch:
			if errors.Is(r.err, io.EOF) {
				break loop
			}
			if r.err != nil {
				return c.uiErr(r.err)
			}
			backlog = append(backlog, r.e)
			idle.Reset(c.quiet)
		case <-idle.C:
			break loop
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if *limit > 0 && len(backlog) > *limit {
		backlog = backlog[len(backlog)-*limit:]
	}
	if len(backlog) == 0 && !c.json {
		fmt.Fprintln(c.out, "No decisions yet.")
	}
	for _, e := range backlog {
		c.printHistory(e)
	}
	return nil
}

func (c *cli) printHistory(e *uiv1.HistoryEntry) {
	if c.json {
		c.emitJSON(e)
		return
	}
	by := decidedByLabel(e.GetDecidedBy())
	if e.GetRuleId() != "" && e.GetDecidedBy() != "rule:"+e.GetRuleId() {
		by += ", rule " + inert.String(e.GetRuleId())
	}
	fmt.Fprintf(c.out, "%s %-6s pid=%d %s -> %s %s (by %s)\n",
		e.GetTime().AsTime().In(c.loc).Format(time.DateTime), ruleActionName(e.GetAction()),
		e.GetProcess().GetTgid(), orDash(inert.String(apiconv.ExeText(e.GetProcess()))),
		flowProtoName(e.GetFlow()), flowDestination(e.GetFlow(), e.GetHost()), by)
}
