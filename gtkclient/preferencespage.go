package gtkclient

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gotk3/gotk3/gtk"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/bastion-fw/bastion/internal/inert"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// preferences is the Preferences page: the rules service's settings a
// person may change (GetConfig, SetConfig), applied by the service at once.
type preferences struct {
	silent   *gtk.ComboBoxText
	timeout  *gtk.SpinButton
	deadline *gtk.ComboBoxText
	history  *gtk.SpinButton
	// retention is in days; insensitive while the service does not tell
	// it (a service older than the setting).
	retention *gtk.SpinButton
	apply     *gtk.Button
	revert    *gtk.Button
	// result says what the last load or save did.
	result *gtk.Label
	// loaded is the configuration as the service last reported it; nil
	// until it has.
	loaded *uiv1.UserConfig
	path   string
	// asked is set once the settings were asked for on this connection.
	asked bool
}

// prefActions are the actions the page offers, in the words a person
// reads; a "deny" is a silent drop.
var prefActions = []struct {
	action rulesv1.Action
	label  string
}{
	{rulesv1.Action_ACTION_ALLOW, "Allow"},
	{rulesv1.Action_ACTION_REJECT, "Reject (the program fails at once)"},
	{rulesv1.Action_ACTION_DENY, "Drop silently (the program waits, then times out)"},
}

func actionCombo() *gtk.ComboBoxText {
	c := mustCombo()
	for _, a := range prefActions {
		c.AppendText(a.label)
	}
	return c
}

func setActionCombo(c *gtk.ComboBoxText, a rulesv1.Action) {
	for i, pa := range prefActions {
		if pa.action == a {
			c.SetActive(i)
		}
	}
}

func comboAction(c *gtk.ComboBoxText) rulesv1.Action {
	if i := c.GetActive(); i >= 0 && i < len(prefActions) {
		return prefActions[i].action
	}
	return rulesv1.Action_ACTION_UNSPECIFIED
}

func (m *mainWindow) preferencesPage() gtk.IWidget {
	p := &m.prefs
	grid := mustGrid()
	grid.SetRowSpacing(6)
	grid.SetColumnSpacing(16)
	grid.SetMarginTop(18)
	grid.SetMarginStart(24)
	grid.SetMarginEnd(24)
	row := 0
	add := func(key string, w gtk.IWidget, unit, hint string) {
		k, _ := gtk.LabelNewWithMnemonic(key)
		k.SetMnemonicWidget(w)
		addClass(k, "bastion-key")
		k.SetXAlign(1)
		grid.Attach(k, 0, row, 1, 1)
		box := mustBox(gtk.ORIENTATION_HORIZONTAL, 8)
		box.PackStart(w, false, false, 0)
		if unit != "" {
			box.PackStart(mustLabel(unit), false, false, 0)
		}
		grid.Attach(box, 1, row, 1, 1)
		row++
		h := mustLabel(hint)
		addClass(h, "bastion-key")
		h.SetXAlign(0)
		h.SetLineWrap(true)
		h.SetMaxWidthChars(80)
		h.SetMarginBottom(10)
		grid.Attach(h, 1, row, 1, 1)
		row++
	}
	p.silent = actionCombo()
	add("_While no prompt is open", p.silent, "",
		"What happens at once to a new connection while no prompt client (this program or bastionctl prompt) is running. "+
			"Such connections are listed under Decide later.")
	p.timeout, _ = gtk.SpinButtonNewWithRange(1, 24*60*60, 1)
	p.timeout.SetWidthChars(6)
	add("A _prompt waits", p.timeout, "seconds for your answer",
		"From 1 second to 24 hours. The agent may give a connection less time; the prompt then ends a second before it.")
	p.deadline = actionCombo()
	add("_Then", p.deadline, "", "What happens to a connection when nobody answered its prompt in time.")
	p.history, _ = gtk.SpinButtonNewWithRange(0, 10000, 100)
	p.history.SetWidthChars(6)
	add("Connections _shown", p.history, "recent decisions shown first",
		"How many past decisions the Connections page starts with when it connects, at most 10,000.")
	p.retention, _ = gtk.SpinButtonNewWithRange(1, 366, 1)
	p.retention.SetWidthChars(6)
	add("Keep _history for", p.retention, "days",
		"From 1 to 366 days: past decisions, and the traffic the Programs page charts. Traffic by the minute is kept for a day.")

	buttons := mustBox(gtk.ORIENTATION_HORIZONTAL, 8)
	p.apply = mustButton("_Apply")
	addClass(p.apply, "suggested-action")
	p.revert = mustButton("_Revert")
	p.apply.Connect("clicked", m.applyPreferences)
	p.revert.Connect("clicked", func() { m.showPreferences(p.loaded, p.path) })
	buttons.PackStart(p.apply, false, false, 0)
	buttons.PackStart(p.revert, false, false, 0)
	grid.Attach(buttons, 1, row, 1, 1)
	row++
	p.result = mustLabel("")
	p.result.SetXAlign(0)
	p.result.SetLineWrap(true)
	p.result.SetSelectable(true)
	p.result.SetMaxWidthChars(80)
	grid.Attach(p.result, 1, row, 1, 1)

	for _, c := range []*gtk.ComboBoxText{p.silent, p.deadline} {
		c.Connect("changed", m.preferencesEdited)
	}
	for _, s := range []*gtk.SpinButton{p.timeout, p.history, p.retention} {
		s.Connect("value-changed", m.preferencesEdited)
	}
	m.showPreferences(nil, "")
	sw := mustScrolled()
	sw.Add(grid)
	return sw
}

const day = 24 * time.Hour

// retentionDays is a history retention in whole days, as the page shows
// it (the service's file may say "36h"); 0 if the service did not tell.
func retentionDays(c *uiv1.UserConfig) int {
	r := c.GetHistoryRetention()
	if r == nil || r.AsDuration() <= 0 {
		return 0
	}
	return max(1, int(r.AsDuration().Round(day)/day))
}

// edited is the page's settings as shown. The history retention is the
// service's as loaded while unchanged (so that a "36h" stays), and none
// for a service that did not tell it, which then keeps its own.
func (p *preferences) edited() *uiv1.UserConfig {
	c := &uiv1.UserConfig{
		SilentAction:  comboAction(p.silent),
		PromptTimeout: durationpb.New(time.Duration(p.timeout.GetValueAsInt()) * time.Second),
		TimeoutAction: comboAction(p.deadline),
		HistorySize:   uint32(p.history.GetValueAsInt()),
	}
	if was := retentionDays(p.loaded); was != 0 {
		c.HistoryRetention = p.loaded.GetHistoryRetention()
		if days := p.retention.GetValueAsInt(); days != was {
			c.HistoryRetention = durationpb.New(time.Duration(days) * day)
		}
	}
	return c
}

// dirty reports whether the page shows settings other than the service's.
func (p *preferences) dirty() bool {
	if p.loaded == nil {
		return false
	}
	e := p.edited()
	return e.GetSilentAction() != p.loaded.GetSilentAction() || e.GetTimeoutAction() != p.loaded.GetTimeoutAction() ||
		e.GetHistorySize() != p.loaded.GetHistorySize() || retentionDays(e) != retentionDays(p.loaded) ||
		e.GetPromptTimeout().AsDuration() != p.loaded.GetPromptTimeout().AsDuration().Truncate(time.Second)
}

func (m *mainWindow) preferencesEdited() {
	p := &m.prefs
	p.apply.SetSensitive(p.dirty())
	p.revert.SetSensitive(p.dirty())
}

// showPreferences fills the page with c (nil: not known yet).
func (m *mainWindow) showPreferences(c *uiv1.UserConfig, path string) {
	p := &m.prefs
	p.loaded, p.path = c, path
	for _, w := range []*gtk.Widget{&p.silent.Widget, &p.timeout.Widget, &p.deadline.Widget, &p.history.Widget} {
		w.SetSensitive(c != nil)
	}
	days := retentionDays(c)
	p.retention.SetSensitive(days != 0)
	p.retention.SetTooltipText("")
	if c != nil && days == 0 {
		p.retention.SetTooltipText("Your rules service (bastion-uiserver) is older than this window: " +
			"set history_retention in ~/.config/bastion/config.toml, or update Bastion.")
	}
	if c != nil {
		setActionCombo(p.silent, c.GetSilentAction())
		setActionCombo(p.deadline, c.GetTimeoutAction())
		p.timeout.SetValue(float64(c.GetPromptTimeout().AsDuration() / time.Second))
		p.history.SetValue(float64(c.GetHistorySize()))
		if days != 0 {
			p.retention.SetValue(float64(days))
		}
	}
	m.preferencesEdited()
}

// refreshPreferences reads the settings from the rules service, unless the
// person is editing them.
func (m *mainWindow) refreshPreferences() {
	if m.prefs.dirty() {
		return
	}
	m.prefs.asked = true
	call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.GetConfigResponse, error) {
		return ui.GetConfig(ctx, &uiv1.GetConfigRequest{})
	}, func(resp *uiv1.GetConfigResponse, err error) {
		if m.a.main != m || m.prefs.dirty() {
			return
		}
		if err != nil {
			m.showPreferences(nil, "")
			m.prefs.result.SetText(prefsError("Could not read your settings", err))
			return
		}
		m.showPreferences(resp.GetConfig(), resp.GetPath())
		m.prefs.result.SetText("Saved in " + homeShort(inert.String(resp.GetPath())) + ".")
	})
}

// applyPreferences sends the page's settings to the rules service, which
// saves and applies them.
func (m *mainWindow) applyPreferences() {
	p := &m.prefs
	c := p.edited()
	p.apply.SetSensitive(false)
	call(m.a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.SetConfigResponse, error) {
		return ui.SetConfig(ctx, &uiv1.SetConfigRequest{Config: c})
	}, func(resp *uiv1.SetConfigResponse, err error) {
		if m.a.main != m {
			return
		}
		if err != nil {
			p.result.SetText(prefsError("Your settings were not saved", err))
			m.preferencesEdited()
			return
		}
		m.showPreferences(resp.GetConfig(), resp.GetPath())
		p.result.SetText(fmt.Sprintf("Saved in %s at %s, and in effect now.", homeShort(inert.String(resp.GetPath())),
			m.a.now().In(m.a.loc).Format("15:04:05")))
	})
}

// prefsError words a failed settings call, saying what to do about a
// rules service that predates the Preferences page.
func prefsError(what string, err error) string {
	if status.Code(err) == codes.Unimplemented {
		return what + ": your rules service (bastion-uiserver) is older than this window. " +
			"Edit ~/.config/bastion/config.toml and restart it, or update Bastion."
	}
	return what + ": " + statusMessage(err)
}

// homeShort writes a path under the home directory as ~/….
func homeShort(path string) string {
	if h, err := os.UserHomeDir(); err == nil && h != "/" {
		if rel, err := filepath.Rel(h, path); err == nil && !strings.HasPrefix(rel, "..") {
			return "~/" + rel
		}
	}
	return path
}

// preferencesConnection reads the settings once a connection is up, and
// forgets that it did when it goes down.
func (m *mainWindow) preferencesConnection() {
	switch {
	case !m.a.up:
		m.prefs.asked = false
	case !m.prefs.asked:
		m.refreshPreferences()
	}
}
