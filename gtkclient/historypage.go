package gtkclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/inert"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// The Connections page lists the decisions that match its filters, newest
// first: the older ones the rules service finds (QueryConnections), and
// the live ones as WatchHistory brings them. A live row is added without
// moving what the user looks at when they scrolled away from the newest or
// selected a row; "N new" then brings them to the newest.

// connQueryLimit is how many of the newest matching decisions the page
// asks the rules service for.
const connQueryLimit = 2000

// connRowsCap bounds the page's rows: the query's and the live ones added
// since. Past it, the oldest rows are dropped.
const connRowsCap = connQueryLimit + historyCap

// programChoicesCap bounds the program filter's list.
const programChoicesCap = 200

// connPage is the Connections page's state; GTK thread only.
type connPage struct {
	search  *gtk.SearchEntry
	program *gtk.ComboBoxText // with an entry: a path, or a name
	host    *gtk.SearchEntry
	action  *gtk.ComboBoxText
	period  *gtk.ComboBoxText
	custom  *gtk.Box // the "Between…" range's fields
	since   *gtk.Entry
	until   *gtk.Entry
	by      *gtk.ComboBoxText
	count   *gtk.Label
	newer   *gtk.Button // "N new"
	scroll  *gtk.ScrolledWindow

	filter connFilter
	// filterErr says what is wrong with the filters as written; no query
	// is made while it is set.
	filterErr string
	// limit is how many rows a query asks for (connQueryLimit; tests
	// lower it).
	limit uint32
	// gen counts the queries; an answer to an older one is dropped.
	// answered is the gen of the last answer shown.
	gen, answered int
	asked         *uiv1.QueryConnectionsRequest // the last query made
	queried       []*uiv1.HistoryEntry          // the last answer, newest first
	truncated     bool
	queryErr      error

	rows    map[int]*uiv1.HistoryEntry // by the row's hColIndex
	keys    map[string]bool            // connKey of the rows
	nextRow int
	unseen  int // rows added above the newest while the user looked elsewhere

	// anchor is the row the user looks at while new rows are added above
	// it, and where its top was in the view: the list is scrolled to keep
	// it there as the tree view lays the new rows out.
	anchor *connAnchor

	programTimer glib.SourceHandle // waits for the typing to pause
	settingUp    bool              // filters being set by code: no query per field
}

func (m *mainWindow) historyPage() gtk.IWidget {
	c := &connPage{rows: map[int]*uiv1.HistoryEntry{}, keys: map[string]bool{}, limit: connQueryLimit}
	m.conn = c
	page, bar := newPage()
	addHint(bar, "Decisions, newest first: what was allowed or denied, and by which rule or answer.")
	exp := mustButton("_Export…")
	exp.SetTooltipText("Save the connections shown to a CSV or JSON file")
	exp.Connect("clicked", m.exportConnections)
	mk := mustButton("_Make a rule from this…")
	mk.Connect("clicked", m.ruleFromHistory)
	bar.PackEnd(mk, false, false, 0)
	bar.PackEnd(exp, false, false, 0)
	page.PackStart(bar, false, false, 0)

	filters := mustBox(gtk.ORIENTATION_HORIZONTAL, 6)
	labeled := func(box *gtk.Box, key string, w gtk.IWidget) {
		k, _ := gtk.LabelNewWithMnemonic(key)
		k.SetMnemonicWidget(w)
		box.PackStart(k, false, false, 0)
		box.PackStart(w, false, false, 0)
		k.SetMarginStart(6)
	}
	c.search, _ = gtk.SearchEntryNew()
	c.search.SetPlaceholderText("Words in any column")
	c.search.SetWidthChars(22)
	c.search.Connect("search-changed", m.connFiltersChanged)
	labeled(filters, "_Find", c.search)
	c.program, _ = gtk.ComboBoxTextNewWithEntry()
	if e, err := c.program.GetEntry(); err == nil {
		e.SetPlaceholderText("All programs")
		e.SetWidthChars(22)
		e.Connect("changed", m.connProgramTyped)
	}
	labeled(filters, "_Program", c.program)
	c.host, _ = gtk.SearchEntryNew()
	c.host.SetPlaceholderText("Name or address")
	c.host.SetWidthChars(16)
	c.host.Connect("search-changed", m.connFiltersChanged)
	labeled(filters, "H_ost", c.host)
	page.PackStart(filters, false, false, 0)

	more := mustBox(gtk.ORIENTATION_HORIZONTAL, 6)
	c.action = mustCombo()
	c.action.Append("", "All")
	c.action.Append("allow", "Allowed")
	c.action.Append("deny", "Denied")
	c.action.SetActiveID("")
	c.action.Connect("changed", m.connFiltersChanged)
	labeled(more, "_Action", c.action)
	c.period = mustCombo()
	for _, r := range timeRanges {
		c.period.Append(r.id, r.label)
	}
	c.period.SetActiveID("all")
	c.period.Connect("changed", m.connPeriodChanged)
	labeled(more, "_Time", c.period)
	c.custom = mustBox(gtk.ORIENTATION_HORIZONTAL, 6)
	c.since, _ = gtk.EntryNew()
	c.until, _ = gtk.EntryNew()
	for _, e := range []*gtk.Entry{c.since, c.until} {
		e.SetWidthChars(16)
		e.SetPlaceholderText(m.a.now().In(m.a.loc).Format("2006-01-02 15:04"))
		e.Connect("activate", m.connFiltersChanged)
		e.Connect("focus-out-event", func() bool { m.connFiltersChanged(); return false })
	}
	c.until.SetPlaceholderText("now")
	labeled(c.custom, "_Since", c.since)
	labeled(c.custom, "_Until", c.until)
	more.PackStart(c.custom, false, false, 0)
	c.custom.SetNoShowAll(true)
	c.by = mustCombo()
	c.by.Connect("changed", m.connFiltersChanged)
	labeled(more, "_Decided by", c.by)
	page.PackStart(more, false, false, 0)
	c.count = mustLabel("")
	c.count.SetLineWrap(true)
	c.count.SetSelectable(true)
	page.PackStart(c.count, false, false, 0)
	m.fillByChoices()

	m.histStore, _ = gtk.ListStoreNew(glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING,
		glib.TYPE_STRING, glib.TYPE_INT, glib.TYPE_STRING, glib.TYPE_STRING)
	m.histView = newListView(m.histStore)
	m.histView.SetTooltipColumn(hColTip)
	textColumn(m.histView, "Time", hColTime, false, -1)
	textColumn(m.histView, "Action", hColAction, false, hColActionColor)
	textColumn(m.histView, "Program", hColApp, true, -1)
	textColumn(m.histView, "Destination", hColDest, true, -1)
	textColumn(m.histView, "Decided by", hColBy, true, -1)
	m.histView.Connect("row-activated", m.ruleFromHistory)
	c.scroll = mustScrolled()
	c.scroll.Add(m.histView)
	c.scroll.GetVAdjustment().Connect("value-changed", m.connScrolled)

	// "N new" floats over the list's top, where the new rows are.
	overlay, _ := gtk.OverlayNew()
	overlay.Add(c.scroll)
	c.newer = mustButton("")
	c.newer.SetHAlign(gtk.ALIGN_CENTER)
	c.newer.SetVAlign(gtk.ALIGN_START)
	c.newer.SetMarginTop(30)
	c.newer.SetNoShowAll(true)
	c.newer.SetTooltipText("Show the newest connections")
	addClass(c.newer, "suggested-action")
	c.newer.Connect("clicked", m.connShowNewest)
	// Once the user scrolls, selects or moves by keyboard, what they look
	// at is theirs again: the kept row is forgotten.
	m.histView.Connect("scroll-event", func() bool { c.anchor = nil; return false })
	m.histView.Connect("key-press-event", func() bool { c.anchor = nil; return false })
	m.histView.Connect("button-press-event", func() bool { c.anchor = nil; return false })
	if sb := c.scroll.GetVScrollbar(); sb != nil {
		sb.Connect("button-press-event", func() bool { c.anchor = nil; return false })
	}
	c.scroll.GetVAdjustment().Connect("changed", m.connKeepAnchor)
	overlay.AddOverlay(c.newer)
	page.PackStart(overlay, true, true, 0)
	m.connFiltersChanged()
	return page
}

// showConnectionsFor shows the Connections page with only program's
// connections: exe is an executable's path, or a name (comm or the path's
// last element) for a program that was not identified. The other filters
// are cleared so that all of them show.
func (m *mainWindow) showConnectionsFor(exe string) {
	c := m.conn
	c.settingUp = true
	c.search.SetText("")
	c.host.SetText("")
	c.action.SetActiveID("")
	c.period.SetActiveID("all")
	c.by.SetActiveID("")
	if e, err := c.program.GetEntry(); err == nil {
		e.SetText(exe)
	}
	c.settingUp = false
	m.connFiltersChanged()
	m.present("history")
}

// connProgramTyped waits for the typing in the program field to pause
// before searching.
func (m *mainWindow) connProgramTyped() {
	c := m.conn
	if c.settingUp {
		return
	}
	if c.programTimer != 0 {
		glib.SourceRemove(c.programTimer)
	}
	c.programTimer = glib.TimeoutAdd(300, func() bool {
		c.programTimer = 0
		if m.a.main == m { // not closed since
			m.connFiltersChanged()
		}
		return false
	})
}

func (m *mainWindow) connPeriodChanged() {
	m.conn.custom.SetVisible(m.conn.period.GetActiveID() == "custom")
	m.connFiltersChanged()
}

// readConnFilter reads the filters as the user set them.
func (m *mainWindow) readConnFilter() (connFilter, error) {
	c := m.conn
	var f connFilter
	text, _ := c.search.GetText()
	f.words = searchWords(text)
	if e, err := c.program.GetEntry(); err == nil {
		p, _ := e.GetText()
		f.program = strings.TrimSpace(p)
	}
	host, _ := c.host.GetText()
	f.host = strings.TrimSpace(host)
	switch c.action.GetActiveID() {
	case "allow":
		f.action = rulesv1.Action_ACTION_ALLOW
	case "deny":
		f.action = rulesv1.Action_ACTION_DENY
	}
	now := m.a.now()
	if id := c.period.GetActiveID(); id == "custom" {
		s, _ := c.since.GetText()
		u, _ := c.until.GetText()
		var err error
		if f.since, err = parseWhen(s, now, m.a.loc); err != nil {
			return f, fmt.Errorf("since: %w", err)
		}
		if f.until, err = parseWhen(u, now, m.a.loc); err != nil {
			return f, fmt.Errorf("until: %w", err)
		}
		if !f.since.IsZero() && !f.until.IsZero() && f.until.Before(f.since) {
			return f, errors.New("the range ends before it starts: make Until later than Since")
		}
	} else {
		f.since = rangeStart(id, now, m.a.loc)
	}
	by := c.by.GetActiveID()
	if id, ok := strings.CutPrefix(by, "rule:"); ok {
		f.ruleID = id
	} else {
		f.by = by
	}
	return f, nil
}

// connFiltersChanged reads the filters, shows the live rows that match at
// once, and asks the rules service for the older ones.
func (m *mainWindow) connFiltersChanged() {
	c := m.conn
	if c == nil || c.settingUp {
		return
	}
	f, err := m.readConnFilter()
	c.filterErr = ""
	if err != nil {
		c.filterErr = capitalize(err.Error()) + "."
		m.connCount()
		return
	}
	// The search words are matched here: when only they changed, the
	// last answer still holds.
	req := f.request(c.limit)
	same := c.answered == c.gen && c.queryErr == nil && proto.Equal(req, c.asked)
	c.filter = f
	if same {
		m.connRebuild()
		return
	}
	c.queried, c.truncated, c.queryErr = nil, false, nil
	m.connRebuild()
	if m.a.up {
		m.refreshConnections()
	}
}

// refreshConnections asks the rules service for the connections that
// match the filters.
func (m *mainWindow) refreshConnections() {
	c := m.conn
	if c.filterErr != "" {
		return
	}
	c.gen++
	gen, req := c.gen, c.filter.request(c.limit)
	c.asked = req
	call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.QueryConnectionsResponse, error) {
		return ui.QueryConnections(ctx, req)
	}, func(resp *uiv1.QueryConnectionsResponse, err error) {
		if m.a.main != m || gen != c.gen {
			return // the window closed, or the filters changed since
		}
		c.queried, c.truncated, c.queryErr = resp.GetEntries(), resp.GetTruncated(), err
		c.answered = gen
		m.connRebuild()
	})
}

// historyReset redraws the rows in place: the live history restarted or
// was cut short (the rows shown stay), or the rules whose names the
// "Decided by" column shows changed. What the user looks at stays put.
func (m *mainWindow) historyReset() {
	m.fillByChoices()
	it, ok := m.histStore.GetIterFirst()
	for ok {
		if e := m.conn.rows[m.rowID(it)]; e != nil {
			by, tip := m.decidedBy(e)
			m.histStore.Set(it, []int{hColTime, hColBy, hColTip}, []interface{}{m.connTime(e), by, glib.MarkupEscapeText(tip)})
		}
		ok = m.histStore.IterNext(it)
	}
}

// historyAdded shows a live decision when it matches the filters.
func (m *mainWindow) historyAdded(e *uiv1.HistoryEntry) {
	c := m.conn
	if c.filterErr != "" || c.keys[connKey(e)] || !c.filter.matches(e, m.shownText(e)) {
		return
	}
	following := m.connFollowing()
	if !following && c.anchor == nil {
		c.anchor = m.topAnchor()
	}
	pos := m.connInsert(e)
	if following {
		m.connScrollToNewest()
		return
	}
	if a := c.anchor; a != nil && pos <= a.index {
		// Added above what the user looks at: it stays in place, and
		// "N new" says that newer rows are there.
		a.index++
		c.unseen++
		c.newer.SetLabel(fmt.Sprintf("↑ %d new", c.unseen))
		c.newer.Show()
		glib.IdleAddPriority(glib.PRIORITY_HIGH_IDLE+20, m.connKeepAnchor) // after the layout
	}
	m.connCount()
}

// connAnchor is a row kept in place in the view.
type connAnchor struct {
	row   int // its hColIndex
	index int // its place in the list
	y     int // its top in the view (bin window) when it was taken
}

// topAnchor is the row at the top of the view.
func (m *mainWindow) topAnchor() *connAnchor {
	path, col, _, _, ok := m.histView.GetPathAtPos(1, 1)
	if !ok || len(path.GetIndices()) != 1 {
		return nil
	}
	it, err := m.histStore.GetIter(path)
	if err != nil {
		return nil
	}
	return &connAnchor{row: m.rowID(it), index: path.GetIndices()[0], y: m.histView.GetCellArea(path, col).GetY()}
}

// connKeepAnchor scrolls the list so that the anchor row is where it was,
// as the tree view lays the rows added above it out (their heights are
// known only then). The tree view tries to keep its top row too, but
// loses it when its scroll position is read before the new rows are laid
// out.
func (m *mainWindow) connKeepAnchor() {
	a := m.conn.anchor
	if a == nil {
		return
	}
	path, err := gtk.TreePathNewFromString(fmt.Sprint(a.index))
	if err != nil {
		return
	}
	cols := m.histView.GetColumns()
	if cols == nil || cols.Length() == 0 {
		return
	}
	col, ok := cols.NthData(0).(*gtk.TreeViewColumn)
	if !ok {
		return
	}
	if delta := m.histView.GetCellArea(path, col).GetY() - a.y; delta != 0 {
		adj := m.conn.scroll.GetVAdjustment()
		adj.SetValue(adj.GetValue() + float64(delta))
	}
}

// connFollowing reports whether the user looks at the newest rows: the
// list is at its top and no row is selected.
func (m *mainWindow) connFollowing() bool {
	return m.conn.scroll.GetVAdjustment().GetValue() < 1 && selectedIndex(m.histView) < 0
}

// connScrollToNewest shows the top of the list, once the tree view has
// laid its new rows out.
func (m *mainWindow) connScrollToNewest() {
	c := m.conn
	c.unseen = 0
	c.anchor = nil
	c.newer.Hide()
	if _, ok := m.histStore.GetIterFirst(); !ok {
		return
	}
	path, err := gtk.TreePathNewFromString("0")
	if err == nil {
		m.histView.ScrollToCell(path, nil, true, 0, 0)
	}
}

// connShowNewest is "N new": the newest rows, followed from now on.
func (m *mainWindow) connShowNewest() {
	if sel, err := m.histView.GetSelection(); err == nil {
		sel.UnselectAll()
	}
	m.connScrollToNewest()
}

// connScrolled forgets the new rows once the user scrolled up to them.
func (m *mainWindow) connScrolled() {
	c := m.conn
	if c.unseen > 0 && c.scroll.GetVAdjustment().GetValue() < 1 {
		c.unseen = 0
		c.anchor = nil
		c.newer.Hide()
	}
}

// connRebuild shows the rows of the last query and the live ones that
// match the filters, newest first.
func (m *mainWindow) connRebuild() {
	c := m.conn
	if c == nil {
		return
	}
	var keep []*uiv1.HistoryEntry
	seen := map[string]bool{}
	add := func(e *uiv1.HistoryEntry) {
		k := connKey(e)
		if seen[k] || !c.filter.matches(e, m.shownText(e)) {
			return
		}
		seen[k] = true
		keep = append(keep, e)
	}
	if c.filterErr == "" {
		for _, e := range c.queried {
			add(e)
		}
		for _, e := range m.a.history {
			add(e)
		}
	}
	slices.SortStableFunc(keep, func(a, b *uiv1.HistoryEntry) int {
		return b.GetTime().AsTime().Compare(a.GetTime().AsTime())
	})
	if len(keep) > connRowsCap {
		keep = keep[:connRowsCap]
	}
	m.histStore.Clear()
	clear(c.rows)
	clear(c.keys)
	for _, e := range keep {
		m.connSetRow(m.histStore.Append(), e)
	}
	m.fillProgramChoices()
	m.connScrollToNewest()
	m.connCount()
}

// connInsert adds e at its place by time (almost always the top) and
// returns its row; past connRowsCap the oldest row goes.
func (m *mainWindow) connInsert(e *uiv1.HistoryEntry) int {
	t := e.GetTime().AsTime()
	pos := 0
	it, ok := m.histStore.GetIterFirst()
	for ok {
		id := m.rowID(it)
		if r := m.conn.rows[id]; r == nil || !r.GetTime().AsTime().After(t) {
			break
		}
		pos++
		ok = m.histStore.IterNext(it)
	}
	m.connSetRow(m.histStore.Insert(pos), e)
	if len(m.conn.rows) > connRowsCap {
		if last, ok := m.histStore.GetIterFromString(fmt.Sprint(len(m.conn.rows) - 1)); ok == nil {
			old := m.rowID(last)
			delete(m.conn.keys, connKey(m.conn.rows[old]))
			delete(m.conn.rows, old)
			m.histStore.Remove(last)
		}
	}
	return pos
}

func (m *mainWindow) rowID(it *gtk.TreeIter) int {
	v, err := m.histStore.GetValue(it, hColIndex)
	if err != nil {
		return -1
	}
	g, _ := v.GoValue()
	id, _ := g.(int)
	return id
}

// connCount says how many rows match, whether older ones exist, and why
// only the live ones show when the service could not be asked.
func (m *mainWindow) connCount() {
	c := m.conn
	if c.filterErr != "" {
		c.count.SetText(c.filterErr)
		setClass(c.count, "bastion-error", true)
		return
	}
	setClass(c.count, "bastion-error", false)
	n := len(c.rows)
	var s string
	switch n {
	case 0:
		s = "No connection matches."
	case 1:
		s = "1 connection matches."
	default:
		s = fmt.Sprintf("%d connections match.", n)
	}
	switch {
	case c.queryErr != nil && status.Code(c.queryErr) == codes.Unimplemented:
		s += " Only those seen since Bastion started are shown: this rules service cannot search older ones."
	case c.queryErr != nil:
		s += " Only those seen since Bastion started are shown: searching the older ones failed (" + statusMessage(c.queryErr) + ")."
	case c.truncated:
		s += " More match in the kept history than were fetched: narrow the filters or the time range to see the older ones."
	}
	c.count.SetText(s)
}

// shownText is e's row as the page shows it, and what its tooltip and the
// export add: the words the search looks for.
func (m *mainWindow) shownText(e *uiv1.HistoryEntry) string {
	by, tip := m.decidedBy(e)
	p := e.GetProcess()
	return strings.Join([]string{m.connTime(e), actionName(e.GetAction()), apiconv.ExeText(p), p.GetComm(),
		strings.Join(p.GetArgs(), " "), target(e.GetFlow(), e.GetHost()), e.GetFlow().GetDstIp(), protoName(e.GetFlow()),
		by, tip, entryRuleID(e)}, "\n")
}

// connTime is when e was decided: the time alone today, with the date
// before.
func (m *mainWindow) connTime(e *uiv1.HistoryEntry) string {
	t := e.GetTime().AsTime().In(m.a.loc)
	y, mo, d := m.a.now().In(m.a.loc).Date()
	if t.Before(time.Date(y, mo, d, 0, 0, 0, 0, m.a.loc)) {
		return t.Format("2006-01-02 15:04:05")
	}
	return t.Format("15:04:05")
}

func (m *mainWindow) connSetRow(it *gtk.TreeIter, e *uiv1.HistoryEntry) {
	c := m.conn
	id := c.nextRow
	c.nextRow++
	c.rows[id] = e
	c.keys[connKey(e)] = true
	by, tip := m.decidedBy(e)
	m.histStore.Set(it, []int{hColTime, hColAction, hColApp, hColDest, hColBy, hColIndex, hColActionColor, hColTip},
		[]interface{}{m.connTime(e), capitalize(actionName(e.GetAction())),
			inert.String(apiconv.ExeText(e.GetProcess())), inert.String(target(e.GetFlow(), e.GetHost())) + " " + protoName(e.GetFlow()),
			by, id, actionColor(e.GetAction()), glib.MarkupEscapeText(tip)})
}

// fillByChoices lists the "Decided by" choices: the kinds of answer, then
// each rule by its name, keeping the choice made.
func (m *mainWindow) fillByChoices() {
	c := m.conn
	if c == nil {
		return
	}
	active := c.by.GetActiveID()
	c.settingUp = true
	defer func() { c.settingUp = false }()
	c.by.RemoveAll()
	c.by.Append("", "Anyone")
	for _, k := range byKinds {
		c.by.Append(k.id, k.label)
	}
	found := active == ""
	for _, r := range m.rules {
		id := "rule:" + r.GetId()
		c.by.Append(id, "rule “"+inert.Elide(ruleShort(r), 32)+"”")
		found = found || id == active
	}
	for _, k := range byKinds {
		found = found || k.id == active
	}
	if !found {
		// A rule deleted since it was chosen: still the filter.
		c.by.Append(active, "rule "+inert.String(strings.TrimPrefix(active, "rule:"))+" (deleted)")
	}
	c.by.SetActiveID(active)
}

// fillProgramChoices lists the programs of the rows in the program
// filter, by path.
func (m *mainWindow) fillProgramChoices() {
	c := m.conn
	set := map[string]bool{}
	for _, e := range c.rows {
		if k := programKey(e.GetProcess()); k != "" && len(set) < programChoicesCap {
			set[k] = true
		}
	}
	for _, e := range m.a.history {
		if k := programKey(e.GetProcess()); k != "" && len(set) < programChoicesCap {
			set[k] = true
		}
	}
	names := make([]string, 0, len(set))
	for k := range set {
		names = append(names, k)
	}
	slices.Sort(names)
	c.settingUp = true
	defer func() { c.settingUp = false }()
	e, err := c.program.GetEntry()
	var text string
	if err == nil {
		text, _ = e.GetText()
	}
	c.program.RemoveAll()
	for _, n := range names {
		c.program.AppendText(inert.String(n))
	}
	if err == nil {
		if now, _ := e.GetText(); now != text {
			e.SetText(text)
		}
	}
}

// decidedBy says who decided e, naming its rule as the rules list
// shows it.
func (m *mainWindow) decidedBy(e *uiv1.HistoryEntry) (text, tooltip string) {
	lookup := m.ruleByID
	if m.rules == nil {
		lookup = nil // not listed yet: not "deleted"
	}
	return decidedByText(e.GetDecidedBy(), e.GetRuleId(), lookup, m.a.status.GetUid(), m.a.now(), m.a.loc)
}

// ruleByID is the listed rule with this ID, or nil.
func (m *mainWindow) ruleByID(id string) *rulesv1.Rule {
	for _, r := range m.rules {
		if r.GetId() == id {
			return r
		}
	}
	return nil
}

// selectedHistory is the history entry of the selected row.
func (m *mainWindow) selectedHistory() *uiv1.HistoryEntry {
	sel, _ := m.histView.GetSelection()
	_, it, ok := sel.GetSelected()
	if !ok {
		return nil
	}
	return m.conn.rows[m.rowID(it)]
}

// ruleFromHistory opens a new rule prefilled the way a prompt answer for
// that connection would make it: same program, this destination and port,
// forever, with the action the connection got.
func (m *mainWindow) ruleFromHistory() {
	e := m.selectedHistory()
	if e == nil {
		return
	}
	m.openRuleFor(e.GetProcess(), e.GetFlow(), e.GetHost(), e.GetAction(), m.addRule)
}
