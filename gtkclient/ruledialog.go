package gtkclient

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/inert"
	"github.com/bastion-fw/bastion/internal/rules"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// ruleDialog edits one rule. It is not modal in the sense of a nested
// main loop: save is called from its response handler.
type ruleDialog struct {
	dlg      *gtk.Dialog
	enabled  *gtk.CheckButton
	action   *gtk.ComboBoxText
	exe      *gtk.Entry
	cmdline  *gtk.Entry
	host     *gtk.Entry
	dst      *gtk.Entry
	ports    *gtk.Entry
	protocol *gtk.ComboBoxText
	// protocols are the protocol combo's entries, in order.
	protocols []flow.Proto
	lifetime  *gtk.ComboBoxText
	minutes   *gtk.SpinButton
	note      *gtk.Entry
	// errLabel sums up what keeps the rule from being saved;
	// fieldErrs say, under each field, what is wrong with it.
	errLabel  *gtk.Label
	fieldErrs map[string]*gtk.Label
	// anyWarning and anyConfirm ask for a confirmation before a rule
	// for every program and every destination is saved.
	anyWarning *gtk.Label
	anyConfirm *gtk.CheckButton
	orig       *rulesv1.Rule
	now        func() time.Time
	save       func(r *rulesv1.Rule)
}

var (
	dialogActions = []rulesv1.Action{rulesv1.Action_ACTION_ALLOW, rulesv1.Action_ACTION_DENY, rulesv1.Action_ACTION_REJECT}
	// dialogProtocols are the protocols the dialog offers (0: any); a
	// rule's own, if it is another, is offered too.
	dialogProtocols = []flow.Proto{0, flow.TCP, flow.UDP, flow.ICMP, flow.ICMPv6, flow.UDPLite, flow.SCTP, flow.DCCP, flow.GRE}
	dialogLifetimes = []rulesv1.Lifetime{rulesv1.Lifetime_LIFETIME_FOREVER, rulesv1.Lifetime_LIFETIME_SESSION,
		rulesv1.Lifetime_LIFETIME_DURATION}
)

// newRuleDialog opens a dialog for r (a new rule when r has no ID); save
// gets the edited rule once it is valid.
func newRuleDialog(parent *gtk.Window, title string, r *rulesv1.Rule, now func() time.Time, save func(*rulesv1.Rule)) *ruleDialog {
	d := &ruleDialog{orig: proto.Clone(r).(*rulesv1.Rule), now: now, save: save, fieldErrs: map[string]*gtk.Label{}}
	dlg, err := gtk.DialogNew()
	if err != nil {
		panic("gtk: create dialog: " + err.Error())
	}
	d.dlg = dlg
	dlg.SetTitle(title)
	dlg.SetTransientFor(parent)
	dlg.SetDefaultSize(600, -1)
	dlg.AddButton("_Cancel", gtk.RESPONSE_CANCEL)
	ok, _ := dlg.AddButton("_Save", gtk.RESPONSE_OK)
	addClass(ok, "suggested-action")
	dlg.SetDefaultResponse(gtk.RESPONSE_OK)

	grid := mustGrid()
	grid.SetRowSpacing(6)
	grid.SetColumnSpacing(12)
	grid.SetMarginTop(12)
	grid.SetMarginBottom(12)
	grid.SetMarginStart(16)
	grid.SetMarginEnd(16)
	row := 0
	// add puts a field in the grid under its label; an _ in the label
	// marks the Alt key that focuses the field.
	add := func(label string, w gtk.IWidget, hint string) {
		key := strings.ReplaceAll(label, "_", "")
		k, _ := gtk.LabelNewWithMnemonic(label)
		k.SetMnemonicWidget(w)
		addClass(k, "bastion-key")
		grid.Attach(k, 0, row, 1, 1)
		grid.Attach(w, 1, row, 1, 1)
		row++
		e, isEntry := w.(*gtk.Entry)
		if !isEntry {
			return
		}
		if hint != "" {
			e.SetPlaceholderText(hint)
		}
		// What is wrong with this field, under it; hidden while fine.
		l := mustLabel("")
		l.SetLineWrap(true)
		l.SetXAlign(0)
		l.SetMaxWidthChars(72)
		addClass(l, "bastion-error")
		l.SetNoShowAll(true)
		grid.Attach(l, 1, row, 1, 1)
		row++
		d.fieldErrs[key] = l
		e.Connect("changed", func() { d.setFieldError(key, ""); d.anyWarningCheck() })
	}
	entry := func(text string) *gtk.Entry {
		e, _ := gtk.EntryNew()
		e.SetText(text)
		e.SetHExpand(true)
		e.SetActivatesDefault(true)
		return e
	}
	d.enabled, _ = gtk.CheckButtonNewWithMnemonic("Ena_bled")
	d.enabled.SetActive(r.GetEnabled() || r.GetId() == "")
	add("", d.enabled, "")
	d.action = mustCombo()
	for _, a := range dialogActions {
		d.action.AppendText(capitalize(actionName(a)))
	}
	d.action.SetActive(0)
	for i, a := range dialogActions {
		if a == r.GetAction() {
			d.action.SetActive(i)
		}
	}
	add("_Action", d.action, "")
	d.exe = entry(r.GetExe())
	add("_Program", d.exe, "any program; a path or a glob such as /opt/**/bin/*")
	d.cmdline = entry(r.GetCmdline())
	add("Comma_nd line", d.cmdline, "any; a regular expression for the whole line")
	d.host = entry(r.GetHost())
	add("_Host name", d.host, "any; example.com or *.example.com")
	d.dst = entry(r.GetDst())
	add("A_ddress", d.dst, "any; 192.0.2.1, 2001:db8::/32")
	d.ports = entry(portsText(r))
	add("P_ort", d.ports, "any; 443 or 8000-8999")
	d.protocol = mustCombo()
	d.protocol.SetActive(0)
	d.protocols = dialogProtocols
	ruleProto := rules.ProtocolOf(r)
	if !slices.Contains(d.protocols, ruleProto) {
		d.protocols = append(slices.Clone(d.protocols), ruleProto)
	}
	for i, p := range d.protocols {
		name := "Any"
		if p != 0 {
			name = displayProto(p)
		}
		d.protocol.AppendText(name)
		if p == ruleProto {
			d.protocol.SetActive(i)
		}
	}
	add("Pro_tocol", d.protocol, "")
	d.protocol.Connect("changed", func() { d.setFieldError(fieldPort, ""); d.anyWarningCheck() })
	d.lifetime = mustCombo()
	for _, l := range []string{"Forever", "Until I log out", "For a time"} {
		d.lifetime.AppendText(l)
	}
	d.lifetime.SetActive(0)
	for i, l := range dialogLifetimes {
		if l == r.GetLifetime() {
			d.lifetime.SetActive(i)
		}
	}
	add("_Lifetime", d.lifetime, "")
	d.minutes, _ = gtk.SpinButtonNewWithRange(1, 60*24*365, 1)
	left := 60.0
	if r.GetLifetime() == rulesv1.Lifetime_LIFETIME_DURATION {
		left = max(1, r.GetExpires().AsTime().Sub(now()).Minutes())
	}
	d.minutes.SetValue(float64(int(left + 0.5)))
	add("_Minutes left", d.minutes, "")
	d.lifetime.Connect("changed", func() { d.minutes.SetSensitive(d.lifetime.GetActive() == 2) })
	d.minutes.SetSensitive(d.lifetime.GetActive() == 2)
	d.note = entry(r.GetNote())
	add("Not_e", d.note, "")
	d.anyWarning = mustLabel("")
	d.anyWarning.SetMarkup("<b>This rule names no program and no destination.</b> It decides every connection of every " +
		"program you run, to anywhere, and you will not be asked again.")
	d.anyWarning.SetLineWrap(true)
	d.anyWarning.SetXAlign(0)
	d.anyWarning.SetMaxWidthChars(70)
	addClass(d.anyWarning, "bastion-error")
	d.anyWarning.SetNoShowAll(true)
	grid.Attach(d.anyWarning, 0, row, 2, 1)
	row++
	d.anyConfirm, _ = gtk.CheckButtonNewWithMnemonic("_Yes, this rule is for any program, anywhere")
	d.anyConfirm.SetNoShowAll(true)
	grid.Attach(d.anyConfirm, 0, row, 2, 1)
	row++
	d.errLabel = mustLabel("")
	d.errLabel.SetLineWrap(true)
	d.errLabel.SetXAlign(0)
	addClass(d.errLabel, "bastion-error")
	grid.Attach(d.errLabel, 0, row, 2, 1)

	area, _ := dlg.GetContentArea()
	area.PackStart(grid, true, true, 0)
	dlg.Connect("response", func(_ *gtk.Dialog, resp gtk.ResponseType) {
		if resp != gtk.RESPONSE_OK {
			dlg.Destroy()
			return
		}
		d.submit()
	})
	dlg.ShowAll()
	return d
}

func portsText(r *rulesv1.Rule) string {
	switch lo, hi := r.GetDstPortMin(), r.GetDstPortMax(); {
	case lo == 0 && hi == 0:
		return ""
	case lo == hi:
		return strconv.Itoa(int(lo))
	default:
		return fmt.Sprintf("%d-%d", lo, hi)
	}
}

// rule reads the widgets into a rule, keeping the original's bookkeeping.
func (d *ruleDialog) rule() (*rulesv1.Rule, error) {
	r := proto.Clone(d.orig).(*rulesv1.Rule)
	r.Enabled = d.enabled.GetActive()
	if i := d.action.GetActive(); i >= 0 {
		r.Action = dialogActions[i]
	}
	get := func(e *gtk.Entry) string { s, _ := e.GetText(); return strings.TrimSpace(s) }
	r.Exe, r.Cmdline, r.Host, r.Dst, r.Note = get(d.exe), get(d.cmdline), get(d.host), get(d.dst), get(d.note)
	r.DstPortMin, r.DstPortMax = 0, 0
	if ports := get(d.ports); ports != "" {
		lo, hi, problem := parsePorts(ports)
		if problem != "" {
			return nil, errors.New(problem)
		}
		r.DstPortMin, r.DstPortMax = uint32(lo), uint32(hi)
	}
	if i := d.protocol.GetActive(); i >= 0 && i < len(d.protocols) {
		r.Protocol, r.ProtocolNumber = rules.ProtocolProto(d.protocols[i])
	}
	oldLife := r.GetLifetime()
	if i := d.lifetime.GetActive(); i >= 0 {
		r.Lifetime = dialogLifetimes[i]
	}
	r.Expires = nil
	if r.Lifetime == rulesv1.Lifetime_LIFETIME_DURATION {
		mins := time.Duration(d.minutes.GetValueAsInt()) * time.Minute
		r.Expires = timestamppb.New(d.now().Add(mins).Truncate(time.Second))
		if oldLife == rulesv1.Lifetime_LIFETIME_DURATION && d.orig.GetExpires() != nil {
			// Keep the expiry to the second when the minutes were not changed.
			old := d.orig.GetExpires().AsTime()
			if int(max(1, old.Sub(d.now()).Minutes())+0.5) == d.minutes.GetValueAsInt() {
				r.Expires = d.orig.GetExpires()
			}
		}
	}
	if _, err := rules.FromProto(r); err != nil {
		if inner := errors.Unwrap(err); inner != nil {
			err = inner // without "rule "" from wire"
		}
		return nil, err
	}
	return r, nil
}

// fields reads the dialog's fields for checking.
func (d *ruleDialog) fields() ruleFields {
	get := func(e *gtk.Entry) string { s, _ := e.GetText(); return strings.TrimSpace(s) }
	f := ruleFields{exe: get(d.exe), cmdline: get(d.cmdline), host: get(d.host), dst: get(d.dst), ports: get(d.ports), note: get(d.note)}
	if i := d.protocol.GetActive(); i >= 0 && i < len(d.protocols) {
		f.proto = d.protocols[i]
	}
	return f
}

// setFieldError shows problem under field, or hides the field's label
// when problem is "".
func (d *ruleDialog) setFieldError(field, problem string) {
	l := d.fieldErrs[field]
	if l == nil {
		return
	}
	l.SetMarkup("<small>" + glib.MarkupEscapeText(problem) + "</small>")
	l.SetVisible(problem != "")
}

// anyWarningCheck hides the any-program warning once a field names a
// program or a destination.
func (d *ruleDialog) anyWarningCheck() {
	if !d.fields().anywhere() {
		d.anyWarning.Hide()
		d.anyConfirm.Hide()
		d.anyConfirm.SetActive(false)
	}
}

// submit checks every field and saves the rule, or says under each field
// what is wrong with it. A rule for any program, anywhere, is saved only
// once the person has ticked the confirmation.
func (d *ruleDialog) submit() {
	f := d.fields()
	problems := f.problems()
	var bad []string
	for _, field := range []string{fieldProgram, fieldCmdline, fieldHost, fieldAddress, fieldPort, fieldNote} {
		d.setFieldError(field, problems[field])
		if problems[field] != "" {
			bad = append(bad, field)
		}
	}
	if len(bad) > 0 {
		if len(bad) == 1 {
			d.errLabel.SetText("The rule was not saved: check the field " + bad[0] + ".")
		} else {
			d.errLabel.SetText("The rule was not saved: check the fields " + strings.Join(bad[:len(bad)-1], ", ") + " and " + bad[len(bad)-1] + ".")
		}
		return
	}
	r, err := d.rule()
	if err != nil {
		// The fields passed their own checks; what is left is how they
		// combine, which the rules package words.
		d.errLabel.SetText("The rule was not saved: " + inert.String(err.Error()))
		return
	}
	if f.anywhere() && !d.anyConfirm.GetActive() {
		d.anyWarning.Show()
		d.anyConfirm.Show()
		d.errLabel.SetText("Tick the box above to save it anyway, or name a program or a destination.")
		return
	}
	d.save(r)
	d.dlg.Destroy()
}
