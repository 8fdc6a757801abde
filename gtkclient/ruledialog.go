package gtkclient

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

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
	errLabel  *gtk.Label
	orig      *rulesv1.Rule
	now       func() time.Time
	save      func(r *rulesv1.Rule)
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
	d := &ruleDialog{orig: proto.Clone(r).(*rulesv1.Rule), now: now, save: save}
	dlg, err := gtk.DialogNew()
	if err != nil {
		panic("gtk: create dialog: " + err.Error())
	}
	d.dlg = dlg
	dlg.SetTitle(title)
	dlg.SetTransientFor(parent)
	dlg.SetDefaultSize(520, -1)
	dlg.AddButton("_Cancel", gtk.RESPONSE_CANCEL)
	ok, _ := dlg.AddButton("_Save", gtk.RESPONSE_OK)
	addClass(ok, "suggested-action")
	dlg.SetDefaultResponse(gtk.RESPONSE_OK)

	grid := mustGrid()
	grid.SetRowSpacing(8)
	grid.SetColumnSpacing(12)
	grid.SetMarginTop(12)
	grid.SetMarginBottom(12)
	grid.SetMarginStart(16)
	grid.SetMarginEnd(16)
	row := 0
	add := func(key string, w gtk.IWidget, hint string) {
		k := mustLabel(key)
		addClass(k, "bastion-key")
		grid.Attach(k, 0, row, 1, 1)
		grid.Attach(w, 1, row, 1, 1)
		if hint != "" {
			if e, ok := w.(*gtk.Entry); ok {
				e.SetPlaceholderText(hint)
			}
		}
		row++
	}
	entry := func(text string) *gtk.Entry {
		e, _ := gtk.EntryNew()
		e.SetText(text)
		e.SetHExpand(true)
		e.SetActivatesDefault(true)
		return e
	}
	d.enabled, _ = gtk.CheckButtonNewWithLabel("Enabled")
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
	add("Action", d.action, "")
	d.exe = entry(r.GetExe())
	add("Program", d.exe, "any program; a path or a glob such as /opt/**/bin/*")
	d.cmdline = entry(r.GetCmdline())
	add("Command line", d.cmdline, "any; a regular expression for the whole line")
	d.host = entry(r.GetHost())
	add("Host name", d.host, "any; example.com or *.example.com")
	d.dst = entry(r.GetDst())
	add("Address", d.dst, "any; 192.0.2.1, 2001:db8::/32")
	d.ports = entry(portsText(r))
	add("Port", d.ports, "any; 443 or 8000-8999")
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
	add("Protocol", d.protocol, "")
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
	add("Lifetime", d.lifetime, "")
	d.minutes, _ = gtk.SpinButtonNewWithRange(1, 60*24*365, 1)
	left := 60.0
	if r.GetLifetime() == rulesv1.Lifetime_LIFETIME_DURATION {
		left = max(1, r.GetExpires().AsTime().Sub(now()).Minutes())
	}
	d.minutes.SetValue(float64(int(left + 0.5)))
	add("Minutes left", d.minutes, "")
	d.lifetime.Connect("changed", func() { d.minutes.SetSensitive(d.lifetime.GetActive() == 2) })
	d.minutes.SetSensitive(d.lifetime.GetActive() == 2)
	d.note = entry(r.GetNote())
	add("Note", d.note, "")
	d.errLabel = mustLabel("")
	d.errLabel.SetLineWrap(true)
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
		lo, hi, isRange := strings.Cut(ports, "-")
		l, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		if err != nil {
			return nil, fmt.Errorf("port %q: not a number from 0 to 65535", lo)
		}
		h := l
		if isRange {
			if h, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 16); err != nil {
				return nil, fmt.Errorf("port %q: not a number from 0 to 65535", hi)
			}
		}
		r.DstPortMin, r.DstPortMax = uint32(l), uint32(h)
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
		return nil, err
	}
	return r, nil
}

func (d *ruleDialog) submit() {
	r, err := d.rule()
	if err != nil {
		d.errLabel.SetText("Not a valid rule: " + inert.String(err.Error()))
		return
	}
	d.save(r)
	d.dlg.Destroy()
}
