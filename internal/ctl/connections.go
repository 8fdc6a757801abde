package ctl

// connections: search the stored history of decisions (QueryConnections)
// and export it as CSV or JSON.

import (
	"context"
	"encoding/csv"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/inert"
	"github.com/bastion-fw/bastion/internal/rules"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// maxConnections is the most entries one query asks for (the service's
// own bound).
const maxConnections = 100000

// csvHeader names the columns of `connections --csv`.
var csvHeader = []string{"time", "action", "exe", "comm", "pid", "uid", "cmdline", "protocol",
	"src_ip", "src_port", "dst_ip", "dst_port", "host", "decided_by", "rule_id"}

func (c *cli) connections(ctx context.Context, args []string) error {
	const use = "connections [TEXT...] [--program NAME|PATH] [--host TEXT] [--action allow|deny|reject] " +
		"[--since WHEN] [--until WHEN] [--rule ID] [--limit N] [--csv]"
	fs := c.flagSet("connections")
	program := fs.String("program", "", "only the program with this `NAME` (as bastionctl programs shows it) or path")
	host := fs.String("host", "", "only destinations whose host name or address contains `TEXT`")
	action := fs.String("action", "", "only this `ACTION`: allow, deny (deny and reject) or reject")
	since := fs.String("since", "", "only from `WHEN` on: "+whenHelp)
	until := fs.String("until", "", "only until `WHEN`, in the forms of --since")
	rule := fs.String("rule", "", "only connections the rule `ID` decided")
	limit := fs.Int("limit", 1000, "at most `N`, the newest (1 to 100000)")
	asCSV := fs.Bool("csv", false, "print CSV (a header line, then one line a connection) instead of a table")
	words, err := c.parse(fs, args)
	if err != nil {
		return orUsage(err, use)
	}
	if *limit < 1 || *limit > maxConnections {
		return fmt.Errorf("%w: --limit %d: give 1 to %d", errUsage, *limit, maxConnections)
	}
	if *asCSV && c.json {
		return fmt.Errorf("%w: --csv and --json both given; choose one", errUsage)
	}
	f := &uiv1.ConnectionFilter{Host: *host, RuleId: *rule, Text: strings.Join(words, " ")}
	if *action != "" {
		a, err := flow.ParseAction(*action)
		if err != nil {
			return fmt.Errorf("%w: --action %q: give allow, deny or reject", errUsage, *action)
		}
		f.Action = rules.ActionProto(a)
	}
	now := c.now()
	for _, w := range []struct {
		name, value string
		to          **timestamppb.Timestamp
	}{{"since", *since, &f.Since}, {"until", *until, &f.Until}} {
		if w.value == "" {
			continue
		}
		t, err := parseWhen(w.value, now, c.loc)
		if err != nil {
			return fmt.Errorf("%w: --%s %v", errUsage, w.name, err)
		}
		*w.to = timestamppb.New(t)
	}
	if f.Since != nil && f.Until != nil && f.Until.AsTime().Before(f.Since.AsTime()) {
		return fmt.Errorf("%w: --until is before --since", errUsage)
	}
	if *program != "" {
		if f.Program, err = c.resolveProgram(ctx, *program); err != nil {
			return err
		}
	}
	resp, err := c.ui.QueryConnections(ctx, &uiv1.QueryConnectionsRequest{Filter: f, Limit: uint32(*limit)})
	if err != nil {
		if status.Code(err) == codes.NotFound && *program != "" {
			return c.noSuchProgram(ctx, *program)
		}
		return c.programErr(err)
	}
	switch {
	case c.json:
		c.emitJSON(resp)
		return nil
	case *asCSV:
		if err := c.writeCSV(resp.GetEntries()); err != nil {
			return err
		}
	case len(resp.GetEntries()) == 0:
		fmt.Fprintln(c.out, "No connections match.")
		return nil
	default:
		for _, e := range resp.GetEntries() {
			c.printHistory(e)
		}
	}
	if resp.GetTruncated() {
		fmt.Fprintf(c.errOut, "bastionctl: these are the newest %d; more match (narrow the search, or raise --limit up to %d)\n",
			len(resp.GetEntries()), maxConnections)
	}
	return nil
}

// writeCSV writes entries as CSV. Text cells go through inert, like the
// table (--json has the exact values), and a cell a spreadsheet would
// take for a formula (=, +, -, @ first) starts with an apostrophe.
func (c *cli) writeCSV(entries []*uiv1.HistoryEntry) error {
	w := csv.NewWriter(c.out)
	if err := w.Write(csvHeader); err != nil {
		return err
	}
	text := func(s string) string {
		s = inert.String(s)
		if s != "" && strings.ContainsRune("=+-@", rune(s[0])) {
			return "'" + s
		}
		return s
	}
	num := func(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
	for _, e := range entries {
		p, fl := e.GetProcess(), e.GetFlow()
		if err := w.Write([]string{
			e.GetTime().AsTime().UTC().Format(time.RFC3339Nano), ruleActionName(e.GetAction()),
			text(p.GetExe()), text(p.GetComm()), num(p.GetTgid()), num(p.GetUid()), text(strings.Join(p.GetArgs(), " ")),
			flowProtoName(fl), text(fl.GetSrcIp()), num(fl.GetSrcPort()), text(fl.GetDstIp()), num(fl.GetDstPort()),
			text(e.GetHost()), text(e.GetDecidedBy()), text(e.GetRuleId()),
		}); err != nil {
			return err
		}
	}
	w.Flush()
	return w.Error()
}
