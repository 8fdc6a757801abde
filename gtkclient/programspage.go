package gtkclient

import (
	"context"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/gotk3/gotk3/gdk"
	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"
	"github.com/gotk3/gotk3/pango"

	"github.com/bastion-fw/bastion/internal/inert"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// programsEvery is how often the Programs page asks the rules service
// again while somebody looks at it.
const programsEvery = 5 * time.Second

// Programs list columns. The n* columns hold the numbers the visible
// columns are sorted by.
const (
	pColIcon = iota
	pColName // markup: the name, and the path under it
	pColAllowed
	pColDenied
	pColDests
	pColSent
	pColRecv
	pColLast
	pColRules
	pColKey // the program's key: its executable, or "comm:"+comm (an executable's path starts with /)
	pColSortName
	pColNAllowed
	pColNDenied
	pColNDests
	pColNSent
	pColNRecv
	pColNLast
	pColNRules
	pColDeniedColor
	pColTip
)

// programsPage is the main window's first page: one row per program that
// made connections today, and a program's detail (programdetail.go) in
// place of the list when one is opened.
type programsPage struct {
	m      *mainWindow
	stack  *gtk.Stack // "list" and "detail"
	search *gtk.SearchEntry
	count  *gtk.Label
	since  *gtk.Label
	store  *gtk.ListStore
	view   *gtk.TreeView
	open   *gtk.Button

	// programs are the rows as last listed, by key; nil until listed.
	programs map[string]*uiv1.ProgramSummary
	loading  bool
	every    time.Duration
	timer    glib.SourceHandle
	icons    map[string]*gdk.Pixbuf

	detail *programDetail
}

// programRowKey names a program in the list: its executable, or its comm
// when the process was not identified.
func programRowKey(p *uiv1.ProgramSummary) string {
	if p.GetExe() != "" {
		return p.GetExe()
	}
	return "comm:" + p.GetComm()
}

// programRequestName is what GetProgram is asked for.
func programRequestName(key string) string {
	return strings.TrimPrefix(key, "comm:")
}

// programName is a program's name as people know it: its desktop entry's
// Name, else its executable's base name, else "[comm]"; and its icon name.
func (a *app) programName(p *uiv1.ProgramSummary) (name, icon string) {
	if info, ok := a.apps.Lookup(p.GetExe()); ok {
		return info.Name, info.Icon
	}
	return exeName(&agentv1.Process{Exe: p.GetExe(), Comm: p.GetComm()}), ""
}

func (m *mainWindow) programsPage() gtk.IWidget {
	p := &programsPage{m: m, every: programsEvery, icons: map[string]*gdk.Pixbuf{}}
	m.progs = p
	p.stack, _ = gtk.StackNew()
	p.stack.SetTransitionType(gtk.STACK_TRANSITION_TYPE_SLIDE_LEFT_RIGHT)
	p.stack.SetTransitionDuration(150)

	page, bar := newPage()
	p.search, _ = gtk.SearchEntryNew()
	p.search.SetPlaceholderText("Search programs by name or path (Ctrl+F)…")
	p.search.SetWidthChars(44)
	p.search.Connect("search-changed", p.fill)
	// Enter in the search opens the first program found.
	p.search.Connect("activate", func() {
		p.fill() // what was typed last may not be searched yet
		if k := p.keyAt(0); k != "" {
			p.selectKey(k)
			p.openProgram(k)
		}
	})
	// Ctrl+F searches, as in a browser.
	m.win.Connect("key-press-event", func(_ *gtk.Window, ev *gdk.Event) bool {
		k := gdk.EventKeyNewFromEvent(ev)
		if k.KeyVal() != gdk.KEY_f || k.State()&uint(gdk.CONTROL_MASK) == 0 || m.stack.GetVisibleChildName() != "programs" {
			return false
		}
		p.stack.SetVisibleChildName("list")
		p.search.GrabFocus()
		return true
	})
	bar.PackStart(p.search, false, false, 0)
	p.count = mustLabel("")
	addClass(p.count, "bastion-key")
	bar.PackStart(p.count, false, false, 6)
	p.open = mustButton("_Details…")
	p.open.SetTooltipText("What this program connected to, its traffic and its rules (Enter or double-click a row)")
	p.open.Connect("clicked", p.openSelected)
	bar.PackEnd(p.open, false, false, 0)
	p.since = mustLabel("")
	addClass(p.since, "bastion-key")
	bar.PackEnd(p.since, false, false, 6)
	page.PackStart(bar, false, false, 0)

	p.store, _ = gtk.ListStoreNew(gdk.PixbufGetType(), glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING,
		glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING,
		glib.TYPE_INT64, glib.TYPE_INT64, glib.TYPE_INT64, glib.TYPE_INT64, glib.TYPE_INT64, glib.TYPE_INT64, glib.TYPE_INT64,
		glib.TYPE_STRING, glib.TYPE_STRING)
	p.store.SetSortColumnId(pColNLast, gtk.SORT_DESCENDING)
	p.view = newListView(p.store)
	p.view.SetTooltipColumn(pColTip)

	// The program: its icon, its name, and its path in small type.
	pix, _ := gtk.CellRendererPixbufNew()
	pix.SetProperty("xpad", 4)
	name, _ := gtk.CellRendererTextNew()
	name.SetProperty("ellipsize", pango.ELLIPSIZE_MIDDLE)
	col, _ := gtk.TreeViewColumnNew()
	col.SetTitle("Program")
	col.PackStart(pix, false)
	col.AddAttribute(pix, "pixbuf", pColIcon)
	col.PackStart(name, true)
	col.AddAttribute(name, "markup", pColName)
	col.SetExpand(true)
	col.SetMinWidth(260)
	col.SetResizable(true)
	col.SetSortColumnID(pColSortName)
	p.view.AppendColumn(col)

	for _, c := range []struct {
		title     string
		col, sort int
		color     int
	}{
		{"Allowed", pColAllowed, pColNAllowed, -1},
		{"Denied", pColDenied, pColNDenied, pColDeniedColor},
		{"Destinations", pColDests, pColNDests, -1},
		{"Sent", pColSent, pColNSent, -1},
		{"Received", pColRecv, pColNRecv, -1},
		{"Last activity", pColLast, pColNLast, -1},
		{"Rules", pColRules, pColNRules, -1},
	} {
		r := textColumn(p.view, c.title, c.col, false, c.color)
		tc := p.view.GetColumn(int(p.view.GetNColumns()) - 1)
		if c.col != pColLast {
			r.SetProperty("xalign", 1.0)
			tc.SetProperty("alignment", 1.0) // the title over the numbers
		}
		tc.SetSortColumnID(c.sort)
	}
	p.view.Connect("row-activated", p.openSelected)
	sel, _ := p.view.GetSelection()
	sel.Connect("changed", func() { p.open.SetSensitive(p.selectedKey() != "") })
	sw := mustScrolled()
	sw.Add(p.view)
	page.PackStart(sw, true, true, 0)
	p.open.SetSensitive(false)

	p.stack.AddNamed(page, "list")
	p.detail = newProgramDetail(p)
	p.stack.AddNamed(p.detail.box, "detail")
	return p.stack
}

// shown reports whether the page is on screen.
func (p *programsPage) shown() bool {
	return p.m.stack.GetVisibleChildName() == "programs" && p.m.win.GetMapped()
}

// start refreshes the page every p.every while the window is shown.
func (p *programsPage) start() {
	p.stop()
	p.timer = glib.TimeoutAdd(uint(p.every/time.Millisecond), func() bool {
		if p.shown() {
			p.refresh()
		}
		return true
	})
}

func (p *programsPage) stop() {
	if p.timer != 0 {
		glib.SourceRemove(p.timer)
		p.timer = 0
	}
}

// setEvery changes how often the page refreshes (tests make it fast).
func (p *programsPage) setEvery(d time.Duration) {
	p.every = d
	if p.timer != 0 {
		p.start()
	}
}

// refresh asks the rules service again for what is shown: the list, or
// the open program.
func (p *programsPage) refresh() {
	if !p.m.a.up {
		return
	}
	if p.stack.GetVisibleChildName() == "detail" {
		p.detail.refresh()
		return
	}
	if p.loading {
		return
	}
	p.loading = true
	call(p.m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.ListProgramsResponse, error) {
		return ui.ListPrograms(ctx, &uiv1.ListProgramsRequest{})
	}, func(resp *uiv1.ListProgramsResponse, err error) {
		p.loading = false
		if p.m.a.main != p.m {
			return
		}
		if err != nil {
			p.m.a.log.Warn("list programs", "err", err)
			p.count.SetText("Could not list the programs: " + statusMessage(err))
			return
		}
		p.programs = map[string]*uiv1.ProgramSummary{}
		for _, s := range resp.GetPrograms() {
			p.programs[programRowKey(s)] = s
		}
		if s := resp.GetSince(); s != nil {
			p.since.SetText("Since " + sinceText(s.AsTime(), p.m.a.now(), p.m.a.loc))
		}
		p.fill()
	})
}

// sinceText is "midnight", or the time or date of another start.
func sinceText(t, now time.Time, loc *time.Location) string {
	l, n := t.In(loc), now.In(loc)
	switch {
	case l.Hour() == 0 && l.Minute() == 0 && l.Second() == 0 && l.YearDay() == n.YearDay() && l.Year() == n.Year():
		return "midnight"
	case l.YearDay() == n.YearDay() && l.Year() == n.Year():
		return l.Format("15:04")
	}
	return l.Format("2006-01-02 15:04")
}

// searchText is what the search matches: the name, path and comm.
func (p *programsPage) searchText(s *uiv1.ProgramSummary) string {
	name, _ := p.m.a.programName(s)
	return strings.ToLower(name + "\x00" + s.GetExe() + "\x00" + s.GetComm())
}

// fill shows the listed programs that pass the search. Rows are updated
// in place, so that the selection, the sort order and the scroll position
// stay as they were.
func (p *programsPage) fill() {
	q, _ := p.search.GetText()
	words := strings.Fields(strings.ToLower(q))
	want := map[string]*uiv1.ProgramSummary{}
	for k, s := range p.programs {
		text := p.searchText(s)
		match := true
		for _, w := range words {
			if !strings.Contains(text, w) {
				match = false
				break
			}
		}
		if match {
			want[k] = s
		}
	}
	now := p.m.a.now()
	it, ok := p.store.GetIterFirst()
	for ok {
		k := p.rowKey(it)
		s, keep := want[k]
		if !keep {
			ok = p.store.Remove(it)
			continue
		}
		p.setRow(it, s, now)
		delete(want, k)
		ok = p.store.IterNext(it)
	}
	// New rows in a steady order: the sort keeps ties where they are put.
	for _, k := range slices.Sorted(maps.Keys(want)) {
		p.setRow(p.store.Append(), want[k], now)
	}
	shown := storeRows(p.store)
	switch {
	case p.programs == nil:
		p.count.SetText("")
	case len(p.programs) == 0:
		p.count.SetText("No program made connections yet.")
	default:
		p.count.SetText(fmt.Sprintf("%d of %d programs", shown, len(p.programs)))
	}
	p.open.SetSensitive(p.selectedKey() != "")
}

func storeRows(s *gtk.ListStore) int {
	n := 0
	it, ok := s.GetIterFirst()
	for ok {
		n++
		ok = s.IterNext(it)
	}
	return n
}

func (p *programsPage) rowKey(it *gtk.TreeIter) string {
	v, err := p.store.GetValue(it, pColKey)
	if err != nil {
		return ""
	}
	s, _ := v.GetString()
	return s
}

// setRow writes program s into row it.
func (p *programsPage) setRow(it *gtk.TreeIter, s *uiv1.ProgramSummary, now time.Time) {
	name, icon := p.m.a.programName(s)
	where := s.GetExe()
	if where == "" {
		where = "executable unknown"
	}
	markup := "<b>" + glib.MarkupEscapeText(inert.Elide(name, 80)) + "</b>\n<small>" +
		glib.MarkupEscapeText(inert.Elide(where, 120)) + "</small>"
	deniedColor := "#777777"
	if s.GetDenied() > 0 {
		deniedColor = actionColor(rulesv1.Action_ACTION_DENY)
	}
	var last int64
	if s.GetLastActivity() != nil {
		last = s.GetLastActivity().AsTime().Unix()
	}
	tip := glib.MarkupEscapeText(inert.String(name + " — " + where))
	p.store.Set(it,
		[]int{pColIcon, pColName, pColAllowed, pColDenied, pColDests, pColSent, pColRecv, pColLast, pColRules, pColKey, pColSortName,
			pColNAllowed, pColNDenied, pColNDests, pColNSent, pColNRecv, pColNLast, pColNRules, pColDeniedColor, pColTip},
		[]interface{}{p.icon(icon, s.GetExe()), markup, countText(s.GetAllowed()), countText(s.GetDenied()),
			countText(uint64(s.GetDestinations())), humanBytes(s.GetBytesSent()), humanBytes(s.GetBytesReceived()),
			lastActivityText(s, now, p.m.a.loc), countText(uint64(s.GetRules())), programRowKey(s), strings.ToLower(name),
			int64(s.GetAllowed()), int64(s.GetDenied()), int64(s.GetDestinations()), int64(s.GetBytesSent()),
			int64(s.GetBytesReceived()), last, int64(s.GetRules()), deniedColor, tip})
}

func lastActivityText(s *uiv1.ProgramSummary, now time.Time, loc *time.Location) string {
	if s.GetLastActivity() == nil {
		return "never"
	}
	return ago(s.GetLastActivity().AsTime(), now, loc)
}

// countText is a count with thousands separated: "18,342".
func countText(n uint64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// refreshTimes redraws the relative times in place.
func (p *programsPage) refreshTimes() {
	now := p.m.a.now()
	it, ok := p.store.GetIterFirst()
	for ok {
		if s := p.programs[p.rowKey(it)]; s != nil {
			p.store.SetValue(it, pColLast, lastActivityText(s, now, p.m.a.loc))
		}
		ok = p.store.IterNext(it)
	}
	p.detail.refreshTimes()
}

// icon is a program's icon at list size: its desktop entry's icon (a
// theme name or a file), else the theme's icon named like the
// executable, else a generic one.
func (p *programsPage) icon(name, exe string) *gdk.Pixbuf {
	return loadIcon(p.icons, name, exe, 24)
}

// loadIcon finds an icon as the prompt does and keeps it in cache.
func loadIcon(cache map[string]*gdk.Pixbuf, name, exe string, size int) *gdk.Pixbuf {
	key := fmt.Sprintf("%s\x00%s\x00%d", name, exe, size)
	if pb, ok := cache[key]; ok {
		return pb
	}
	theme, err := gtk.IconThemeGetDefault()
	candidates := []string{name}
	if exe != "" {
		candidates = append(candidates, strings.ToLower(path.Base(exe)))
	}
	candidates = append(candidates, "application-x-executable")
	var pb *gdk.Pixbuf
	for _, c := range candidates {
		switch {
		case c == "":
		case strings.HasPrefix(c, "/"):
			pb, _ = gdk.PixbufNewFromFileAtSize(c, size, size)
		case err == nil && theme.HasIcon(c):
			pb, _ = theme.LoadIcon(c, size, gtk.ICON_LOOKUP_FORCE_SIZE)
		}
		if pb != nil {
			break
		}
	}
	cache[key] = pb
	return pb
}

// selectedKey is the key of the selected program, or "".
func (p *programsPage) selectedKey() string {
	sel, _ := p.view.GetSelection()
	_, it, ok := sel.GetSelected()
	if !ok {
		return ""
	}
	return p.rowKey(it)
}

// selectKey selects the row of a program (tests, and coming back from
// the detail).
func (p *programsPage) selectKey(key string) bool {
	it, ok := p.store.GetIterFirst()
	for ok {
		if p.rowKey(it) == key {
			sel, _ := p.view.GetSelection()
			sel.SelectIter(it)
			if path, err := p.store.GetPath(it); err == nil {
				p.view.ScrollToCell(path, nil, false, 0, 0)
			}
			return true
		}
		ok = p.store.IterNext(it)
	}
	return false
}

// keyAt is the key of row i, or "".
func (p *programsPage) keyAt(i int) string {
	it, ok := p.store.GetIterFirst()
	for ; ok && i > 0; i-- {
		ok = p.store.IterNext(it)
	}
	if !ok {
		return ""
	}
	return p.rowKey(it)
}

// shownKeys are the keys of the rows, top to bottom.
func (p *programsPage) shownKeys() []string {
	var out []string
	it, ok := p.store.GetIterFirst()
	for ok {
		out = append(out, p.rowKey(it))
		ok = p.store.IterNext(it)
	}
	return out
}

func (p *programsPage) openSelected() {
	if k := p.selectedKey(); k != "" {
		p.openProgram(k)
	}
}

// openProgram shows the detail of the program with key k.
func (p *programsPage) openProgram(k string) {
	p.detail.show(k, p.programs[k])
	p.stack.SetVisibleChildName("detail")
}

// back shows the list again, with the program that was open selected.
func (p *programsPage) back() {
	k := p.detail.key
	p.stack.SetVisibleChildName("list")
	p.detail.key = ""
	p.refresh()
	p.selectKey(k)
	p.view.GrabFocus()
}
