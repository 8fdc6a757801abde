package gtkclient

import (
	"strings"

	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/inert"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

func (m *mainWindow) historyPage() gtk.IWidget {
	page, bar := newPage()
	addHint(bar, "Recent decisions, newest first: what was allowed or denied, and by which rule or answer.")
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
