package gtkclient

import (
	"fmt"
	"time"

	"github.com/gotk3/gotk3/gdk"
	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"
	"github.com/gotk3/gotk3/pango"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// mainWindow shows the rules, the recent decisions, the decide-later list
// and the status. It is created when opened and dropped when closed.
type mainWindow struct {
	a     *app
	win   *gtk.Window
	stack *gtk.Stack

	banner     *gtk.InfoBar
	bannerText *gtk.Label
	notice     *gtk.InfoBar
	noticeText *gtk.Label
	undo       func()
	undoButton *gtk.Button

	// Programs page (programspage.go).
	progs *programsPage

	// Rules page.
	search     *gtk.SearchEntry
	filter     *gtk.ComboBoxText
	rulesStore *gtk.ListStore
	rulesView  *gtk.TreeView
	rulesCount *gtk.Label
	rules      []*rulesv1.Rule // as last listed
	shownRules []*rulesv1.Rule // rows of rulesStore, after search and filter
	edit, del  *gtk.Button

	// Connections page (historypage.go).
	histStore *gtk.ListStore
	histView  *gtk.TreeView
	conn      *connPage
	// exportChooser is the open "Export connections" dialog (tests fill
	// it in).
	exportChooser *gtk.FileChooserDialog

	// Decide-later page.
	laterStore   *gtk.ListStore
	laterView    *gtk.TreeView
	laterEntries []*uiv1.DecideLaterEntry

	// Status page.
	statusValues map[string]*gtk.Label

	prefs preferences

	lastDialog *ruleDialog // the dialog opened last (tests fill it in)

	pause *pauseBar // "protection is paused" (protection.go)
	// ticker redraws the relative times ("5m ago", "42m left") while the
	// window is shown; 0 while it is hidden or closed.
	ticker      glib.SourceHandle
	tickerEvery time.Duration
}

// relativeEvery is how often the main window redraws its relative times.
const relativeEvery = 10 * time.Second

// History and decide-later columns.
const (
	hColTime = iota
	hColAction
	hColApp
	hColDest
	hColBy
	hColIndex
	hColActionColor
	hColTip // the rule in full, as the row's tooltip
)

// mainPages are the main window's pages, in the switcher's order.
var mainPages = []struct {
	name, title string
	make        func(m *mainWindow) gtk.IWidget
}{
	{"programs", "Programs", (*mainWindow).programsPage},
	{"rules", "Rules", (*mainWindow).rulesPage},
	{"history", "Connections", (*mainWindow).historyPage},
	{"later", "Decide later", (*mainWindow).laterPage},
	{"status", "Status", (*mainWindow).statusPage},
	{"preferences", "Preferences", (*mainWindow).preferencesPage},
}

func newMainWindow(a *app) *mainWindow {
	m := &mainWindow{a: a, statusValues: map[string]*gtk.Label{}, tickerEvery: relativeEvery}
	win, err := gtk.WindowNew(gtk.WINDOW_TOPLEVEL)
	if err != nil {
		panic("gtk: create window: " + err.Error())
	}
	m.win = win
	win.SetTitle("Bastion")
	win.SetIconName("security-high")
	win.SetDefaultSize(1060, 640)
	// The relative times are redrawn only while somebody can see them.
	win.Connect("map", m.startTicker)
	win.Connect("unmap", m.stopTicker)
	win.Connect("destroy", func() {
		m.stopTicker()
		if m.a.main == m {
			m.a.mainClosed()
		}
	})

	m.stack, _ = gtk.StackNew()
	m.stack.SetTransitionType(gtk.STACK_TRANSITION_TYPE_CROSSFADE)
	header, _ := gtk.HeaderBarNew()
	header.SetShowCloseButton(true)
	header.SetTitle("Bastion")
	switcher, _ := gtk.StackSwitcherNew()
	switcher.SetStack(m.stack)
	switcher.SetTooltipText("Alt+1 to Alt+6 show these pages")
	header.SetCustomTitle(switcher)
	refresh, _ := gtk.ButtonNewFromIconName("view-refresh-symbolic", gtk.ICON_SIZE_BUTTON)
	refresh.SetTooltipText("Refresh")
	refresh.Connect("clicked", func() { m.refreshRules(); m.refreshLater(); m.refreshConnections(); m.progs.refresh() })
	header.PackEnd(refresh)
	win.SetTitlebar(header)

	box := mustBox(gtk.ORIENTATION_VERTICAL, 0)
	m.banner, _ = gtk.InfoBarNew()
	m.banner.SetMessageType(gtk.MESSAGE_ERROR)
	m.bannerText = mustLabel("")
	m.bannerText.SetLineWrap(true)
	addClass(m.bannerText, "bastion-banner-text")
	content, _ := m.banner.GetContentArea()
	content.PackStart(m.bannerText, true, true, 0)
	box.PackStart(m.banner, false, false, 0)

	m.notice, _ = gtk.InfoBarNew()
	m.notice.SetMessageType(gtk.MESSAGE_INFO)
	m.notice.SetShowCloseButton(true)
	m.noticeText = mustLabel("")
	m.noticeText.SetLineWrap(true)
	m.noticeText.SetSelectable(true)
	nc, _ := m.notice.GetContentArea()
	nc.PackStart(m.noticeText, true, true, 0)
	m.undoButton = mustButton("_Undo")
	m.notice.AddActionWidget(m.undoButton, gtk.RESPONSE_APPLY)
	m.notice.Connect("response", func(_ *gtk.InfoBar, resp gtk.ResponseType) {
		if resp == gtk.RESPONSE_APPLY && m.undo != nil {
			m.undo()
		}
		m.undo = nil
		m.notice.Hide()
	})
	box.PackStart(m.notice, false, false, 0)
	m.pause = newPauseBar(a)
	box.PackStart(m.pause.bar, false, false, 0)
	box.PackStart(m.stack, true, true, 0)
	win.Add(box)

	for _, page := range mainPages {
		m.stack.AddTitled(page.make(m), page.name, page.title)
	}
	// Alt+1 … Alt+6 show the pages, as in a browser's tabs; the switcher's
	// tooltip says so.
	accel, _ := gtk.AccelGroupNew()
	win.AddAccelGroup(accel)
	for i, page := range mainPages {
		key := uint(gdk.KEY_1) + uint(i)
		accel.Connect(key, gdk.MOD1_MASK, gtk.ACCEL_VISIBLE, func() bool { m.stack.SetVisibleChildName(page.name); return true })
	}
	// The settings are read when their page is shown: someone may have
	// edited the file, or another window applied others.
	m.stack.Connect("notify::visible-child-name", func() {
		if m.stack.GetVisibleChildName() == "preferences" && m.a.up {
			m.refreshPreferences()
		}
		if m.stack.GetVisibleChildName() == "programs" {
			m.progs.refresh()
		}
	})

	win.ShowAll()
	m.notice.Hide()
	m.statusChanged()
	m.historyReset()
	if a.up {
		m.refreshRules()
		m.refreshLater()
		m.progs.refresh()
	}
	return m
}

// startTicker starts redrawing the relative times every m.tickerEvery.
func (m *mainWindow) startTicker() {
	m.stopTicker()
	m.ticker = glib.TimeoutAdd(uint(m.tickerEvery/time.Millisecond), func() bool {
		m.refreshTimes()
		m.progs.refreshTimes()
		return true
	})
	m.progs.start()
}

func (m *mainWindow) stopTicker() {
	m.progs.stop()
	if m.ticker != 0 {
		glib.SourceRemove(m.ticker)
		m.ticker = 0
	}
}

// setTickerEvery changes how often the relative times are redrawn (tests
// make it fast).
func (m *mainWindow) setTickerEvery(d time.Duration) {
	m.tickerEvery = d
	if m.ticker != 0 {
		m.startTicker()
	}
}

func (m *mainWindow) present(page string) {
	m.stack.SetVisibleChildName(page)
	m.win.Present()
}

// showNotice shows a message above the pages, with an Undo button when
// undo is not nil.
func (m *mainWindow) showNotice(kind gtk.MessageType, text string, undo func()) {
	m.notice.SetMessageType(kind)
	m.noticeText.SetText(text)
	m.undo = undo
	m.notice.Show()
	m.undoButton.SetVisible(undo != nil)
}

func (m *mainWindow) fail(what string, err error) {
	m.showNotice(gtk.MESSAGE_ERROR, what+": "+statusMessage(err), nil)
}

// newPage returns a list page's frame: the page, and the bar at its top
// for its search, hint and buttons.
func newPage() (page, bar *gtk.Box) {
	page = mustBox(gtk.ORIENTATION_VERTICAL, 8)
	page.SetMarginTop(10)
	page.SetMarginBottom(10)
	page.SetMarginStart(12)
	page.SetMarginEnd(12)
	bar = mustBox(gtk.ORIENTATION_HORIZONTAL, 6)
	return page, bar
}

// addHint puts a page's explanation at the start of its bar.
func addHint(bar *gtk.Box, text string) {
	hint := mustLabel(text)
	addClass(hint, "bastion-key")
	bar.PackStart(hint, false, false, 0)
}

func newListView(store *gtk.ListStore) *gtk.TreeView {
	v, err := gtk.TreeViewNewWithModel(store)
	if err != nil {
		panic("gtk: create tree view: " + err.Error())
	}
	v.SetHeadersVisible(true)
	v.SetEnableSearch(false)
	return v
}

func textColumn(v *gtk.TreeView, title string, col int, expand bool, colorCol int) *gtk.CellRendererText {
	r, _ := gtk.CellRendererTextNew()
	c, _ := gtk.TreeViewColumnNewWithAttribute(title, r, "text", col)
	if colorCol >= 0 {
		c.AddAttribute(r, "foreground", colorCol)
		r.SetProperty("weight", pango.WEIGHT_BOLD)
	}
	if expand {
		c.SetExpand(true)
		r.SetProperty("ellipsize", pango.ELLIPSIZE_MIDDLE)
		c.SetMinWidth(160)
	}
	c.SetResizable(true)
	v.AppendColumn(c)
	return r
}

func actionColor(a rulesv1.Action) string {
	switch a {
	case rulesv1.Action_ACTION_ALLOW:
		return "#26a269"
	case rulesv1.Action_ACTION_DENY:
		return "#c01c28"
	case rulesv1.Action_ACTION_REJECT:
		return "#c64600"
	}
	return "#777777"
}

func selectedIndex(v *gtk.TreeView) int {
	sel, err := v.GetSelection()
	if err != nil {
		return -1
	}
	model, it, ok := sel.GetSelected()
	if !ok {
		return -1
	}
	path, err := model.ToTreeModel().GetPath(it)
	if err != nil {
		return -1
	}
	idx := path.GetIndices()
	if len(idx) != 1 {
		return -1
	}
	return idx[0]
}

// selectRow selects row i of v (used by tests and after edits).
func selectRow(v *gtk.TreeView, i int) {
	sel, _ := v.GetSelection()
	path, err := gtk.TreePathNewFromString(fmt.Sprint(i))
	if err != nil {
		return
	}
	sel.SelectPath(path)
}

// openRuleFor opens the rule dialog with the rule a prompt answer for
// this connection would make (this destination and port, forever), for
// the user to review, widen and save.
func (m *mainWindow) openRuleFor(proc *agentv1.Process, fl *agentv1.Flow, host string, a rulesv1.Action, save func(*rulesv1.Rule)) {
	act := flow.ActionDeny
	switch a {
	case rulesv1.Action_ACTION_ALLOW:
		act = flow.ActionAllow
	case rulesv1.Action_ACTION_REJECT:
		act = flow.ActionReject
	}
	r, err := rules.ForPrompt(apiconv.Process(proc), apiconv.Tuple(fl), host,
		rules.Choice{Action: act, Lifetime: rules.Forever, Scope: rules.ScopeDestinationPort}, m.a.now())
	if err != nil {
		m.fail("Cannot make a rule for this connection", err)
		return
	}
	r.Created = time.Time{}
	m.lastDialog = newRuleDialog(m.win, "New rule", rules.ToProto(r), m.a.now, save)
}
