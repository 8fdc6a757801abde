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
	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/inert"
	"github.com/bastion-fw/bastion/internal/rules"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

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

func (m *mainWindow) rulesPage() gtk.IWidget {
	page, bar := newPage()
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
	add.Connect("clicked", m.newRule)
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

// newRule opens the dialog for a new, empty rule.
func (m *mainWindow) newRule() {
	m.lastDialog = newRuleDialog(m.win, "New rule", &rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW,
		Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}, m.a.now, m.addRule)
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
		if m.rules == nil {
			m.rules = []*rulesv1.Rule{} // listed, and none: a rule named in the history was deleted
		}
		m.fillRules()
		m.historyReset() // "Decided by" names the rules
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
		color := actionColor(r.GetAction())
		if !r.GetEnabled() {
			color = "#888888"
		}
		m.rulesStore.Set(it, []int{colEnabled, colAction, colApp, colDest, colLifetime, colHits, colLastHit, colActionColor},
			[]interface{}{r.GetEnabled(), capitalize(actionName(r.GetAction())), app, inert.String(ruleDestination(r)),
				ruleLifetime(r, now), fmt.Sprint(r.GetHits()), lastHitText(r, now, m.a.loc), color})
		if r.GetId() == keepID {
			sel.SelectIter(it)
		}
	}
	m.rulesCount.SetText(fmt.Sprintf("%d of %d rules", len(m.shownRules), len(m.rules)))
	m.selectionChanged()
}

func lastHitText(r *rulesv1.Rule, now time.Time, loc *time.Location) string {
	if r.GetLastHit() == nil {
		return "never"
	}
	return ago(r.GetLastHit().AsTime(), now, loc)
}

// refreshTimes redraws the rules' relative times in place, keeping the
// selection and the scroll position.
func (m *mainWindow) refreshTimes() {
	now := m.a.now()
	it, ok := m.rulesStore.GetIterFirst()
	for i := 0; ok && i < len(m.shownRules); i++ {
		r := m.shownRules[i]
		m.rulesStore.Set(it, []int{colLifetime, colLastHit}, []interface{}{ruleLifetime(r, now), lastHitText(r, now, m.a.loc)})
		ok = m.rulesStore.IterNext(it)
	}
}

func (m *mainWindow) selectedRule() *rulesv1.Rule {
	i := selectedIndex(m.rulesView)
	if i < 0 || i >= len(m.shownRules) {
		return nil
	}
	return m.shownRules[i]
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

// deleteSelected deletes the selected rule at once and offers to undo it.
func (m *mainWindow) deleteSelected() {
	if r := m.selectedRule(); r != nil {
		m.deleteRuleUndoably(r, m.addRule, m.refreshRules)
	}
}

// deleteRuleUndoably deletes r at once and offers to undo it, which adds
// it back with readd (a confirmation dialog is the classic way to teach
// people to click Yes); done runs once it is deleted.
func (m *mainWindow) deleteRuleUndoably(r *rulesv1.Rule, readd func(*rulesv1.Rule), done func()) {
	r = proto.Clone(r).(*rulesv1.Rule)
	call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.DeleteRuleResponse, error) {
		return ui.DeleteRule(ctx, &uiv1.DeleteRuleRequest{Id: r.GetId()})
	}, func(_ *uiv1.DeleteRuleResponse, err error) {
		if err != nil {
			m.fail("Could not delete the rule", err)
			return
		}
		m.showNotice(gtk.MESSAGE_INFO, "Deleted the rule for "+inert.String(ruleApp(r))+" → "+inert.String(ruleDestination(r))+".",
			func() {
				back := rules.ToProto(ruleFromListed(r))
				back.Id, back.Created = "", nil
				readd(back)
			})
		done()
	})
}

// ruleFromListed converts a listed rule for re-adding; listed rules are valid.
func ruleFromListed(p *rulesv1.Rule) rules.Rule {
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
