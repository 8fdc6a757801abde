package gtkclient

import (
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/gotk3/gotk3/gdk"
	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"
	"github.com/gotk3/gotk3/pango"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/inert"
	"github.com/bastion-fw/bastion/internal/procinfo"
	"github.com/bastion-fw/bastion/internal/rules"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// promptWindow asks about the first waiting prompt group. It is created
// once and shown while prompts wait.
type promptWindow struct {
	a   *app
	win *gtk.Window

	icon         *gtk.Image
	title, more  *gtk.Label
	subtitle     *gtk.Label
	exe, process *gtk.Label
	parent       *gtk.Label
	cmdShort     *gtk.Label
	cmdPlain     *gtk.Label
	cmdFull      *gtk.Label
	cmdExpander  *gtk.Expander
	dest, port   *gtk.Label
	connsKey     *gtk.Label
	conns        *gtk.Label
	countdown    *gtk.Label
	progress     *gtk.ProgressBar
	lifetime     *gtk.ComboBoxText
	scope        *gtk.ComboBoxText
	withCmd      *gtk.CheckButton
	preview      *gtk.Label
	denyHint     *gtk.Label
	errLabel     *gtk.Label
	allow, deny  *gtk.Button
	drop         *gtk.Button // "Drop silently"
	later, rules *gtk.Button

	shown   *promptGroup  // the group on screen, nil when hidden
	shownID string        // its primary prompt's ID
	shownAt time.Time     // when it appeared: the buttons arm ArmDelay later
	total   time.Duration // from the prompt's first sighting to its deadline
	scopes  []rules.Scope // the scope combo's entries
	armed   bool
	busy    bool // an answer is on its way
	ticking bool

	onShown func(id string) // test hook: after a prompt is on screen
}

func newPromptWindow(a *app) *promptWindow {
	p := &promptWindow{a: a}
	win, err := gtk.WindowNew(gtk.WINDOW_TOPLEVEL)
	if err != nil {
		panic("gtk: create window: " + err.Error())
	}
	p.win = win
	win.SetTitle("Bastion: connection prompt")
	win.SetIconName("security-high")
	// The same width for every prompt: labels wrap or ellipsize inside it
	// instead of widening the window to their text (see promptWidth).
	win.SetSizeRequest(promptWidth, -1)
	win.SetResizable(false)
	win.SetPosition(gtk.WIN_POS_CENTER)
	win.SetTypeHint(gdk.WINDOW_TYPE_HINT_DIALOG)
	// SECURITY: the prompt must not take the keyboard from the window the
	// user is typing in (a keystroke meant for it must never answer a
	// prompt), and must stay visible.
	win.SetKeepAbove(true)
	win.SetAcceptFocus(false)
	win.SetFocusOnMap(false)
	win.SetUrgencyHint(true)
	win.SetSkipPagerHint(true)
	// Once the user clicks into the prompt, it may take the focus, so that
	// the keyboard shortcuts work from then on.
	win.AddEvents(int(gdk.BUTTON_PRESS_MASK))
	win.Connect("button-press-event", func() bool {
		if !p.win.GetAcceptFocus() {
			p.win.SetAcceptFocus(true)
			p.win.PresentWithTime(gdk.CURRENT_TIME)
		}
		return false
	})
	win.Connect("delete-event", func() bool {
		p.putOff() // closing the window is "Decide later"
		return true
	})

	outer := mustBox(gtk.ORIENTATION_VERTICAL, 12)
	outer.SetMarginTop(18)
	outer.SetMarginBottom(16)
	outer.SetMarginStart(20)
	outer.SetMarginEnd(20)
	win.Add(outer)

	// Header: icon, "curl wants to connect to example.com:443", queue.
	head := mustBox(gtk.ORIENTATION_HORIZONTAL, 14)
	p.icon, _ = gtk.ImageNewFromIconName("application-x-executable", gtk.ICON_SIZE_DIALOG)
	p.icon.SetPixelSize(56)
	p.icon.SetVAlign(gtk.ALIGN_START)
	head.PackStart(p.icon, false, false, 0)
	titles := mustBox(gtk.ORIENTATION_VERTICAL, 4)
	p.title = mustLabel("")
	p.title.SetLineWrap(true)
	p.title.SetLineWrapMode(pango.WRAP_WORD_CHAR)
	p.title.SetMaxWidthChars(narrowChars)
	addClass(p.title, "bastion-title")
	p.subtitle = mustLabel("")
	p.subtitle.SetLineWrap(true)
	p.subtitle.SetMaxWidthChars(narrowChars)
	p.subtitle.SetNoShowAll(true)
	addClass(p.subtitle, "bastion-subtitle", "bastion-key")
	titles.PackStart(p.title, false, false, 0)
	titles.PackStart(p.subtitle, false, false, 0)
	head.PackStart(titles, true, true, 0)
	p.more = mustLabel("")
	p.more.SetVAlign(gtk.ALIGN_START)
	addClass(p.more, "bastion-more")
	// Shown only with a count (update): never an empty pill.
	p.more.SetNoShowAll(true)
	p.more.Hide()
	head.PackEnd(p.more, false, false, 0)
	outer.PackStart(head, false, false, 0)

	// Details: who is asking and where it is going.
	grid := mustGrid()
	grid.SetRowSpacing(5)
	grid.SetColumnSpacing(14)
	row := 0
	addRow := func(key string, value gtk.IWidget) *gtk.Label {
		k := mustLabel(key)
		k.SetYAlign(0)
		k.SetVAlign(gtk.ALIGN_START)
		addClass(k, "bastion-key")
		grid.Attach(k, 0, row, 1, 1)
		grid.Attach(value, 1, row, 1, 1)
		row++
		return k
	}
	p.exe, p.process, p.parent = valueLabel(), valueLabel(), valueLabel()
	p.dest, p.port, p.conns = valueLabel(), valueLabel(), valueLabel()
	addClass(p.exe, "bastion-mono")
	addRow("Program", p.exe)
	addRow("Process", p.process)
	addRow("Parent", p.parent)
	// A very long command line shows as one line, elided in the middle
	// (the program and the last arguments stay), with the whole text one
	// click away and in the tooltip; a shorter one wraps over the
	// available width.
	p.cmdShort = valueLabel()
	p.cmdShort.SetLineWrap(false)
	p.cmdShort.SetEllipsize(pango.ELLIPSIZE_MIDDLE)
	addClass(p.cmdShort, "bastion-mono")
	p.cmdFull = valueLabel()
	addClass(p.cmdFull, "bastion-mono")
	// (cmdShort sits above the expander, not as its label: a label widget
	// gets only its natural width, not the row's.)
	p.cmdExpander, _ = gtk.ExpanderNew("Show the whole command line")
	p.cmdExpander.Add(p.cmdFull)
	p.cmdExpander.SetCanFocus(false)
	p.cmdExpander.SetHExpand(true)
	p.cmdExpander.Connect("notify::expanded", func() { p.cmdShort.SetVisible(!p.cmdExpander.GetExpanded()) })
	p.cmdPlain = valueLabel()
	addClass(p.cmdPlain, "bastion-mono")
	cmdBox := mustBox(gtk.ORIENTATION_VERTICAL, 0)
	cmdBox.PackStart(p.cmdPlain, false, false, 0)
	cmdBox.PackStart(p.cmdShort, false, false, 0)
	cmdBox.PackStart(p.cmdExpander, false, false, 0)
	addRow("Command line", cmdBox)
	addRow("Destination", p.dest)
	addRow("Port", p.port)
	p.connsKey = addRow("Connections", p.conns)
	for _, l := range []*gtk.Label{p.exe, p.process, p.parent, p.cmdShort, p.cmdFull, p.cmdPlain, p.dest, p.port, p.conns} {
		l.SetMaxWidthChars(narrowChars)
	}
	outer.PackStart(grid, false, false, 0)

	// Countdown to the default.
	cd := mustBox(gtk.ORIENTATION_VERTICAL, 4)
	p.countdown = mustLabel("")
	addClass(p.countdown, "bastion-countdown")
	p.progress, _ = gtk.ProgressBarNew()
	cd.PackStart(p.countdown, false, false, 0)
	cd.PackStart(p.progress, false, false, 0)
	outer.PackStart(cd, false, false, 0)

	// The choice: lifetime, scope, command line, and the rule it makes.
	choice := mustGrid()
	choice.SetRowSpacing(6)
	choice.SetColumnSpacing(14)
	p.lifetime = mustCombo()
	for _, l := range promptLifetimes {
		p.lifetime.AppendText(l.label)
	}
	p.lifetime.SetActive(0)
	p.lifetime.SetCanFocus(false)
	p.lifetime.SetHExpand(true)
	p.scope = mustCombo()
	p.scope.SetCanFocus(false)
	p.scope.SetHExpand(true)
	for i, w := range []struct {
		key string
		w   gtk.IWidget
	}{{"For how long", p.lifetime}, {"Which connections", p.scope}} {
		k := mustLabel(w.key)
		addClass(k, "bastion-key")
		choice.Attach(k, 0, i, 1, 1)
		choice.Attach(w.w, 1, i, 1, 1)
	}
	p.withCmd, _ = gtk.CheckButtonNewWithLabel("Only with this command line")
	p.withCmd.SetCanFocus(false)
	choice.Attach(p.withCmd, 1, 2, 1, 1)
	outer.PackStart(choice, false, false, 0)
	p.preview = valueLabel()
	p.preview.SetMaxWidthChars(narrowChars)
	addClass(p.preview, "bastion-rule")
	outer.PackStart(p.preview, false, false, 0)
	p.errLabel = mustLabel("")
	p.errLabel.SetLineWrap(true)
	p.errLabel.SetMaxWidthChars(narrowChars)
	addClass(p.errLabel, "bastion-error")
	outer.PackStart(p.errLabel, false, false, 0)
	for _, w := range []*gtk.ComboBoxText{p.lifetime, p.scope} {
		w.Connect("changed", p.refreshPreview)
	}
	p.withCmd.Connect("toggled", p.refreshPreview)

	// Buttons: Rules… and Decide later on the left, the answers on the right.
	buttons := mustBox(gtk.ORIENTATION_HORIZONTAL, 8)
	p.rules = mustButton("R_ules…")
	p.rules.SetTooltipText("Open the rules window")
	p.rules.Connect("clicked", func() { p.a.showMain("rules") })
	p.later = mustButton("Decide _later")
	p.later.SetTooltipText("Apply the default now and list the connection under Decide later in the rules window, to make a rule for it there (Esc)")
	p.later.Connect("clicked", p.putOff)
	p.allow = mustButton("_Allow")
	// A person's Deny refuses (a TCP reset or ICMP unreachable), so the
	// program fails at once instead of waiting minutes for a timeout; the
	// silent drop stays an explicit choice.
	p.deny = mustButton("_Deny")
	p.drop = mustButton("Drop _silently")
	p.allow.SetTooltipText("Let the connection through (Alt+A)")
	p.deny.SetTooltipText("Refuse the connection: the program gets an error at once (Alt+D)")
	p.drop.SetTooltipText("Drop the connection without an answer: the program waits until it gives up, often minutes (Alt+S)")
	addClass(p.allow, "bastion-action", "bastion-allow")
	addClass(p.deny, "bastion-action", "bastion-deny")
	for _, b := range []*gtk.Button{p.rules, p.later, p.allow, p.deny, p.drop} {
		b.SetCanFocus(false)
	}
	p.drop.SetRelief(gtk.RELIEF_NONE)
	p.allow.Connect("clicked", func() { p.answer(flow.ActionAllow) })
	p.deny.Connect("clicked", func() { p.answer(flow.ActionReject) })
	p.drop.Connect("clicked", func() { p.answer(flow.ActionDeny) })
	buttons.PackStart(p.rules, false, false, 0)
	buttons.PackStart(p.later, false, false, 0)
	buttons.PackEnd(p.allow, false, false, 0)
	buttons.PackEnd(p.deny, false, false, 0)
	buttons.PackEnd(p.drop, false, false, 0)
	outer.PackStart(buttons, false, false, 4)
	p.denyHint = mustLabel("Deny refuses at once, so the program gets an error; Drop silently leaves it waiting.")
	p.denyHint.SetLineWrap(true)
	p.denyHint.SetMaxWidthChars(narrowChars)
	addClass(p.denyHint, "bastion-key")
	outer.PackStart(p.denyHint, false, false, 0)

	// Keyboard, once the prompt has the focus (a click into it, or
	// bastion-gtk --focus-prompt): Alt+A allows, Alt+D denies, Alt+S drops
	// silently, Esc decides later, Alt+U opens the rules window.
	accel, _ := gtk.AccelGroupNew()
	win.AddAccelGroup(accel)
	accel.Connect(gdk.KEY_a, gdk.MOD1_MASK, gtk.ACCEL_VISIBLE, func() bool { p.answer(flow.ActionAllow); return true })
	accel.Connect(gdk.KEY_d, gdk.MOD1_MASK, gtk.ACCEL_VISIBLE, func() bool { p.answer(flow.ActionReject); return true })
	accel.Connect(gdk.KEY_s, gdk.MOD1_MASK, gtk.ACCEL_VISIBLE, func() bool { p.answer(flow.ActionDeny); return true })
	// Alt+R was "Reject" before Deny became a refusal: it still refuses.
	accel.Connect(gdk.KEY_r, gdk.MOD1_MASK, gtk.ACCEL_VISIBLE, func() bool { p.answer(flow.ActionReject); return true })
	accel.Connect(gdk.KEY_Escape, 0, gtk.ACCEL_VISIBLE, func() bool { p.putOff(); return true })
	accel.Connect(gdk.KEY_u, gdk.MOD1_MASK, gtk.ACCEL_VISIBLE, func() bool { p.a.showMain("rules"); return true })
	outer.ShowAll()
	return p
}

// update shows the first waiting group, or hides the window when none
// waits; GTK thread.
func (p *promptWindow) update() {
	g := p.a.queue.current()
	if g == nil {
		p.shown, p.shownID = nil, ""
		p.busy = false
		p.win.Hide()
		return
	}
	p.showWaiting()
	if g == p.shown && g.primary().GetId() == p.shownID {
		p.fillDetails(g) // an update: more connections, a new deadline
		p.tick()
		return
	}
	p.shown, p.shownID = g, g.primary().GetId()
	p.shownAt = p.a.now()
	p.total = promptSpan(g, p.shownAt, p.a.status)
	p.busy, p.armed = false, false
	p.errLabel.SetText("")
	p.fillDetails(g)
	p.fillChoices(g)
	p.tick()
	if !p.win.GetVisible() {
		// Shown anew: focus only comes with a click again.
		p.win.SetAcceptFocus(false)
		p.win.ShowAll()
		p.refreshConns(g)
	}
	p.showWaiting()
	if !p.ticking {
		p.ticking = true
		glib.TimeoutAdd(200, func() bool {
			if p.a.ctx.Err() != nil || p.shown == nil {
				p.ticking = false
				return false
			}
			p.tick()
			return true
		})
	}
	if p.onShown != nil {
		p.onShown(p.shownID)
	}
}

// showWaiting shows how many other prompts wait behind the shown one, or
// hides the badge when none does.
func (p *promptWindow) showWaiting() {
	more := p.a.queue.waiting()
	p.more.SetText(waitingText(more))
	p.more.SetVisible(more > 0)
}

// waitingText is the badge's text for n other waiting prompts.
func waitingText(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf("%d more waiting", n)
}

// promptSpan is the whole time a prompt group had to be answered: from
// its first sighting (or, failing that, the deadline less the service's
// prompt timeout) to its deadline. A queued prompt's bar then shows the
// share really left, not a full bar for what remains.
func promptSpan(g *promptGroup, shownAt time.Time, st *uiv1.GetStatusResponse) time.Duration {
	d := g.deadline()
	if d.IsZero() {
		return 0
	}
	var first time.Time
	for _, pr := range g.prompts {
		if fs := pr.GetFirstSeen(); fs != nil && (first.IsZero() || fs.AsTime().Before(first)) {
			first = fs.AsTime()
		}
	}
	if first.IsZero() && st.GetPromptTimeout() != nil {
		first = d.Add(-st.GetPromptTimeout().AsDuration())
	}
	if first.IsZero() || first.After(shownAt) {
		first = shownAt
	}
	return d.Sub(first)
}

func (p *promptWindow) fillDetails(g *promptGroup) {
	pr := g.primary()
	proc, fl := pr.GetProcess(), pr.GetFlow()
	name, iconName := exeName(proc), ""
	if info, ok := p.a.apps.Lookup(proc.GetExe()); ok {
		name, iconName = info.Name, info.Icon
	}
	p.setIcon(iconName, proc.GetExe())
	p.title.SetText(inert.Elide(name, 60) + " wants to connect to " + inert.Elide(target(fl, pr.GetHost()), 80))
	if name != exeName(proc) {
		p.subtitle.SetText(inert.String(exeName(proc)))
		p.subtitle.Show()
	} else {
		p.subtitle.Hide()
	}
	p.exe.SetText(inert.String(orDash(apiconv.ExeText(proc))))
	user := fmt.Sprintf("uid %d", proc.GetUid())
	if n, err := p.a.userName(proc.GetUid()); err == nil && n != "" {
		user = fmt.Sprintf("%s (uid %d)", n, proc.GetUid())
	}
	p.process.SetText(fmt.Sprintf("PID %d, user %s", proc.GetTgid(), user))
	p.parent.SetText(inert.String(procinfo.Parent(p.a.procFS, proc.GetPpid())))
	cmd := inert.String(strings.Join(proc.GetArgs(), " "))
	p.cmdShort.SetText(orDash(cmd))
	p.cmdFull.SetText(cmd)
	p.cmdPlain.SetText(orDash(cmd))
	tip := inert.Elide(cmd, 2000)
	p.cmdShort.SetTooltipText(tip)
	p.cmdPlain.SetTooltipText(tip)
	p.cmdExpander.SetExpanded(false)
	p.dest.SetText(inert.String(destinationText(fl, pr.GetHost())))
	p.port.SetText(portText(fl, p.a.services))
	p.conns.SetText(connectionsText(g))
	p.refreshConns(g)
}

// refreshConns shows the connections row only when there are several.
func (p *promptWindow) refreshConns(g *promptGroup) {
	several := g.connections() > 1
	p.connsKey.SetVisible(several)
	p.conns.SetVisible(several)
	// A long command line is elided with a way to see it whole.
	long := len([]rune(strings.Join(g.primary().GetProcess().GetArgs(), " "))) > cmdElideAt
	p.cmdPlain.SetVisible(!long)
	p.cmdExpander.SetVisible(long)
	p.cmdShort.SetVisible(long && !p.cmdExpander.GetExpanded())
}

// setIcon shows the application's icon: its desktop entry's, else one
// named like the executable in the icon theme, else a generic one.
func (p *promptWindow) setIcon(name, exe string) {
	theme, err := gtk.IconThemeGetDefault()
	candidates := []string{name}
	if exe != "" {
		candidates = append(candidates, strings.ToLower(path.Base(exe)))
	}
	for _, c := range candidates {
		switch {
		case c == "":
		case strings.HasPrefix(c, "/"):
			if pb, err := gdk.PixbufNewFromFileAtSize(c, 56, 56); err == nil {
				p.icon.SetFromPixbuf(pb)
				return
			}
		case err == nil && theme.HasIcon(c):
			p.icon.SetFromIconName(c, gtk.ICON_SIZE_DIALOG)
			p.icon.SetPixelSize(56)
			return
		}
	}
	p.icon.SetFromIconName("application-x-executable", gtk.ICON_SIZE_DIALOG)
	p.icon.SetPixelSize(56)
}

// fillChoices resets the choice for a new prompt: once, the narrowest
// scope, without the command line.
func (p *promptWindow) fillChoices(g *promptGroup) {
	pr := g.primary()
	p.scope.RemoveAll()
	p.scopes = p.scopes[:0]
	for _, s := range promptScopes {
		r, err := p.build(rules.Choice{Action: flow.ActionAllow, Lifetime: rules.Forever, Scope: s.scope})
		if err != nil {
			continue // e.g. no host name for the domain scope
		}
		label := s.label
		if s.scope != rules.ScopeAny {
			label += " (" + inert.Elide(ruleDestination(rules.ToProto(r)), 48) + ")"
		}
		p.scope.AppendText(label)
		p.scopes = append(p.scopes, s.scope)
	}
	p.scope.SetActive(0)
	p.lifetime.SetActive(0)
	p.withCmd.SetActive(false)
	p.withCmd.SetSensitive(len(pr.GetProcess().GetArgs()) > 0)
	p.refreshPreview()
}

// choice is what the widgets say, for action a.
func (p *promptWindow) choice(a flow.Action) rules.Choice {
	c := rules.Choice{Action: a, WithCmdline: p.withCmd.GetActive()}
	if i := p.lifetime.GetActive(); i >= 0 && i < len(promptLifetimes) {
		c.Lifetime, c.For = promptLifetimes[i].life, promptLifetimes[i].dur
	}
	if i := p.scope.GetActive(); i >= 0 && i < len(p.scopes) {
		c.Scope = p.scopes[i]
	}
	return c
}

// build makes the rule for c exactly as the answer will send it. Created
// is left to the rules service.
func (p *promptWindow) build(c rules.Choice) (rules.Rule, error) {
	pr := p.shown.primary()
	r, err := rules.ForPrompt(apiconv.Process(pr.GetProcess()), apiconv.Tuple(pr.GetFlow()), pr.GetHost(), c, p.a.now())
	r.Created = time.Time{}
	return r, err
}

// refreshPreview shows the rule the current choice makes.
func (p *promptWindow) refreshPreview() {
	if p.shown == nil {
		return
	}
	r, err := p.build(p.choice(flow.ActionAllow))
	if err != nil {
		p.preview.SetText("This choice makes no valid rule: " + inert.String(err.Error()))
		return
	}
	pr := rules.ToProto(r)
	p.preview.SetText("Rule: " + inert.String(ruleSentence(pr, p.a.now(), p.a.loc)))
}

// tick updates the countdown, arms the buttons after the delay and drops
// prompts whose deadline passed; GTK thread.
func (p *promptWindow) tick() {
	if p.shown == nil {
		return
	}
	now := p.a.now()
	if p.a.queue.expire(now) {
		p.update()
		return
	}
	armed := !p.busy && now.Sub(p.shownAt) >= p.a.cfg.ArmDelay
	if armed != p.armed || !armed {
		p.armed = armed
		for _, b := range []*gtk.Button{p.allow, p.deny, p.drop, p.later} {
			b.SetSensitive(armed)
		}
	}
	pr := p.shown.primary()
	act := actionName(pr.GetDeadlineAction())
	d := p.shown.deadline()
	if d.IsZero() {
		p.countdown.SetText("If you do not answer: " + act)
		p.progress.Hide()
		return
	}
	left := max(0, d.Sub(now))
	p.countdown.SetText(fmt.Sprintf("%s in %d s if you do not answer", capitalize(deadlineWord(act)), int((left+time.Second-1)/time.Second)))
	if p.total > 0 {
		p.progress.SetFraction(min(1, float64(left)/float64(p.total)))
		p.progress.Show()
	}
}

// answer answers the shown group with action a and the chosen lifetime
// and scope; before the buttons are armed it does nothing.
func (p *promptWindow) answer(a flow.Action) {
	if p.shown == nil || p.busy || !p.armed {
		return
	}
	c := p.choice(a)
	r, err := p.build(c)
	if err != nil {
		p.errLabel.SetText("Cannot make that rule: " + inert.String(err.Error()))
		return
	}
	g := p.shown
	ids := []string{g.primary().GetId()}
	if c.Lifetime == rules.Once {
		// A once answer is not stored, so it decides only the prompt it
		// answers: answer every prompt of the group.
		ids = g.ids()
	}
	p.busy = true
	p.tick()
	rule := rules.ToProto(r)
	call(p.a, func(ctx context.Context, ui uiv1.UIServiceClient) ([]*rulesv1.Rule, error) {
		var out []*rulesv1.Rule
		for i, id := range ids {
			resp, err := ui.AnswerPrompt(ctx, &uiv1.AnswerPromptRequest{PromptId: id, Rule: rule})
			if status.Code(err) == codes.NotFound && i > 0 {
				continue // decided meanwhile
			}
			if err != nil {
				return out, err
			}
			out = append(out, resp.GetRule())
		}
		return out, nil
	}, func(_ []*rulesv1.Rule, err error) {
		switch status.Code(err) {
		case codes.OK, codes.NotFound:
			// Answered, or answered elsewhere first: either way it is done.
			// A stored rule decides the group's other prompts; the service
			// withdraws them.
			p.a.log.Info("prompt answered", "prompt_id", ids[0], "action", a.String(), "lifetime", c.Lifetime, "scope", c.Scope.String(), "err", err)
			p.a.queue.remove(g.ids()...)
			p.update()
		default:
			p.busy = false
			p.errLabel.SetText("The rules service refused the answer: " + statusMessage(err))
			p.tick()
		}
	})
}

// putOff is "Decide later": the rules service applies the silent action
// to the shown group's connections now and lists them under Decide later,
// where the main window makes a rule for them. Before the buttons are
// armed it does nothing.
func (p *promptWindow) putOff() {
	if p.shown == nil || p.busy || !p.armed {
		return
	}
	ids := p.shown.ids()
	p.busy = true
	p.tick()
	// From now on an update on its way must not bring these back.
	p.a.queue.markLater(ids...)
	p.a.later.putOffStarted()
	call(p.a, func(ctx context.Context, ui uiv1.UIServiceClient) ([]string, error) {
		var later []string
		for i, id := range ids {
			resp, err := ui.PutOffPrompt(ctx, &uiv1.PutOffPromptRequest{PromptId: id})
			if status.Code(err) == codes.NotFound && i > 0 {
				continue // decided meanwhile
			}
			if err != nil {
				return later, err
			}
			later = append(later, resp.GetDecideLaterId())
		}
		return later, nil
	}, func(later []string, err error) {
		// The user put these off themselves: no "blocked while no prompt
		// was open" notification for them.
		p.a.later.putOffDone(later...)
		switch status.Code(err) {
		case codes.OK, codes.NotFound:
			p.a.log.Info("prompt put off", "prompt_id", ids[0], "decide_later_id", strings.Join(later, ","), "err", err)
			// Only these: a prompt that joined the group meanwhile still waits.
			p.a.queue.remove(ids...)
			p.update()
			if p.a.main != nil {
				p.a.main.refreshLater()
			}
		default:
			p.busy = false
			p.a.queue.unmarkLater(ids...)
			p.errLabel.SetText("The rules service refused to put this off: " + statusMessage(err))
			p.tick()
		}
	})
}

// statusMessage is an error's text for a label, made inert: a service's
// message can quote an exe or a command line.
func statusMessage(err error) string {
	if s, ok := status.FromError(err); ok {
		return inert.String(s.Message())
	}
	return inert.String(err.Error())
}

// inertAll is inert.String of each of ss.
func inertAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = inert.String(s)
	}
	return out
}

// cmdElideAt is the command line length above which it shows as one
// elided line with the whole text one click away; shorter ones wrap over
// the prompt's width (at most three or four lines).
const cmdElideAt = 240

// promptWidth is the prompt window's width in pixels, the same for every
// prompt; narrowChars caps the natural width of its wrapping labels so
// that their text never widens the window (they still fill its width).
const (
	promptWidth = 640
	narrowChars = 24
)

// deadlineWord is how the countdown names the action the deadline takes.
func deadlineWord(act string) string {
	switch act {
	case "reject":
		return "deny"
	case "deny":
		return "drop silently"
	}
	return act
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// connectionsText is the number of held connections of g and, when several
// processes share them, their process IDs: "3 (PIDs 18993, 19021)".
func connectionsText(g *promptGroup) string {
	n := fmt.Sprint(g.connections())
	var pids []string
	var more uint32
	seen := make(map[uint32]bool)
	for _, pr := range g.prompts {
		for _, q := range pr.GetProcesses() {
			if !seen[q.GetTgid()] {
				seen[q.GetTgid()] = true
				pids = append(pids, fmt.Sprint(q.GetTgid()))
			}
		}
		more += pr.GetMoreProcesses()
	}
	if len(pids) < 2 && more == 0 {
		return n
	}
	n += " (PIDs " + strings.Join(pids, ", ")
	if more > 0 {
		n += fmt.Sprintf(" and %d more", more)
	}
	return n + ")"
}

// focus lets the prompt take the keyboard and raises it, so that its
// shortcuts work without a click first (the status icon, bastion-gtk
// --focus-prompt).
func (p *promptWindow) focus() {
	p.win.SetAcceptFocus(true)
	p.win.PresentWithTime(gdk.CURRENT_TIME)
}
