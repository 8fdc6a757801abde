package gtkclient

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/gotk3/gotk3/gdk"
	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"
	"github.com/gotk3/gotk3/pango"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/inert"
	"github.com/bastion-fw/bastion/internal/rules"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Destination tree columns.
const (
	dColDest = iota
	dColPort
	dColProto
	dColConns
	dColSent
	dColRecv
	dColFirst
	dColLast
	dColAction
	dColBy
	dColActionColor
	dColIndex // the destination's index in resp.Destinations; -1 for a host's row over several
	dColGroup // the index of the host's group in groups
	dColTip
)

// Program rules columns.
const (
	prColEnabled = iota
	prColAction
	prColDest
	prColLifetime
	prColHits
	prColLastHit
	prColActionColor
)

var chartRanges = []uiv1.ChartRange{uiv1.ChartRange_CHART_RANGE_HOUR, uiv1.ChartRange_CHART_RANGE_DAY, uiv1.ChartRange_CHART_RANGE_WEEK}

// destGroup is a host's destinations (or an address's, when the host
// name is not known), most recently seen first.
type destGroup struct {
	name  string
	dests []int // indexes in resp.Destinations
}

// programDetail is one program: what it did today, its traffic chart,
// its destinations and its rules. It replaces the Programs list while
// open.
type programDetail struct {
	p       *programsPage
	key     string // the program shown; "" while closed
	summary *uiv1.ProgramSummary
	resp    *uiv1.GetProgramResponse
	rng     uiv1.ChartRange
	// asked counts the refreshes asked for; an answer to an older one is
	// dropped (another program, or another range, was asked for since).
	asked int
	icons map[string]*gdk.Pixbuf

	box       *gtk.Box
	icon      *gtk.Image
	name      *gtk.Label
	path      *gtk.Label
	today     *gtk.Label
	ranges    map[uiv1.ChartRange]*gtk.RadioButton
	conns     *gtk.Button
	chart     *trafficChart
	tabs      *gtk.Notebook
	destLabel *gtk.Label
	ruleLabel *gtk.Label
	problem   *gtk.Label

	destStore *gtk.TreeStore
	destView  *gtk.TreeView
	destShape []string // the rows' keys, to update them in place
	destIters []*gtk.TreeIter
	groups    []destGroup
	makeRule  *gtk.Button

	ruleStore *gtk.ListStore
	ruleView  *gtk.TreeView
	rules     []*rulesv1.Rule
	edit      *gtk.Button
	toggle    *gtk.Button
	del       *gtk.Button
}

func newProgramDetail(p *programsPage) *programDetail {
	d := &programDetail{p: p, rng: uiv1.ChartRange_CHART_RANGE_DAY, icons: map[string]*gdk.Pixbuf{},
		ranges: map[uiv1.ChartRange]*gtk.RadioButton{}}
	d.box = mustBox(gtk.ORIENTATION_VERTICAL, 8)
	d.box.SetMarginTop(10)
	d.box.SetMarginBottom(10)
	d.box.SetMarginStart(12)
	d.box.SetMarginEnd(12)
	// Escape and Alt+Left go back to the list, as in a browser.
	d.box.Connect("key-press-event", func(_ *gtk.Box, ev *gdk.Event) bool {
		k := gdk.EventKeyNewFromEvent(ev)
		if k.KeyVal() == gdk.KEY_Escape || (k.KeyVal() == gdk.KEY_Left && k.State()&uint(gdk.MOD1_MASK) != 0) {
			p.back()
			return true
		}
		return false
	})

	// Head: back, icon, name and path, and today's figures.
	head := mustBox(gtk.ORIENTATION_HORIZONTAL, 12)
	back, _ := gtk.ButtonNewFromIconName("go-previous-symbolic", gtk.ICON_SIZE_BUTTON)
	back.SetTooltipText("Back to all programs (Escape)")
	back.SetVAlign(gtk.ALIGN_CENTER)
	back.Connect("clicked", p.back)
	head.PackStart(back, false, false, 0)
	d.icon, _ = gtk.ImageNew()
	head.PackStart(d.icon, false, false, 0)
	names := mustBox(gtk.ORIENTATION_VERTICAL, 2)
	d.name = mustLabel("")
	d.name.SetXAlign(0)
	d.name.SetEllipsize(pango.ELLIPSIZE_END)
	d.path = mustLabel("")
	d.path.SetXAlign(0)
	d.path.SetSelectable(true)
	d.path.SetEllipsize(pango.ELLIPSIZE_MIDDLE)
	addClass(d.path, "dim-label")
	d.today = mustLabel("")
	d.today.SetXAlign(0)
	d.today.SetLineWrap(true)
	names.PackStart(d.name, false, false, 0)
	names.PackStart(d.path, false, false, 0)
	names.PackStart(d.today, false, false, 0)
	head.PackStart(names, true, true, 0)

	// The range of the chart: three linked toggle buttons.
	rb := mustBox(gtk.ORIENTATION_HORIZONTAL, 0)
	addClass(rb, "linked")
	rb.SetVAlign(gtk.ALIGN_CENTER)
	var group *gtk.RadioButton
	for _, r := range chartRanges {
		label := map[uiv1.ChartRange]string{uiv1.ChartRange_CHART_RANGE_HOUR: "_Hour",
			uiv1.ChartRange_CHART_RANGE_DAY: "Da_y", uiv1.ChartRange_CHART_RANGE_WEEK: "_Week"}[r]
		var b *gtk.RadioButton
		if group == nil {
			b, _ = gtk.RadioButtonNewWithMnemonic(nil, label)
			group = b
		} else {
			b, _ = gtk.RadioButtonNewWithMnemonicFromWidget(group, label)
		}
		b.SetMode(false)
		b.SetTooltipText("Traffic " + rangeWords(r))
		b.Connect("toggled", func() {
			if b.GetActive() && d.rng != r {
				d.setRange(r)
			}
		})
		d.ranges[r] = b
		rb.PackStart(b, false, false, 0)
	}
	d.ranges[d.rng].SetActive(true)
	head.PackEnd(rb, false, false, 0)
	d.conns = mustButton("_Connections…")
	d.conns.SetTooltipText("This program's connections on the Connections page")
	d.conns.SetVAlign(gtk.ALIGN_CENTER)
	d.conns.Connect("clicked", d.showConnections)
	head.PackEnd(d.conns, false, false, 0)
	d.box.PackStart(head, false, false, 0)

	d.problem = mustLabel("")
	addClass(d.problem, "bastion-error")
	d.problem.SetNoShowAll(true)
	d.box.PackStart(d.problem, false, false, 0)

	d.chart = newTrafficChart(p.m.a.loc)
	d.box.PackStart(d.chart.area, false, false, 0)

	d.tabs, _ = gtk.NotebookNew()
	d.destLabel, _ = gtk.LabelNewWithMnemonic("_Destinations")
	d.ruleLabel, _ = gtk.LabelNewWithMnemonic("_Rules")
	d.tabs.AppendPage(d.destinationsTab(), d.destLabel)
	d.tabs.AppendPage(d.rulesTab(), d.ruleLabel)
	d.box.PackStart(d.tabs, true, true, 0)
	return d
}

func (d *programDetail) destinationsTab() gtk.IWidget {
	page, bar := newPage()
	page.SetMarginTop(6)
	page.SetMarginBottom(4)
	page.SetMarginStart(4)
	page.SetMarginEnd(4)
	addHint(bar, "Where it connected to, grouped by host; the most recent first.")
	d.makeRule = mustButton("_Make a rule…")
	d.makeRule.SetTooltipText("A new rule for this program and the selected destination, to review and save")
	d.makeRule.Connect("clicked", d.ruleFromDestination)
	bar.PackEnd(d.makeRule, false, false, 0)
	page.PackStart(bar, false, false, 0)

	d.destStore, _ = gtk.TreeStoreNew(glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING,
		glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING,
		glib.TYPE_INT, glib.TYPE_INT, glib.TYPE_STRING)
	v, err := gtk.TreeViewNewWithModel(d.destStore)
	if err != nil {
		panic("gtk: create tree view: " + err.Error())
	}
	d.destView = v
	v.SetEnableSearch(false)
	v.SetTooltipColumn(dColTip)
	textColumn(v, "Destination", dColDest, true, -1)
	v.GetColumn(0).SetMinWidth(230)
	for _, c := range []struct {
		title string
		col   int
		right bool
	}{{"Port", dColPort, true}, {"Protocol", dColProto, false}, {"Connections", dColConns, true}, {"Sent", dColSent, true},
		{"Received", dColRecv, true}, {"First seen", dColFirst, false}, {"Last seen", dColLast, false}} {
		r := textColumn(v, c.title, c.col, false, -1)
		if c.right {
			r.SetProperty("xalign", 1.0)
		}
	}
	textColumn(v, "Last", dColAction, false, dColActionColor)
	by := textColumn(v, "Decided by", dColBy, true, -1)
	by.SetProperty("ellipsize", pango.ELLIPSIZE_END)
	v.Connect("row-activated", d.ruleFromDestination)
	sel, _ := v.GetSelection()
	sel.Connect("changed", d.destSelectionChanged)
	sw := mustScrolled()
	sw.Add(v)
	page.PackStart(sw, true, true, 0)
	return page
}

func (d *programDetail) rulesTab() gtk.IWidget {
	page, bar := newPage()
	page.SetMarginTop(6)
	page.SetMarginBottom(4)
	page.SetMarginStart(4)
	page.SetMarginEnd(4)
	addHint(bar, "The rules that name this program.")
	d.edit = mustButton("_Edit…")
	d.toggle = mustButton("Dis_able")
	d.del = mustButton("De_lete")
	d.edit.Connect("clicked", d.editRule)
	d.toggle.Connect("clicked", func() {
		if r := d.selectedRule(); r != nil {
			d.setEnabled(r.GetId(), !r.GetEnabled())
		}
	})
	d.del.Connect("clicked", d.deleteRule)
	for _, b := range []*gtk.Button{d.del, d.toggle, d.edit} {
		bar.PackEnd(b, false, false, 0)
	}
	page.PackStart(bar, false, false, 0)
	d.ruleStore, _ = gtk.ListStoreNew(glib.TYPE_BOOLEAN, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING,
		glib.TYPE_STRING, glib.TYPE_STRING)
	d.ruleView = newListView(d.ruleStore)
	toggle, _ := gtk.CellRendererToggleNew()
	on, _ := gtk.TreeViewColumnNewWithAttribute("On", toggle, "active", prColEnabled)
	d.ruleView.AppendColumn(on)
	toggle.Connect("toggled", func(_ *gtk.CellRendererToggle, path string) {
		var i int
		if _, err := fmt.Sscan(path, &i); err == nil && i >= 0 && i < len(d.rules) {
			d.setEnabled(d.rules[i].GetId(), !d.rules[i].GetEnabled())
		}
	})
	textColumn(d.ruleView, "Action", prColAction, false, prColActionColor)
	textColumn(d.ruleView, "Destination", prColDest, true, -1)
	textColumn(d.ruleView, "Lifetime", prColLifetime, false, -1)
	hits := textColumn(d.ruleView, "Hits", prColHits, false, -1)
	hits.SetProperty("xalign", 1.0)
	textColumn(d.ruleView, "Last hit", prColLastHit, false, -1)
	d.ruleView.Connect("row-activated", d.editRule)
	sel, _ := d.ruleView.GetSelection()
	sel.Connect("changed", d.ruleSelectionChanged)
	sw := mustScrolled()
	sw.Add(d.ruleView)
	page.PackStart(sw, true, true, 0)
	d.ruleSelectionChanged()
	return page
}

// show opens program key, with its summary from the list while its
// detail is asked for.
func (d *programDetail) show(key string, s *uiv1.ProgramSummary) {
	if d.key != key {
		d.resp = nil
		d.destStore.Clear()
		d.destShape, d.destIters, d.groups = nil, nil, nil
		d.ruleStore.Clear()
		d.rules = nil
		d.chart.set(nil, 0, d.rng)
		d.tabs.SetCurrentPage(0)
	}
	d.key = key
	if s == nil {
		s = &uiv1.ProgramSummary{Exe: key}
		if c, ok := strings.CutPrefix(key, "comm:"); ok {
			s = &uiv1.ProgramSummary{Comm: c}
		}
	}
	d.summary = s
	d.fillHead()
	d.problem.Hide()
	d.destSelectionChanged()
	d.ruleSelectionChanged()
	d.refresh()
	d.destView.GrabFocus()
}

// showConnections shows the program's connections on the Connections
// page.
func (d *programDetail) showConnections() {
	if d.key != "" {
		d.p.m.showConnectionsFor(programRequestName(d.key))
	}
}

// setRange shows the chart over another range.
func (d *programDetail) setRange(r uiv1.ChartRange) {
	d.rng = r
	if b := d.ranges[r]; !b.GetActive() {
		b.SetActive(true)
	}
	d.refresh()
}

// refresh asks for the program again, for the range shown.
func (d *programDetail) refresh() {
	if d.key == "" || !d.p.m.a.up {
		return
	}
	d.asked++
	ask, key, rng := d.asked, d.key, d.rng
	call(d.p.m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.GetProgramResponse, error) {
		return ui.GetProgram(ctx, &uiv1.GetProgramRequest{Program: programRequestName(key), Range: rng})
	}, func(resp *uiv1.GetProgramResponse, err error) {
		if ask != d.asked || d.key != key || d.p.m.a.main != d.p.m {
			return // asked again since
		}
		if err != nil {
			d.p.m.a.log.Warn("get program", "err", err, "exe", programRequestName(key))
			d.problem.SetText("Could not read this program's traffic: " + statusMessage(err))
			d.problem.Show()
			return
		}
		d.problem.Hide()
		d.resp = resp
		if resp.GetProgram() != nil {
			d.summary = resp.GetProgram()
		}
		d.fillHead()
		d.chart.set(resp.GetChart(), resp.GetBucket().AsDuration(), rng)
		d.fillDestinations()
		d.fillRules()
	})
}

// fillHead shows the program's name, path and today's figures.
func (d *programDetail) fillHead() {
	s := d.summary
	name, icon := d.p.m.a.programName(s)
	d.name.SetMarkup("<span size='x-large' weight='bold'>" + glib.MarkupEscapeText(inert.Elide(name, 80)) + "</span>")
	where := s.GetExe()
	if where == "" {
		where = "executable unknown; the kernel named the process " + s.GetComm()
	}
	d.path.SetText(inert.String(where))
	d.icon.SetFromPixbuf(loadIcon(d.icons, icon, s.GetExe(), 48))
	d.today.SetText(d.todayText())
	d.destLabel.SetMarkupWithMnemonic(fmt.Sprintf("_Destinations (%d)", len(d.resp.GetDestinations())))
	d.ruleLabel.SetMarkupWithMnemonic(fmt.Sprintf("_Rules (%d)", s.GetRules()))
}

// todayText sums up the program's day in one line.
func (d *programDetail) todayText() string {
	s := d.summary
	now := d.p.m.a.now()
	parts := []string{fmt.Sprintf("Today: %s allowed, %s denied", countText(s.GetAllowed()), countText(s.GetDenied())),
		countOf(uint64(s.GetDestinations()), "destination", "destinations"),
		"received " + humanBytes(s.GetBytesReceived()) + ", sent " + humanBytes(s.GetBytesSent()),
		"last active " + lastActivityText(s, now, d.p.m.a.loc),
		countOf(uint64(s.GetRules()), "rule", "rules")}
	for i, p := range parts {
		parts[i] = keepTogether(p)
	}
	return strings.Join(parts, " · ")
}

// keepTogether makes the spaces of s unbreakable, except after a comma or
// a colon: a wrapped line breaks between figures, not inside "last active
// 10s ago".
func keepTogether(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r == ' ' && i > 0 && s[i-1] != ',' && s[i-1] != ':' {
			r = '\u00a0'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// countOf is "1 rule", "12 rules".
func countOf(n uint64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return countText(n) + " " + many
}

// refreshTimes redraws the relative times.
func (d *programDetail) refreshTimes() {
	if d.key == "" {
		return
	}
	d.today.SetText(d.todayText())
	if d.resp != nil {
		d.fillDestinations()
		d.fillRules()
	}
}

// groupDestinations groups ds by host name, or by address when the name
// is not known; groups keep the order of their most recent destination.
func groupDestinations(ds []*uiv1.Destination) []destGroup {
	var out []destGroup
	at := map[string]int{}
	for i, x := range ds {
		name := x.GetHost()
		if name == "" {
			name = x.GetAddress()
		}
		j, ok := at[name]
		if !ok {
			j = len(out)
			at[name] = j
			out = append(out, destGroup{name: name})
		}
		out[j].dests = append(out[j].dests, i)
	}
	return out
}

// destRow is one row of the destinations tree.
type destRow struct {
	key      string
	child    bool
	index    int
	group    int
	values   []interface{}
	expanded bool
}

var destCols = []int{dColDest, dColPort, dColProto, dColConns, dColSent, dColRecv, dColFirst, dColLast, dColAction, dColBy,
	dColActionColor, dColIndex, dColGroup, dColTip}

// destValues are the cells of a destination row, or of a host's row over
// several (index -1).
func (d *programDetail) destValues(name string, ds []*uiv1.Destination, index, group int) []interface{} {
	now, loc := d.p.m.a.now(), d.p.m.a.loc
	var (
		allowed, denied, sent, recv uint64
		first, last                 time.Time
		ports, protos               []string
		addrs                       []string
	)
	for _, x := range ds {
		allowed += x.GetAllowed()
		denied += x.GetDenied()
		sent += x.GetBytesSent()
		recv += x.GetBytesReceived()
		if f := x.GetFirstSeen().AsTime(); first.IsZero() || f.Before(first) {
			first = f
		}
		if l := x.GetLastSeen().AsTime(); l.After(last) {
			last = l
		}
		port := "-"
		if x.GetPort() != 0 {
			port = fmt.Sprint(x.GetPort())
		}
		if !slices.Contains(ports, port) {
			ports = append(ports, port)
		}
		if p := displayProto(apiconv.Proto(x.GetProtocol(), 0)); !slices.Contains(protos, p) {
			protos = append(protos, p)
		}
		if a := x.GetAddress(); a != "" && !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	latest := ds[0] // most recently seen first
	conns := countText(allowed)
	switch {
	case denied > 0 && allowed == 0:
		conns = countText(denied) + " denied"
	case denied > 0:
		conns += " + " + countText(denied) + " denied"
	}
	by, tip := d.p.m.decidedByOrNil(latest)
	if tip == "" {
		tip = by
	}
	if len(addrs) > 0 {
		tip = "Address " + strings.Join(addrs, ", ") + "\n" + tip
	}
	return []interface{}{inert.String(name), strings.Join(ports, ", "), strings.Join(protos, ", "), conns, humanBytes(sent),
		humanBytes(recv), ago(first, now, loc), ago(last, now, loc), capitalize(actionName(latest.GetLastAction())), by,
		actionColor(latest.GetLastAction()), index, group, glib.MarkupEscapeText(inert.String(tip))}
}

// decidedByOrNil says who decided a destination's latest connection.
func (m *mainWindow) decidedByOrNil(x *uiv1.Destination) (text, tooltip string) {
	lookup := m.ruleByID
	if m.rules == nil {
		lookup = nil
	}
	return decidedByText(x.GetDecidedBy(), x.GetRuleId(), lookup, m.a.status.GetUid(), m.a.now(), m.a.loc)
}

func destKey(x *uiv1.Destination) string {
	return fmt.Sprintf("%s\x00%s\x00%d\x00%d", x.GetHost(), x.GetAddress(), x.GetProtocol(), x.GetPort())
}

// fillDestinations shows the destinations, grouped by host. When the
// rows are the same as before only their cells change, so that the
// selection, what is expanded and the scroll position stay.
func (d *programDetail) fillDestinations() {
	ds := d.resp.GetDestinations()
	d.groups = groupDestinations(ds)
	var rows []destRow
	for g, grp := range d.groups {
		if len(grp.dests) == 1 {
			i := grp.dests[0]
			rows = append(rows, destRow{key: destKey(ds[i]), index: i, group: g, values: d.destValues(grp.name, ds[i:i+1], i, g)})
			continue
		}
		var sub []*uiv1.Destination
		for _, i := range grp.dests {
			sub = append(sub, ds[i])
		}
		rows = append(rows, destRow{key: "host\x00" + grp.name, index: -1, group: g, values: d.destValues(grp.name, sub, -1, g),
			expanded: true})
		for _, i := range grp.dests {
			addr := ds[i].GetAddress()
			rows = append(rows, destRow{key: destKey(ds[i]), child: true, index: i, group: g,
				values: d.destValues(addr, ds[i:i+1], i, g)})
		}
	}
	shape := make([]string, len(rows))
	for i, r := range rows {
		shape[i] = r.key
		if r.child {
			shape[i] = "child\x00" + r.key
		}
	}
	if slices.Equal(shape, d.destShape) {
		for i, r := range rows {
			for j, c := range destCols {
				d.destStore.SetValue(d.destIters[i], c, r.values[j])
			}
		}
		return
	}
	keep := d.selectedDestKey()
	d.destStore.Clear()
	d.destIters = d.destIters[:0]
	var parent *gtk.TreeIter
	var expand []*gtk.TreeIter
	for _, r := range rows {
		var it *gtk.TreeIter
		if r.child {
			it = d.destStore.Append(parent)
		} else {
			it = d.destStore.Append(nil)
			parent = it
			if r.expanded {
				expand = append(expand, it)
			}
		}
		for j, c := range destCols {
			d.destStore.SetValue(it, c, r.values[j])
		}
		d.destIters = append(d.destIters, it)
	}
	d.destShape = shape
	for _, it := range expand {
		if p, err := d.destStore.GetPath(it); err == nil {
			d.destView.ExpandRow(p, false)
		}
	}
	if keep != "" {
		for i, k := range shape {
			if k == keep {
				sel, _ := d.destView.GetSelection()
				sel.SelectIter(d.destIters[i])
			}
		}
	}
	d.destSelectionChanged()
}

// selectedDest is the selected row: a destination's index (-1 for a
// host's row over several) and its group; ok is false without one.
func (d *programDetail) selectedDest() (index, group int, ok bool) {
	sel, _ := d.destView.GetSelection()
	model, it, ok := sel.GetSelected()
	if !ok {
		return 0, 0, false
	}
	get := func(col int) int {
		v, err := model.ToTreeModel().GetValue(it, col)
		if err != nil {
			return -2
		}
		i, _ := v.GoValue()
		n, _ := i.(int)
		return n
	}
	index, group = get(dColIndex), get(dColGroup)
	if group < 0 || group >= len(d.groups) || index >= len(d.resp.GetDestinations()) || index < -1 {
		return 0, 0, false
	}
	return index, group, true
}

func (d *programDetail) selectedDestKey() string {
	index, group, ok := d.selectedDest()
	switch {
	case !ok:
		return ""
	case index < 0:
		return "host\x00" + d.groups[group].name
	case len(d.groups[group].dests) > 1:
		return "child\x00" + destKey(d.resp.GetDestinations()[index])
	}
	return destKey(d.resp.GetDestinations()[index])
}

// selectDest selects the row of a destination, or of a host's group when
// port is 0 (tests).
func (d *programDetail) selectDest(host string, port uint32) bool {
	for i, k := range d.destShape {
		parts := strings.Split(strings.TrimPrefix(k, "child\x00"), "\x00")
		match := false
		switch {
		case port == 0:
			match = k == "host\x00"+host
		case len(parts) == 4:
			name := parts[0]
			if name == "" {
				name = parts[1]
			}
			match = name == host && parts[3] == fmt.Sprint(port)
		}
		if match {
			sel, _ := d.destView.GetSelection()
			sel.SelectIter(d.destIters[i])
			return true
		}
	}
	return false
}

func (d *programDetail) destSelectionChanged() {
	_, _, ok := d.selectedDest()
	canRule := ok && d.summary.GetExe() != ""
	d.makeRule.SetSensitive(canRule)
	if d.summary.GetExe() == "" {
		d.makeRule.SetTooltipText("The program's executable is not known, so no rule can name it.")
	} else {
		d.makeRule.SetTooltipText("A new rule for this program and the selected destination, to review and save")
	}
}

// ruleFromDestination opens the rule dialog with the rule a prompt answer
// would make for this program and the selected destination: its port and
// protocol for a destination's row, any port for a host's row over
// several; with the action its latest connection got.
func (d *programDetail) ruleFromDestination() {
	index, group, ok := d.selectedDest()
	if !ok || d.summary.GetExe() == "" {
		return
	}
	scope := rules.ScopeDestinationPort
	if index < 0 {
		scope = rules.ScopeHost
		index = d.groups[group].dests[0]
	}
	x := d.resp.GetDestinations()[index]
	fl := &agentv1.Flow{Protocol: x.GetProtocol(), DstIp: x.GetAddress(), DstPort: x.GetPort(), IpVersion: 4}
	if a, err := netip.ParseAddr(x.GetAddress()); err == nil && a.Is6() && !a.Is4In6() {
		fl.IpVersion = 6
	}
	act := flow.ActionDeny
	switch x.GetLastAction() {
	case rulesv1.Action_ACTION_ALLOW:
		act = flow.ActionAllow
	case rulesv1.Action_ACTION_REJECT:
		act = flow.ActionReject
	}
	m := d.p.m
	proc := &agentv1.Process{Exe: d.summary.GetExe(), Comm: d.summary.GetComm()}
	r, err := rules.ForPrompt(apiconv.Process(proc), apiconv.Tuple(fl), x.GetHost(),
		rules.Choice{Action: act, Lifetime: rules.Forever, Scope: scope}, m.a.now())
	if err != nil {
		m.fail("Cannot make a rule for this destination", err)
		return
	}
	r.Created = time.Time{}
	m.lastDialog = newRuleDialog(m.win, "New rule", rules.ToProto(r), m.a.now, d.addRule)
}

// addRule adds a rule made here, then shows it in the program's rules.
func (d *programDetail) addRule(r *rulesv1.Rule) {
	m := d.p.m
	call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.AddRuleResponse, error) {
		return ui.AddRule(ctx, &uiv1.AddRuleRequest{Rule: r})
	}, func(resp *uiv1.AddRuleResponse, err error) {
		if err != nil {
			m.fail("Could not add the rule", err)
			return
		}
		m.showNotice(gtk.MESSAGE_INFO, "Rule added: "+inert.String(capitalize(actionName(resp.GetRule().GetAction()))+" "+
			ruleSentence(resp.GetRule(), m.a.now(), m.a.loc)), nil)
		m.refreshRules()
		d.refresh()
	})
}

// fillRules shows the program's rules, keeping the selection.
func (d *programDetail) fillRules() {
	keep := ""
	if r := d.selectedRule(); r != nil {
		keep = r.GetId()
	}
	now := d.p.m.a.now()
	newRules := d.resp.GetRules()
	same := len(newRules) == len(d.rules)
	for i := 0; same && i < len(newRules); i++ {
		same = newRules[i].GetId() == d.rules[i].GetId()
	}
	d.rules = newRules
	values := func(r *rulesv1.Rule) []interface{} {
		color := actionColor(r.GetAction())
		if !r.GetEnabled() {
			color = "#888888"
		}
		dest := ruleDestination(r)
		if r.GetCmdline() != "" {
			dest += "  [command line " + inert.Elide(r.GetCmdline(), 40) + "]"
		}
		return []interface{}{r.GetEnabled(), capitalize(actionName(r.GetAction())), inert.String(dest), ruleLifetime(r, now),
			countText(r.GetHits()), lastHitText(r, now, d.p.m.a.loc), color}
	}
	cols := []int{prColEnabled, prColAction, prColDest, prColLifetime, prColHits, prColLastHit, prColActionColor}
	if same {
		it, ok := d.ruleStore.GetIterFirst()
		for i := 0; ok && i < len(d.rules); i++ {
			d.ruleStore.Set(it, cols, values(d.rules[i]))
			ok = d.ruleStore.IterNext(it)
		}
	} else {
		d.ruleStore.Clear()
		sel, _ := d.ruleView.GetSelection()
		for _, r := range d.rules {
			it := d.ruleStore.Append()
			d.ruleStore.Set(it, cols, values(r))
			if r.GetId() == keep {
				sel.SelectIter(it)
			}
		}
	}
	d.ruleSelectionChanged()
}

func (d *programDetail) selectedRule() *rulesv1.Rule {
	i := selectedIndex(d.ruleView)
	if i < 0 || i >= len(d.rules) {
		return nil
	}
	return d.rules[i]
}

func (d *programDetail) ruleSelectionChanged() {
	r := d.selectedRule()
	ok := r != nil
	d.edit.SetSensitive(ok)
	d.toggle.SetSensitive(ok)
	d.del.SetSensitive(ok)
	if ok && !r.GetEnabled() {
		d.toggle.SetLabel("En_able")
	} else {
		d.toggle.SetLabel("Dis_able")
	}
}

func (d *programDetail) editRule() {
	r := d.selectedRule()
	if r == nil {
		return
	}
	m := d.p.m
	m.lastDialog = newRuleDialog(m.win, "Edit rule", r, m.a.now, func(nr *rulesv1.Rule) {
		call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.UpdateRuleResponse, error) {
			return ui.UpdateRule(ctx, &uiv1.UpdateRuleRequest{Rule: nr})
		}, func(_ *uiv1.UpdateRuleResponse, err error) {
			if err != nil {
				m.fail("Could not save the rule", err)
				return
			}
			m.showNotice(gtk.MESSAGE_INFO, "Rule saved.", nil)
			m.refreshRules()
			d.refresh()
		})
	})
}

func (d *programDetail) setEnabled(id string, on bool) {
	m := d.p.m
	call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.SetRuleEnabledResponse, error) {
		return ui.SetRuleEnabled(ctx, &uiv1.SetRuleEnabledRequest{Id: id, Enabled: on})
	}, func(_ *uiv1.SetRuleEnabledResponse, err error) {
		if err != nil {
			m.fail("Could not change the rule", err)
			return
		}
		m.refreshRules()
		d.refresh()
	})
}

// deleteRule deletes the selected rule at once and offers to undo it, as
// the Rules page does.
func (d *programDetail) deleteRule() {
	if r := d.selectedRule(); r != nil {
		m := d.p.m
		m.deleteRuleUndoably(r, d.addRule, func() {
			m.refreshRules()
			d.refresh()
		})
	}
}
