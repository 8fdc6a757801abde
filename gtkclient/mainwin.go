package gtkclient

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

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

	// Rules page.
	search     *gtk.SearchEntry
	filter     *gtk.ComboBoxText
	rulesStore *gtk.ListStore
	rulesView  *gtk.TreeView
	rulesCount *gtk.Label
	rules      []*rulesv1.Rule // as last listed
	shownRules []*rulesv1.Rule // rows of rulesStore, after search and filter
	edit, del  *gtk.Button

	// History page.
	histStore *gtk.ListStore
	histView  *gtk.TreeView

	// Decide-later page.
	laterStore   *gtk.ListStore
	laterView    *gtk.TreeView
	laterEntries []*uiv1.DecideLaterEntry

	// Status page.
	statusValues map[string]*gtk.Label

	lastDialog *ruleDialog // the dialog opened last (tests fill it in)
}

// Rules list columns.
const (
	colEnabled = iota
	colAction
	colApp
	colDest
	colLifetime
	colHits
	colLastHit
	colActionColor
)

// History and decide-later columns.
const (
	hColTime = iota
	hColAction
	hColApp
	hColDest
	hColBy
	hColIndex
	hColActionColor
)

var ruleFilters = []struct {
	label string
	keep  func(r *rulesv1.Rule) bool
}{
	{"All rules", func(*rulesv1.Rule) bool { return true }},
	{"Allow", func(r *rulesv1.Rule) bool { return r.GetAction() == rulesv1.Action_ACTION_ALLOW }},
	{"Deny or reject", func(r *rulesv1.Rule) bool { return r.GetAction() != rulesv1.Action_ACTION_ALLOW }},
	{"Enabled", func(r *rulesv1.Rule) bool { return r.GetEnabled() }},
	{"Disabled", func(r *rulesv1.Rule) bool { return !r.GetEnabled() }},
	{"Temporary", func(r *rulesv1.Rule) bool {
		return r.GetLifetime() == rulesv1.Lifetime_LIFETIME_DURATION || r.GetLifetime() == rulesv1.Lifetime_LIFETIME_SESSION
	}},
}

func newMainWindow(a *app) *mainWindow {
	m := &mainWindow{a: a, statusValues: map[string]*gtk.Label{}}
	win, err := gtk.WindowNew(gtk.WINDOW_TOPLEVEL)
	if err != nil {
		panic("gtk: create window: " + err.Error())
	}
	m.win = win
	win.SetTitle("Bastion")
	win.SetIconName("security-high")
	win.SetDefaultSize(1060, 640)
	win.Connect("destroy", func() {
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
	header.SetCustomTitle(switcher)
	refresh, _ := gtk.ButtonNewFromIconName("view-refresh-symbolic", gtk.ICON_SIZE_BUTTON)
	refresh.SetTooltipText("Refresh")
	refresh.Connect("clicked", func() { m.refreshRules(); m.refreshLater() })
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
	box.PackStart(m.stack, true, true, 0)
	win.Add(box)

	m.stack.AddTitled(m.rulesPage(), "rules", "Rules")
	m.stack.AddTitled(m.historyPage(), "history", "Connections")
	m.stack.AddTitled(m.laterPage(), "later", "Decide later")
	m.stack.AddTitled(m.statusPage(), "status", "Status")

	win.ShowAll()
	m.notice.Hide()
	m.statusChanged()
	m.historyReset()
	if a.up {
		m.refreshRules()
		m.refreshLater()
	}
	return m
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

func (m *mainWindow) rulesPage() gtk.IWidget {
	page := mustBox(gtk.ORIENTATION_VERTICAL, 8)
	page.SetMarginTop(10)
	page.SetMarginBottom(10)
	page.SetMarginStart(12)
	page.SetMarginEnd(12)
	bar := mustBox(gtk.ORIENTATION_HORIZONTAL, 6)
	m.search, _ = gtk.SearchEntryNew()
	m.search.SetPlaceholderText("Search program, destination, note…")
	m.search.SetWidthChars(34)
	m.search.Connect("search-changed", m.fillRules)
	m.filter = mustCombo()
	for _, f := range ruleFilters {
		m.filter.AppendText(f.label)
	}
	m.filter.SetActive(0)
	m.filter.Connect("changed", m.fillRules)
	bar.PackStart(m.search, false, false, 0)
	bar.PackStart(m.filter, false, false, 0)
	m.rulesCount = mustLabel("")
	addClass(m.rulesCount, "bastion-key")
	bar.PackStart(m.rulesCount, false, false, 6)
	add := mustButton("_New…")
	m.edit = mustButton("_Edit…")
	m.del = mustButton("De_lete")
	imp := mustButton("_Import…")
	exp := mustButton("E_xport…")
	add.Connect("clicked", func() {
		m.lastDialog = newRuleDialog(m.win, "New rule", &rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW,
			Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}, m.a.now, m.addRule)
	})
	m.edit.Connect("clicked", m.editSelected)
	m.del.Connect("clicked", m.deleteSelected)
	imp.Connect("clicked", m.chooseImport)
	exp.Connect("clicked", m.chooseExport)
	for _, b := range []*gtk.Button{exp, imp, m.del, m.edit, add} {
		bar.PackEnd(b, false, false, 0)
	}
	page.PackStart(bar, false, false, 0)

	m.rulesStore, _ = gtk.ListStoreNew(glib.TYPE_BOOLEAN, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING,
		glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING)
	m.rulesView = newListView(m.rulesStore)
	toggle, _ := gtk.CellRendererToggleNew()
	on, _ := gtk.TreeViewColumnNewWithAttribute("On", toggle, "active", colEnabled)
	m.rulesView.AppendColumn(on)
	toggle.Connect("toggled", func(_ *gtk.CellRendererToggle, path string) {
		var i int
		if _, err := fmt.Sscan(path, &i); err == nil {
			m.setEnabled(i, !m.shownRules[i].GetEnabled())
		}
	})
	textColumn(m.rulesView, "Action", colAction, false, colActionColor)
	textColumn(m.rulesView, "Program", colApp, true, -1)
	textColumn(m.rulesView, "Destination", colDest, true, -1)
	textColumn(m.rulesView, "Lifetime", colLifetime, false, -1)
	hits := textColumn(m.rulesView, "Hits", colHits, false, -1)
	hits.SetProperty("xalign", 1.0)
	textColumn(m.rulesView, "Last hit", colLastHit, false, -1)
	m.rulesView.Connect("row-activated", m.editSelected)
	sel, _ := m.rulesView.GetSelection()
	sel.Connect("changed", m.selectionChanged)
	sw := mustScrolled()
	sw.Add(m.rulesView)
	page.PackStart(sw, true, true, 0)
	m.selectionChanged()
	return page
}

func (m *mainWindow) selectionChanged() {
	ok := m.selectedRule() != nil
	m.edit.SetSensitive(ok)
	m.del.SetSensitive(ok)
}

// refreshRules lists the rules again.
func (m *mainWindow) refreshRules() {
	call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.ListRulesResponse, error) {
		return ui.ListRules(ctx, &uiv1.ListRulesRequest{})
	}, func(resp *uiv1.ListRulesResponse, err error) {
		if m.a.main != m {
			return
		}
		if err != nil {
			m.a.log.Warn("list rules", "err", err)
			return
		}
		m.rules = resp.GetRules()
		m.fillRules()
	})
}

// ruleText is what the search matches: program, command line,
// destination, note, action and lifetime, lower case.
func ruleText(r *rulesv1.Rule, now time.Time) string {
	return strings.ToLower(strings.Join([]string{ruleApp(r), r.GetCmdline(), ruleDestination(r), r.GetNote(),
		actionName(r.GetAction()), ruleLifetime(r, now), r.GetId()}, "\x00"))
}

// fillRules shows the rules that pass the search and the filter, most
// specific first as the matcher ranks them, keeping the selection.
func (m *mainWindow) fillRules() {
	keepID := ""
	if r := m.selectedRule(); r != nil {
		keepID = r.GetId()
	}
	q, _ := m.search.GetText()
	words := strings.Fields(strings.ToLower(q))
	keep := ruleFilters[max(0, m.filter.GetActive())].keep
	now := m.a.now()
	m.shownRules = m.shownRules[:0]
	for _, r := range m.rules {
		if !keep(r) {
			continue
		}
		text := ruleText(r, now)
		match := true
		for _, w := range words {
			if !strings.Contains(text, w) {
				match = false
				break
			}
		}
		if match {
			m.shownRules = append(m.shownRules, r)
		}
	}
	m.rulesStore.Clear()
	sel, _ := m.rulesView.GetSelection()
	for _, r := range m.shownRules {
		it := m.rulesStore.Append()
		app := inert.String(ruleApp(r))
		if r.GetCmdline() != "" {
			app += "  [" + inert.Elide(r.GetCmdline(), 40) + "]"
		}
		last := ago(r.GetLastHit().AsTime(), now, m.a.loc)
		if r.GetLastHit() == nil {
			last = "never"
		}
		color := actionColor(r.GetAction())
		if !r.GetEnabled() {
			color = "#888888"
		}
		m.rulesStore.Set(it, []int{colEnabled, colAction, colApp, colDest, colLifetime, colHits, colLastHit, colActionColor},
			[]interface{}{r.GetEnabled(), capitalize(actionName(r.GetAction())), app, inert.String(ruleDestination(r)),
				ruleLifetime(r, now), fmt.Sprint(r.GetHits()), last, color})
		if r.GetId() == keepID {
			sel.SelectIter(it)
		}
	}
	m.rulesCount.SetText(fmt.Sprintf("%d of %d rules", len(m.shownRules), len(m.rules)))
	m.selectionChanged()
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

func (m *mainWindow) selectedRule() *rulesv1.Rule {
	i := selectedIndex(m.rulesView)
	if i < 0 || i >= len(m.shownRules) {
		return nil
	}
	return m.shownRules[i]
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

func (m *mainWindow) editSelected() {
	r := m.selectedRule()
	if r == nil {
		return
	}
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
		})
	})
}

func (m *mainWindow) addRule(r *rulesv1.Rule) {
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
	})
}

// deleteSelected deletes the selected rule at once and offers to undo it:
// a confirmation dialog is the classic way to teach people to click Yes.
func (m *mainWindow) deleteSelected() {
	r := m.selectedRule()
	if r == nil {
		return
	}
	call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.DeleteRuleResponse, error) {
		return ui.DeleteRule(ctx, &uiv1.DeleteRuleRequest{Id: r.GetId()})
	}, func(_ *uiv1.DeleteRuleResponse, err error) {
		if err != nil {
			m.fail("Could not delete the rule", err)
			return
		}
		m.showNotice(gtk.MESSAGE_INFO, "Deleted the rule for "+inert.String(ruleApp(r))+" → "+inert.String(ruleDestination(r))+".",
			func() {
				back := rules.ToProto(mustRule(r))
				back.Id, back.Created = "", nil
				m.addRule(back)
			})
		m.refreshRules()
	})
}

// mustRule converts a listed rule for re-adding; listed rules are valid.
func mustRule(p *rulesv1.Rule) rules.Rule {
	r, _ := rules.FromProto(p)
	return r
}

func (m *mainWindow) setEnabled(i int, on bool) {
	if i < 0 || i >= len(m.shownRules) {
		return
	}
	id := m.shownRules[i].GetId()
	call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.SetRuleEnabledResponse, error) {
		return ui.SetRuleEnabled(ctx, &uiv1.SetRuleEnabledRequest{Id: id, Enabled: on})
	}, func(_ *uiv1.SetRuleEnabledResponse, err error) {
		if err != nil {
			m.fail("Could not change the rule", err)
			return
		}
		m.refreshRules()
	})
}

// importFormats are the import file chooser's filters.
var importFormats = []struct {
	name   string
	format uiv1.Format
}{
	{"Bastion rules (JSON)", uiv1.Format_FORMAT_JSON},
	{"Bastion rules (TOML)", uiv1.Format_FORMAT_TOML},
	{"OpenSnitch rules (JSON)", uiv1.Format_FORMAT_OPENSNITCH},
}

func (m *mainWindow) chooseImport() {
	fc, err := gtk.FileChooserDialogNewWith2Buttons("Import rules", m.win, gtk.FILE_CHOOSER_ACTION_OPEN,
		"_Cancel", gtk.RESPONSE_CANCEL, "_Import", gtk.RESPONSE_ACCEPT)
	if err != nil {
		return
	}
	// The format is chosen explicitly: an OpenSnitch file and a Bastion
	// JSON file look alike by name.
	formats := mustCombo()
	for _, f := range importFormats {
		formats.AppendText(f.name)
	}
	formats.SetActive(0)
	extra := mustBox(gtk.ORIENTATION_HORIZONTAL, 8)
	extra.PackStart(mustLabel("Format:"), false, false, 0)
	extra.PackStart(formats, false, false, 0)
	extra.ShowAll()
	fc.SetExtraWidget(extra)
	ff, _ := gtk.FileFilterNew()
	ff.SetName("Rule files (*.json, *.toml)")
	ff.AddPattern("*.json")
	ff.AddPattern("*.toml")
	fc.AddFilter(ff)
	fc.Connect("response", func(_ *gtk.FileChooserDialog, resp gtk.ResponseType) {
		defer fc.Destroy()
		if resp != gtk.RESPONSE_ACCEPT {
			return
		}
		format := importFormats[max(0, formats.GetActive())].format
		m.importFile(fc.GetFilename(), format)
	})
	fc.Show()
}

// importFile imports the rules of a file; the rules service parses it.
func (m *mainWindow) importFile(path string, format uiv1.Format) {
	data, err := os.ReadFile(path)
	if err != nil {
		m.fail("Could not read the file", err)
		return
	}
	call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.ImportRulesResponse, error) {
		return ui.ImportRules(ctx, &uiv1.ImportRulesRequest{Format: format, Data: data})
	}, func(resp *uiv1.ImportRulesResponse, err error) {
		if err != nil {
			m.fail("Could not import "+filepath.Base(path), err)
			return
		}
		text := fmt.Sprintf("Imported %d rule(s) from %s.", len(resp.GetImported()), filepath.Base(path))
		kind := gtk.MESSAGE_INFO
		if p := resp.GetProblems(); len(p) > 0 {
			kind = gtk.MESSAGE_WARNING
			text += fmt.Sprintf(" %d could not be imported:\n• %s", len(p), strings.Join(inertAll(p), "\n• "))
		}
		m.showNotice(kind, text, nil)
		m.refreshRules()
	})
}

func (m *mainWindow) chooseExport() {
	fc, err := gtk.FileChooserDialogNewWith2Buttons("Export rules", m.win, gtk.FILE_CHOOSER_ACTION_SAVE,
		"_Cancel", gtk.RESPONSE_CANCEL, "_Export", gtk.RESPONSE_ACCEPT)
	if err != nil {
		return
	}
	fc.SetDoOverwriteConfirmation(true)
	fc.SetCurrentName("bastion-rules.json")
	fc.Connect("response", func(_ *gtk.FileChooserDialog, resp gtk.ResponseType) {
		defer fc.Destroy()
		if resp != gtk.RESPONSE_ACCEPT {
			return
		}
		format := uiv1.Format_FORMAT_JSON
		if strings.HasSuffix(fc.GetFilename(), ".toml") {
			format = uiv1.Format_FORMAT_TOML
		}
		m.exportFile(fc.GetFilename(), format)
	})
	fc.Show()
}

// exportFile writes the user's rules to path.
func (m *mainWindow) exportFile(path string, format uiv1.Format) {
	call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.ExportRulesResponse, error) {
		resp, err := ui.ExportRules(ctx, &uiv1.ExportRulesRequest{Format: format})
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, resp.GetData(), 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", path, err)
		}
		return resp, nil
	}, func(_ *uiv1.ExportRulesResponse, err error) {
		if err != nil {
			m.fail("Could not export the rules", err)
			return
		}
		m.showNotice(gtk.MESSAGE_INFO, fmt.Sprintf("Exported %d rule(s) to %s.", len(m.rules), path), nil)
	})
}

func (m *mainWindow) historyPage() gtk.IWidget {
	page := mustBox(gtk.ORIENTATION_VERTICAL, 8)
	page.SetMarginTop(10)
	page.SetMarginBottom(10)
	page.SetMarginStart(12)
	page.SetMarginEnd(12)
	bar := mustBox(gtk.ORIENTATION_HORIZONTAL, 6)
	hint := mustLabel("Recent decisions, newest first: what was allowed or denied, and by which rule or answer.")
	addClass(hint, "bastion-key")
	bar.PackStart(hint, false, false, 0)
	mk := mustButton("_Make a rule from this…")
	mk.Connect("clicked", m.ruleFromHistory)
	bar.PackEnd(mk, false, false, 0)
	page.PackStart(bar, false, false, 0)
	m.histStore, _ = gtk.ListStoreNew(glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING,
		glib.TYPE_STRING, glib.TYPE_INT, glib.TYPE_STRING)
	m.histView = newListView(m.histStore)
	textColumn(m.histView, "Time", hColTime, false, -1)
	textColumn(m.histView, "Action", hColAction, false, hColActionColor)
	textColumn(m.histView, "Program", hColApp, true, -1)
	textColumn(m.histView, "Destination", hColDest, true, -1)
	textColumn(m.histView, "Decided by", hColBy, false, -1)
	m.histView.Connect("row-activated", m.ruleFromHistory)
	sw := mustScrolled()
	sw.Add(m.histView)
	page.PackStart(sw, true, true, 0)
	return page
}

func decidedBy(e *uiv1.HistoryEntry) string {
	by := e.GetDecidedBy()
	switch {
	case strings.HasPrefix(by, "rule:"):
		return "rule " + strings.TrimPrefix(by, "rule:")
	case by == "prompt":
		return "your answer"
	case by == "default":
		return "default (no prompt client)"
	case by == "deadline":
		return "default (not answered)"
	}
	return by
}

func (m *mainWindow) historyReset() {
	m.histStore.Clear()
	for i, e := range m.a.history {
		m.addHistoryRow(i, e)
	}
}

func (m *mainWindow) historyAdded(e *uiv1.HistoryEntry) {
	m.addHistoryRow(len(m.a.history)-1, e)
}

func (m *mainWindow) addHistoryRow(i int, e *uiv1.HistoryEntry) {
	it := m.histStore.Prepend() // newest first
	m.histStore.Set(it, []int{hColTime, hColAction, hColApp, hColDest, hColBy, hColIndex, hColActionColor},
		[]interface{}{e.GetTime().AsTime().In(m.a.loc).Format("15:04:05"), capitalize(actionName(e.GetAction())),
			inert.String(apiconv.ExeText(e.GetProcess())), inert.String(target(e.GetFlow(), e.GetHost())) + " " + protoName(e.GetFlow()),
			decidedBy(e), i, actionColor(e.GetAction())})
}

// selectedHistory is the history entry of the selected row.
func (m *mainWindow) selectedHistory() *uiv1.HistoryEntry {
	sel, _ := m.histView.GetSelection()
	model, it, ok := sel.GetSelected()
	if !ok {
		return nil
	}
	v, err := model.ToTreeModel().GetValue(it, hColIndex)
	if err != nil {
		return nil
	}
	i, _ := v.GoValue()
	idx, ok := i.(int)
	if !ok || idx < 0 || idx >= len(m.a.history) {
		return nil
	}
	return m.a.history[idx]
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

func (m *mainWindow) laterPage() gtk.IWidget {
	page := mustBox(gtk.ORIENTATION_VERTICAL, 8)
	page.SetMarginTop(10)
	page.SetMarginBottom(10)
	page.SetMarginStart(12)
	page.SetMarginEnd(12)
	bar := mustBox(gtk.ORIENTATION_HORIZONTAL, 6)
	hint := mustLabel("Connections the default decided while nobody answered. Make a rule for them, or dismiss them.")
	addClass(hint, "bastion-key")
	bar.PackStart(hint, false, false, 0)
	allow := mustButton("_Allow…")
	deny := mustButton("_Deny…")
	dismiss := mustButton("D_ismiss")
	allow.Connect("clicked", func() { m.resolveSelected(rulesv1.Action_ACTION_ALLOW) })
	deny.Connect("clicked", func() { m.resolveSelected(rulesv1.Action_ACTION_DENY) })
	dismiss.Connect("clicked", func() { m.resolveSelected(rulesv1.Action_ACTION_UNSPECIFIED) })
	bar.PackEnd(dismiss, false, false, 0)
	bar.PackEnd(deny, false, false, 0)
	bar.PackEnd(allow, false, false, 0)
	page.PackStart(bar, false, false, 0)
	m.laterStore, _ = gtk.ListStoreNew(glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING, glib.TYPE_STRING,
		glib.TYPE_STRING, glib.TYPE_INT, glib.TYPE_STRING)
	m.laterView = newListView(m.laterStore)
	textColumn(m.laterView, "Time", hColTime, false, -1)
	textColumn(m.laterView, "Default", hColAction, false, hColActionColor)
	textColumn(m.laterView, "Program", hColApp, true, -1)
	textColumn(m.laterView, "Destination", hColDest, true, -1)
	sw := mustScrolled()
	sw.Add(m.laterView)
	page.PackStart(sw, true, true, 0)
	return page
}

func (m *mainWindow) refreshLater() {
	call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.ListDecideLaterResponse, error) {
		return ui.ListDecideLater(ctx, &uiv1.ListDecideLaterRequest{})
	}, func(resp *uiv1.ListDecideLaterResponse, err error) {
		if m.a.main != m {
			return
		}
		if err != nil {
			m.a.log.Warn("list decide-later entries", "err", err)
			return
		}
		m.laterEntries = resp.GetEntries()
		m.laterStore.Clear()
		now := m.a.now()
		for i, e := range m.laterEntries {
			it := m.laterStore.Append()
			m.laterStore.Set(it, []int{hColTime, hColAction, hColApp, hColDest, hColIndex, hColActionColor},
				[]interface{}{ago(e.GetTime().AsTime(), now, m.a.loc), capitalize(actionName(e.GetApplied())),
					inert.String(apiconv.ExeText(e.GetProcess())), inert.String(target(e.GetFlow(), e.GetHost())) + " " + protoName(e.GetFlow()),
					i, actionColor(e.GetApplied())})
		}
	})
}

// resolveSelected makes a rule for the selected decide-later entry with
// action a (after the user reviews it in the rule dialog), or only
// removes the entry when a is unspecified.
func (m *mainWindow) resolveSelected(a rulesv1.Action) {
	i := selectedIndex(m.laterView)
	if i < 0 || i >= len(m.laterEntries) {
		return
	}
	e := m.laterEntries[i]
	resolve := func(r *rulesv1.Rule) {
		call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.ResolveDecideLaterResponse, error) {
			return ui.ResolveDecideLater(ctx, &uiv1.ResolveDecideLaterRequest{Id: e.GetId(), Rule: r})
		}, func(_ *uiv1.ResolveDecideLaterResponse, err error) {
			if err != nil {
				m.fail("Could not resolve the entry", err)
				return
			}
			m.refreshLater()
			m.refreshRules()
		})
	}
	if a == rulesv1.Action_ACTION_UNSPECIFIED {
		resolve(nil)
		return
	}
	m.openRuleFor(e.GetProcess(), e.GetFlow(), e.GetHost(), a, resolve)
}

func (m *mainWindow) statusPage() gtk.IWidget {
	grid := mustGrid()
	grid.SetRowSpacing(8)
	grid.SetColumnSpacing(24)
	grid.SetMarginTop(18)
	grid.SetMarginStart(24)
	grid.SetMarginEnd(24)
	row := 0
	section := func(title string) {
		l := mustLabel(title)
		addClass(l, "bastion-subtitle")
		l.SetMarginTop(8)
		l.SetMarkup("<b>" + glib.MarkupEscapeText(title) + "</b>")
		grid.Attach(l, 0, row, 2, 1)
		row++
	}
	add := func(key string) {
		k := mustLabel(key)
		addClass(k, "bastion-key")
		v := valueLabel()
		grid.Attach(k, 0, row, 1, 1)
		grid.Attach(v, 1, row, 1, 1)
		m.statusValues[key] = v
		row++
	}
	section("Rules service")
	for _, k := range []string{"Connection", "Socket", "Version", "Rules", "Rules database", "Prompt clients", "Waiting prompts",
		"Unanswered prompts", "No prompt client"} {
		add(k)
	}
	section("Agent")
	for _, k := range []string{"Agent", "Identification", "Firewall", "Reused UDP ports", "Host names", "Agent version", "Running since"} {
		add(k)
	}
	sw := mustScrolled()
	sw.Add(grid)
	return sw
}

// statusChanged shows the connection state in the banner and the status
// page.
func (m *mainWindow) statusChanged() {
	a := m.a
	st := a.status
	set := func(k, v string) { m.statusValues[k].SetText(v) }
	set("Socket", a.cfg.UISocket)
	switch {
	case !a.up && a.upErr == nil:
		m.bannerText.SetText("Connecting to the rules service…")
		m.banner.SetMessageType(gtk.MESSAGE_INFO)
		m.banner.Show()
		set("Connection", "connecting…")
	case !a.up:
		m.banner.SetMessageType(gtk.MESSAGE_ERROR)
		m.bannerText.SetText(fmt.Sprintf("Not connected to your rules service (bastion-uiserver) at %s. "+
			"Reconnecting automatically… Until then, prompts cannot be shown here.", a.cfg.UISocket))
		m.bannerText.SetTooltipText(statusMessage(a.upErr))
		m.banner.Show()
		set("Connection", "not connected: "+statusMessage(a.upErr))
	case !st.GetAgentConnected():
		m.banner.SetMessageType(gtk.MESSAGE_WARNING)
		m.bannerText.SetText("The Bastion agent is not connected to the rules service: your rules are not enforced " +
			"and nobody will be asked about new connections until it is back.")
		m.banner.Show()
		set("Connection", "connected")
	default:
		m.banner.Hide()
		set("Connection", "connected")
	}
	if !a.up || st == nil {
		return
	}
	set("Version", orDash(st.GetVersion()))
	set("Rules", fmt.Sprint(st.GetRules()))
	set("Rules database", orDash(st.GetStorePath()))
	set("Prompt clients", fmt.Sprint(st.GetPromptClients()))
	set("Waiting prompts", fmt.Sprint(st.GetPendingPrompts()))
	set("Unanswered prompts", fmt.Sprintf("%s after %s", actionName(st.GetTimeoutAction()), st.GetPromptTimeout().AsDuration()))
	set("No prompt client", actionName(st.GetSilentAction())+" (listed under Decide later)")
	ag := st.GetAgent()
	if !st.GetAgentConnected() || ag == nil {
		for _, k := range []string{"Identification", "Firewall", "Reused UDP ports", "Host names", "Agent version", "Running since"} {
			set(k, "-")
		}
		set("Agent", "not connected")
		return
	}
	set("Agent", "connected")
	set("Identification", orDash(ag.GetMechanism())+"  ("+strings.Join(ag.GetFeatures(), ", ")+")")
	fw := fmt.Sprintf("%s, queue %d", orDash(ag.GetFirewallBackend()), ag.GetQueueNum())
	if ag.GetFailOpen() {
		fw += ", fail-open"
	} else {
		fw += ", fail-closed"
	}
	set("Firewall", fw)
	// A new UDP socket that reuses an old flow's ports is asked about
	// only while this protection is active.
	set("Reused UDP ports", orDash(ag.GetUdpReuseProtection()))
	if ag.GetDnsQueueNum() != 0 {
		set("Host names", fmt.Sprintf("from DNS answers, %d addresses named", ag.GetDnsNames()))
	} else {
		set("Host names", "off (connections show addresses only)")
	}
	set("Agent version", orDash(ag.GetVersion()))
	if ag.GetStarted() != nil {
		set("Running since", ag.GetStarted().AsTime().In(a.loc).Format(time.DateTime))
	}
}
