package ctl

// programs and program: what each program did, from the rules service's
// programs view (ListPrograms, GetProgram).

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/desktopentry"
	"github.com/bastion-fw/bastion/internal/inert"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// allHistory is how far back `program NAME` looks for the program NAME
// names: the longest history the rules service keeps (366 days).
const allHistory = 366 * 24 * time.Hour

// programSorts are the orders of `programs --sort`, each a comparison
// that puts the row first that should come first.
var programSorts = map[string]func(a, b *uiv1.ProgramSummary) int{
	"name":    nil, // by name alone
	"allowed": func(a, b *uiv1.ProgramSummary) int { return cmp.Compare(b.GetAllowed(), a.GetAllowed()) },
	"denied":  func(a, b *uiv1.ProgramSummary) int { return cmp.Compare(b.GetDenied(), a.GetDenied()) },
	"bytes": func(a, b *uiv1.ProgramSummary) int {
		return cmp.Compare(b.GetBytesSent()+b.GetBytesReceived(), a.GetBytesSent()+a.GetBytesReceived())
	},
	"last": func(a, b *uiv1.ProgramSummary) int {
		return b.GetLastActivity().AsTime().Compare(a.GetLastActivity().AsTime())
	},
}

// appIndex is the desktop-entry index, read on first use.
func (c *cli) appIndex() *desktopentry.Index {
	if c.apps == nil {
		home, _ := os.UserHomeDir()
		c.apps = desktopentry.Load(c.getenv, home)
	}
	return c.apps
}

// programName is the name people know a program by: its desktop entry's,
// else its executable's base name, else "[comm]"; made inert.
func (c *cli) programName(p *uiv1.ProgramSummary) string {
	if info, ok := c.appIndex().Lookup(p.GetExe()); ok {
		return inert.Elide(info.Name, 40)
	}
	if p.GetExe() != "" {
		return inert.Elide(path.Base(p.GetExe()), 40)
	}
	if p.GetComm() != "" {
		return "[" + inert.String(p.GetComm()) + "]"
	}
	return "unknown program"
}

// programKey is what names p to the rules service: its path, else its
// comm.
func programKey(p *uiv1.ProgramSummary) string {
	if p.GetExe() != "" {
		return p.GetExe()
	}
	return p.GetComm()
}

// programErr is uiErr that also explains a rules service too old for the
// programs view.
func (c *cli) programErr(err error) error {
	if status.Code(err) == codes.Unimplemented {
		return status.Errorf(codes.Unimplemented, "your rules service does not keep a programs view (it is older than this bastionctl); "+
			"update Bastion and restart it (`systemctl --user restart bastion-uiserver`)")
	}
	return c.uiErr(err)
}

func (c *cli) programs(ctx context.Context, args []string) error {
	const use = "programs [WORD...] [--since DURATION|TIME] [--sort name|allowed|denied|bytes|last]"
	fs := c.flagSet("programs")
	since := fs.String("since", "", "count from `WHEN`: "+whenHelp+" (default: today, since midnight)")
	sortBy := fs.String("sort", "last", "the `ORDER`: name, allowed, denied, bytes (sent and received) or last (latest activity first)")
	words, err := c.parse(fs, args)
	if err != nil {
		return orUsage(err, use)
	}
	order, ok := programSorts[*sortBy]
	if !ok {
		return fmt.Errorf("%w: --sort %q: sort by name, allowed, denied, bytes or last", errUsage, *sortBy)
	}
	req := &uiv1.ListProgramsRequest{}
	if *since != "" {
		t, err := parseWhen(*since, c.now(), c.loc)
		if err != nil {
			return fmt.Errorf("%w: --since %v", errUsage, err)
		}
		req.Since = timestamppb.New(t)
	}
	resp, err := c.ui.ListPrograms(ctx, req)
	if err != nil {
		return c.programErr(err)
	}
	all := len(resp.GetPrograms())
	var rows []*uiv1.ProgramSummary
	names := map[*uiv1.ProgramSummary]string{}
	for _, p := range resp.GetPrograms() {
		names[p] = c.programName(p)
		if matchesWords(words, names[p], p.GetExe(), p.GetComm()) {
			rows = append(rows, p)
		}
	}
	slices.SortStableFunc(rows, func(a, b *uiv1.ProgramSummary) int {
		if order != nil {
			if n := order(a, b); n != 0 {
				return n
			}
		}
		return cmp.Or(cmp.Compare(sortName(names[a]), sortName(names[b])), cmp.Compare(programKey(a), programKey(b)))
	})
	if c.json {
		c.emitJSON(&uiv1.ListProgramsResponse{Programs: rows, Since: resp.GetSince()})
		return nil
	}
	period := "today (since 00:00)"
	if resp.GetSince() != nil {
		period = periodText(resp.GetSince().AsTime(), c.now(), c.loc)
	}
	switch {
	case all == 0:
		fmt.Fprintf(c.out, "No program has made connections %s.\n", period)
		return nil
	case len(rows) == 0:
		fmt.Fprintf(c.out, "No program matches \"%s\" (%d made connections %s).\n", inert.String(strings.Join(words, " ")), all, period)
		return nil
	}
	what := "Programs"
	if len(words) > 0 {
		what = fmt.Sprintf("%d of %d programs", len(rows), all)
	}
	fmt.Fprintf(c.out, "%s %s, %s:\n", what, period, sortWords[*sortBy])
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROGRAM\tALLOWED\tDENIED\tDESTINATIONS\tSENT\tRECEIVED\tLAST ACTIVITY\tRULES\tPATH")
	for _, p := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%d\t%s\n", names[p], p.GetAllowed(), p.GetDenied(), p.GetDestinations(),
			humanBytes(p.GetBytesSent()), humanBytes(p.GetBytesReceived()), ago(p.GetLastActivity().AsTime(), c.now()),
			p.GetRules(), orDash(inert.Elide(p.GetExe(), 80)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.out, "`bastionctl program NAME` shows one program's destinations, rules and traffic.")
	return nil
}

// sortName is a name as it sorts: case folded, "[nc]" as nc.
func sortName(name string) string { return strings.ToLower(strings.Trim(name, "[]")) }

var sortWords = map[string]string{
	"name":    "by name",
	"allowed": "most allowed connections first",
	"denied":  "most denied connections first",
	"bytes":   "most bytes first",
	"last":    "latest activity first",
}

// matchesWords reports whether every word is in one of fields (case
// folded).
func matchesWords(words []string, fields ...string) bool {
	for _, w := range words {
		found := false
		for _, f := range fields {
			if strings.Contains(strings.ToLower(f), strings.ToLower(w)) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

var chartRanges = map[string]uiv1.ChartRange{
	"hour": uiv1.ChartRange_CHART_RANGE_HOUR,
	"day":  uiv1.ChartRange_CHART_RANGE_DAY,
	"week": uiv1.ChartRange_CHART_RANGE_WEEK,
}

func (c *cli) program(ctx context.Context, args []string) error {
	const use = "program NAME|PATH [--range hour|day|week] [--since DURATION|TIME]"
	fs := c.flagSet("program")
	rangeArg := fs.String("range", "day", "the traffic chart's `PERIOD`: hour (a column a minute), day (15 minutes) or week (an hour)")
	since := fs.String("since", "", "the summary counts from `WHEN`: "+whenHelp+" (default: today, since midnight)")
	ops, err := c.parse(fs, args)
	if err != nil || len(ops) != 1 || ops[0] == "" {
		return orUsage(err, use)
	}
	r, ok := chartRanges[*rangeArg]
	if !ok {
		return fmt.Errorf("%w: --range %q: the chart covers an hour, a day or a week (--range hour|day|week)", errUsage, *rangeArg)
	}
	req := &uiv1.GetProgramRequest{Range: r}
	if *since != "" {
		t, err := parseWhen(*since, c.now(), c.loc)
		if err != nil {
			return fmt.Errorf("%w: --since %v", errUsage, err)
		}
		req.Since = timestamppb.New(t)
	}
	if req.Program, err = c.resolveProgram(ctx, ops[0]); err != nil {
		return err
	}
	resp, err := c.ui.GetProgram(ctx, req)
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return c.noSuchProgram(ctx, ops[0])
		}
		return c.programErr(err)
	}
	if c.json {
		c.emitJSON(resp)
		return nil
	}
	period := "today (since 00:00)"
	if req.Since != nil {
		period = periodText(req.Since.AsTime(), c.now(), c.loc)
	}
	c.printProgram(resp, period, r)
	return nil
}

// resolveProgram finds the program name names among those the rules
// service has kept: a path is taken as it is; a name must be exactly one
// program's desktop-entry name (in any case), executable base name or
// comm. It returns what names that program to the service.
func (c *cli) resolveProgram(ctx context.Context, name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return name, nil
	}
	known, err := c.knownPrograms(ctx)
	if err != nil {
		return "", err
	}
	var exact []*uiv1.ProgramSummary
	for _, p := range known {
		if p.GetExe() == name || path.Base(p.GetExe()) == name || p.GetComm() == name || strings.EqualFold(c.programName(p), name) {
			exact = append(exact, p)
		}
	}
	switch len(exact) {
	case 0:
		// The service may know it by another name; it says when not.
		return name, nil
	case 1:
		return programKey(exact[0]), nil
	}
	return "", shownErrorf(codes.InvalidArgument, "\"%s\" names %d programs; give the path of the one you mean:\n%s",
		inert.String(name), len(exact), c.candidateLines(exact))
}

// knownPrograms lists every program the rules service keeps history of.
func (c *cli) knownPrograms(ctx context.Context) ([]*uiv1.ProgramSummary, error) {
	resp, err := c.ui.ListPrograms(ctx, &uiv1.ListProgramsRequest{Since: timestamppb.New(c.now().Add(-allHistory))})
	if err != nil {
		return nil, c.programErr(err)
	}
	return resp.GetPrograms(), nil
}

// noSuchProgram is the error for a name no program has: it lists the
// programs whose names contain it, or says how to list them all.
func (c *cli) noSuchProgram(ctx context.Context, name string) error {
	known, err := c.knownPrograms(ctx)
	if err != nil {
		return err
	}
	word := name
	if strings.HasPrefix(name, "/") {
		word = path.Base(name)
	}
	var near []*uiv1.ProgramSummary
	for _, p := range known {
		if matchesWords([]string{word}, c.programName(p), p.GetExe(), p.GetComm()) {
			near = append(near, p)
		}
	}
	msg := fmt.Sprintf("no program \"%s\" has made connections in the history your rules service keeps", inert.String(name))
	if len(near) == 0 {
		return shownErrorf(codes.NotFound, "%s; `bastionctl programs --since 30d` lists those that have", msg)
	}
	return shownErrorf(codes.NotFound, "%s; did you mean one of these?\n%s", msg, c.candidateLines(near))
}

// candidateLines lists programs one a line, by name and path, at most 20.
func (c *cli) candidateLines(ps []*uiv1.ProgramSummary) string {
	var b strings.Builder
	for i, p := range ps {
		if i == 20 {
			fmt.Fprintf(&b, "  ... and %d more", len(ps)-i)
			break
		}
		fmt.Fprintf(&b, "  %s  %s\n", c.programName(p), orDash(inert.Elide(programKey(p), 120)))
	}
	return strings.TrimRight(b.String(), "\n")
}

// printProgram prints one program's summary, rules, destinations and
// chart.
func (c *cli) printProgram(resp *uiv1.GetProgramResponse, period string, r uiv1.ChartRange) {
	p := resp.GetProgram()
	now := c.now()
	fmt.Fprintf(c.out, "%s  %s\n", c.programName(p), orDash(inert.String(p.GetExe())))
	if p.GetComm() != "" {
		fmt.Fprintf(c.out, "  process name: %s\n", inert.String(p.GetComm()))
	}
	dests := fmt.Sprintf("%d destinations", p.GetDestinations())
	if p.GetDestinations() == 1 {
		dests = "1 destination"
	}
	fmt.Fprintf(c.out, "  %s: %d allowed, %d denied, %s; sent %s, received %s; last activity %s\n",
		upperFirst(period), p.GetAllowed(), p.GetDenied(), dests, humanBytes(p.GetBytesSent()),
		humanBytes(p.GetBytesReceived()), ago(p.GetLastActivity().AsTime(), now))

	fmt.Fprintln(c.out)
	if len(resp.GetRules()) == 0 {
		fmt.Fprintln(c.out, "Rules: none name this program (`bastionctl rules add --exe PATH ...` makes one).")
	} else {
		fmt.Fprintf(c.out, "Rules (%d; change them with `bastionctl rules disable|enable|rm ID`):\n", len(resp.GetRules()))
		printRuleTable(c.out, resp.GetRules(), c.ruleNow(), c.loc)
	}

	fmt.Fprintln(c.out)
	if len(resp.GetDestinations()) == 0 {
		fmt.Fprintln(c.out, "Destinations: none in the kept history.")
	} else {
		fmt.Fprintf(c.out, "Destinations (%d, grouped by host, latest first):\n", len(resp.GetDestinations()))
		printDestinations(c.out, resp.GetDestinations(), now)
	}

	fmt.Fprintln(c.out)
	writeChart(c.out, resp, r, c.termWidth(), c.loc)
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// destinationGroup is what a destination is grouped under: its host name,
// else its address.
func destinationGroup(d *uiv1.Destination) string {
	if d.GetHost() != "" {
		return d.GetHost()
	}
	return d.GetAddress()
}

// printDestinations prints ds (latest first) grouped by host name, else
// address, the groups in the order of their latest destination.
func printDestinations(w io.Writer, ds []*uiv1.Destination, now time.Time) {
	var order []string
	groups := map[string][]*uiv1.Destination{}
	for _, d := range ds {
		g := destinationGroup(d)
		if _, ok := groups[g]; !ok {
			order = append(order, g)
		}
		groups[g] = append(groups[g], d)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST OR ADDRESS\tPORT\tALLOWED\tDENIED\tSENT\tRECEIVED\tFIRST SEEN\tLAST SEEN\tLAST DECISION")
	for _, g := range order {
		for i, d := range groups[g] {
			name := ""
			if i == 0 {
				name = inert.Elide(g, 60)
				if d.GetHost() != "" && d.GetAddress() != "" {
					name += " (" + inert.Elide(d.GetAddress(), 40) + ")"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", name, portText(d.GetProtocol(), d.GetPort()), d.GetAllowed(), d.GetDenied(),
				humanBytes(d.GetBytesSent()), humanBytes(d.GetBytesReceived()), ago(d.GetFirstSeen().AsTime(), now),
				ago(d.GetLastSeen().AsTime(), now), lastDecision(d))
		}
	}
	tw.Flush()
}

// portText is "tcp/443", or the protocol alone for one without ports.
func portText(p agentv1.Protocol, port uint32) string {
	name := flowProtoName(&agentv1.Flow{Protocol: p})
	if p == agentv1.Protocol_PROTOCOL_UNSPECIFIED {
		name = "?"
	}
	if port == 0 {
		return name
	}
	return name + "/" + strconv.FormatUint(uint64(port), 10)
}

// lastDecision is "allow, rule ID" / "deny, your answer".
func lastDecision(d *uiv1.Destination) string {
	by := decidedByLabel(d.GetDecidedBy())
	if d.GetRuleId() != "" && d.GetDecidedBy() != "rule:"+d.GetRuleId() {
		by += ", rule " + inert.String(d.GetRuleId())
	}
	return ruleActionName(d.GetLastAction()) + " (" + by + ")"
}

// termWidth is the width of the terminal on stdout, else $COLUMNS, else
// 80; at least 40.
func (c *cli) termWidth() int {
	if c.width > 0 {
		return c.width
	}
	if f, ok := c.out.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return max(int(ws.Col), 40)
		}
	}
	if n, err := strconv.Atoi(c.getenv("COLUMNS")); err == nil && n > 0 {
		return max(n, 40)
	}
	return 80
}
