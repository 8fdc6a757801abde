package gtkclient

import (
	"context"

	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/inert"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

func (m *mainWindow) laterPage() gtk.IWidget {
	page, bar := newPage()
	addHint(bar, "Connections the default decided while nobody answered. Make a rule for them, or dismiss them.")
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
