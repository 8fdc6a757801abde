package gtkclient

import (
	"cmp"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gotk3/gotk3/gtk"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/gtkclient/internal/demo"
	"github.com/bastion-fw/bastion/internal/inert/inerttest"
	"github.com/bastion-fw/bastion/internal/testenv"
	"github.com/bastion-fw/bastion/internal/testenv/fakeui"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// programsEnv is bastion-gtk's main window over the sample rules and
// programs, under a window manager, with the window active.
func programsEnv(t *testing.T) (*env, *programsPage) {
	t.Helper()
	e := newEnv(t, envOpt{cfg: func(c *Config) { c.MainWindow, c.NoPrompts = true, true }, setup: func(s *fakeui.Service) {
		s.AddRules(demo.SampleRules(testNow)...)
		s.SetPrograms(demo.SamplePrograms(testNow, time.UTC)...)
	}})
	var p *programsPage
	waitGTK(t, "the programs listed", func() bool {
		if e.a.main == nil {
			return false
		}
		p = e.a.main.progs
		return len(p.shownKeys()) == 11
	})
	startWindowManager(t)
	activate(t, "^Bastion$", e.a.main.win)
	return e, p
}

// clickWidget clicks w at (dx, dy) from its top left corner, with the X
// pointer; twice for a double click.
func clickWidget(t *testing.T, w *gtk.Widget, dx, dy int, double bool) {
	t.Helper()
	x, y := screenPoint(t, w, dx, dy)
	args := []string{"mousemove", "--sync", strconv.Itoa(x), strconv.Itoa(y), "click"}
	if double {
		args = append(args, "--repeat", "2", "--delay", "60")
	}
	if out, err := exec.Command("xdotool", append(args, "1")...).CombinedOutput(); err != nil {
		t.Fatalf("xdotool click at %d,%d: %v %s", x, y, err, out)
	}
}

// clickUntil clicks w until cond, checked on the GTK thread, holds, as a
// person clicks again when nothing happened: on this Xvfb the first
// clicks after a window got the focus are now and then lost. cond must
// hold once the first click arrived, so that no click is taken twice.
func clickUntil(t *testing.T, what string, w *gtk.Widget, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		clickWidget(t, w, -1, -1, false)
		for until := time.Now().Add(time.Second); time.Now().Before(until); time.Sleep(20 * time.Millisecond) {
			var ok bool
			onGTK(t, func() { ok = cond() })
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("click: timed out after %s waiting for %s", waitTimeout, what)
		}
	}
}

// header is the header button of column n of v, which a person clicks
// to sort.
func header(t *testing.T, v *gtk.TreeView, n int) *gtk.Widget {
	t.Helper()
	var b *gtk.Widget
	onGTK(t, func() {
		w, err := v.GetColumn(n).GetButton()
		if err != nil {
			t.Fatal(err)
		}
		b = w.ToWidget()
	})
	return b
}

// clickRowUntil clicks row path of v until cond holds (see clickUntil).
func clickRowUntil(t *testing.T, what string, v *gtk.TreeView, path string, col int, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		clickRow(t, v, path, col, false)
		for until := time.Now().Add(time.Second); time.Now().Before(until); time.Sleep(20 * time.Millisecond) {
			var ok bool
			onGTK(t, func() { ok = cond() })
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("click: timed out after %s waiting for %s", waitTimeout, what)
		}
	}
}

// clickRow clicks (or double-clicks) row path of v in its column col.
func clickRow(t *testing.T, v *gtk.TreeView, path string, col int, double bool) {
	t.Helper()
	var x, y int
	onGTK(t, func() {
		p, _ := gtk.TreePathNewFromString(path)
		r := v.GetCellArea(p, v.GetColumn(col))
		v.ConvertBinWindowToWidgetCoords(r.GetX()+r.GetWidth()/2, r.GetY()+r.GetHeight()/2, &x, &y)
	})
	clickWidget(t, &v.Widget, x, y, double)
}

func (p *programsPage) cell(key string, col int) string {
	it, ok := p.store.GetIterFirst()
	for ok {
		if p.rowKey(it) == key {
			v, _ := p.store.GetValue(it, col)
			s, _ := v.GetString()
			return s
		}
		ok = p.store.IterNext(it)
	}
	return ""
}

func TestProgramsPage(t *testing.T) {
	e, p := programsEnv(t)
	samples := map[string]*uiv1.ProgramSummary{}
	for _, s := range demo.SamplePrograms(testNow, time.UTC) {
		samples[programRowKey(s.Summary)] = s.Summary
	}
	onGTK(t, func() {
		if got := e.a.main.stack.GetVisibleChildName(); got != "programs" {
			t.Errorf("the main window opened on %q, want the Programs page first", got)
		}
		// Most recently active first.
		keys := p.shownKeys()
		if len(keys) != 11 || !slices.IsSortedFunc(keys, func(a, b string) int {
			return samples[b].GetLastActivity().AsTime().Compare(samples[a].GetLastActivity().AsTime())
		}) {
			t.Errorf("rows %q, want them by last activity", keys)
		}
		// The desktop entry's name, else the executable's; the path under it.
		for key, want := range map[string]string{
			demo.FirefoxExe:      "<b>Firefox ESR</b>\n<small>/usr/lib/firefox-esr/firefox-esr</small>",
			demo.SpotifyExe:      "<b>spotify</b>\n<small>/usr/share/spotify/spotify</small>",
			"comm:nm-dispatcher": "<b>[nm-dispatcher]</b>\n<small>executable unknown</small>",
		} {
			if got := p.cell(key, pColName); got != want {
				t.Errorf("%q shown as %q, want %q", key, got, want)
			}
		}
		ff := samples[demo.FirefoxExe]
		for col, want := range map[int]string{pColRecv: humanBytes(ff.GetBytesReceived()), pColSent: humanBytes(ff.GetBytesSent()),
			pColAllowed: countText(ff.GetAllowed()), pColRules: "2", pColDests: "9"} {
			if got := p.cell(demo.FirefoxExe, col); got != want {
				t.Errorf("Firefox column %d = %q, want %q", col, got, want)
			}
		}
	})
	screenshot(t, "programs-page")

	// Sorted by a click on a header: Received, up then down.
	byRecv := func(desc bool) func() bool {
		return func() bool {
			keys := p.shownKeys()
			return len(keys) == 11 && slices.IsSortedFunc(keys, func(a, b string) int {
				if desc {
					a, b = b, a
				}
				return cmp.Compare(samples[a].GetBytesReceived(), samples[b].GetBytesReceived())
			})
		}
	}
	clickUntil(t, "sorted by bytes received, least first", header(t, p.view, 5), byRecv(false))
	clickUntil(t, "sorted by bytes received, most first", header(t, p.view, 5), byRecv(true))
	onGTK(t, func() {
		if p.keyAt(0) != demo.FirefoxExe {
			t.Errorf("first row %q, want Firefox, which received the most", p.keyAt(0))
		}
	})
	clickUntil(t, "sorted by name", header(t, p.view, 0), func() bool {
		var order []string
		for _, k := range p.shownKeys() {
			if k != "comm:nm-dispatcher" { // where "[" sorts depends on the locale
				order = append(order, k)
			}
		}
		return slices.Equal(order, []string{"/usr/sbin/chronyd", demo.CurlExe, demo.FirefoxExe, "/usr/bin/git", "/usr/bin/python3.11",
			demo.SpotifyExe, "/usr/bin/ssh", "/usr/bin/syncthing", "/usr/lib/thunderbird/thunderbird", "/opt/zoom/zoom"})
	})

	// Searched by name or path.
	clickUntil(t, "the search focused", &p.search.Widget, p.search.HasFocus)
	xdo(t, "type", "firef")
	waitGTK(t, "only Firefox", func() bool { return slices.Equal(p.shownKeys(), []string{demo.FirefoxExe}) })
	xdo(t, "key", "ctrl+a", "BackSpace")
	xdo(t, "type", "/usr/bin/")
	waitGTK(t, "the programs in /usr/bin", func() bool {
		keys := p.shownKeys()
		slices.Sort(keys)
		return slices.Equal(keys, []string{demo.CurlExe, "/usr/bin/git", "/usr/bin/python3.11", "/usr/bin/ssh", "/usr/bin/syncthing"})
	})
	onGTK(t, func() {
		if got := labelText(p.count); got != "5 of 11 programs" {
			t.Errorf("count %q", got)
		}
	})
	xdo(t, "key", "ctrl+a", "BackSpace")
	waitGTK(t, "every program again", func() bool { return len(p.shownKeys()) == 11 })
	// Ctrl+F from the list, a name, and Enter opens the program found.
	onGTK(t, func() { p.view.GrabFocus() })
	press(t, "the search focused", p.search.HasFocus, "ctrl+f")
	xdo(t, "type", "thunder")
	waitGTK(t, "Thunderbird found", func() bool { return slices.Equal(p.shownKeys(), []string{"/usr/lib/thunderbird/thunderbird"}) })
	press(t, "Thunderbird's detail", func() bool {
		return p.stack.GetVisibleChildName() == "detail" && p.detail.key == "/usr/lib/thunderbird/thunderbird"
	}, "Return")
	press(t, "the list again", func() bool { return p.stack.GetVisibleChildName() == "list" }, "Escape")
	onGTK(t, func() { p.search.SetText("") })
	waitGTK(t, "every program again", func() bool { return len(p.shownKeys()) == 11 && !p.stack.GetTransitionRunning() })

	// Refreshed while shown, in place: the selection stays.
	var picked string
	clickRowUntil(t, "a row selected", p.view, "2", 0, func() bool { picked = p.selectedKey(); return picked != "" })
	if !e.svc.EditProgram(demo.SpotifyExe, func(s *uiv1.ProgramSummary) { s.BytesReceived = 7_300_000_000 }) {
		t.Fatal("no Spotify in the fake service")
	}
	onGTK(t, func() { p.setEvery(30 * time.Millisecond) })
	waitGTK(t, "Spotify's new bytes", func() bool { return p.cell(demo.SpotifyExe, pColRecv) == "7.3 GB" })
	onGTK(t, func() {
		if got := p.selectedKey(); got != picked {
			t.Errorf("selection %q after a refresh, want %q", got, picked)
		}
	})
}

func TestProgramDetail(t *testing.T) {
	e, p := programsEnv(t)
	d := p.detail
	// Opened with a double click on its row.
	var row string
	onGTK(t, func() {
		for i, k := range p.shownKeys() {
			if k == demo.FirefoxExe {
				row = strconv.Itoa(i)
			}
		}
	})
	// A person double-clicks again when the first went unnoticed: on
	// this Xvfb the first clicks after the window got the focus are now
	// and then lost.
	for i := 0; i < 5; i++ {
		clickRow(t, p.view, row, 0, true)
		var open bool
		for until := time.Now().Add(time.Second); time.Now().Before(until) && !open; time.Sleep(20 * time.Millisecond) {
			onGTK(t, func() { open = p.stack.GetVisibleChildName() == "detail" })
		}
		if open {
			break
		}
	}
	waitGTK(t, "Firefox's detail", func() bool {
		return p.stack.GetVisibleChildName() == "detail" && d.resp != nil && len(d.chart.buckets) == 96 && !p.stack.GetTransitionRunning()
	})
	got := lastCall[*uiv1.GetProgramRequest](t, e.svc, "GetProgram")
	if got.GetProgram() != demo.FirefoxExe || got.GetRange() != uiv1.ChartRange_CHART_RANGE_DAY {
		t.Errorf("GetProgram %v, want Firefox over a day", got)
	}
	onGTK(t, func() {
		if s := labelText(d.name); s != "Firefox ESR" {
			t.Errorf("name %q", s)
		}
		// 9 destinations in 8 hosts: googlevideo.com's two are under it.
		if len(d.groups) != 8 || len(d.destShape) != 10 {
			t.Errorf("%d groups, %d rows: %q", len(d.groups), len(d.destShape), d.destShape)
		}
		if !strings.HasPrefix(labelText(d.today), "Today: ") {
			t.Errorf("today %q", labelText(d.today))
		}
	})
	waitGTK(t, "the day chart drawn", func() bool { return d.chart.drawn > 0 })
	screenshot(t, "program-detail-day")

	// The chart's range: a click on Hour, then Alt+W for the week.
	clickUntil(t, "the hour chart", &d.ranges[uiv1.ChartRange_CHART_RANGE_HOUR].Widget, func() bool {
		return len(d.chart.buckets) == 60 && d.chart.step == time.Minute
	})
	if r := lastCall[*uiv1.GetProgramRequest](t, e.svc, "GetProgram").GetRange(); r != uiv1.ChartRange_CHART_RANGE_HOUR {
		t.Errorf("range %v asked for, want hour", r)
	}
	// The bar under the pointer tells its figures.
	waitGTK(t, "the hour chart drawn", func() bool { return d.chart.barW > 0 && d.chart.step == time.Minute })
	onGTK(t, func() {
		last := d.chart.buckets[59]
		want := "15:09–15:10\nReceived " + humanBytes(last.GetBytesReceived()) + "\nSent " + humanBytes(last.GetBytesSent()) +
			"\n" + countText(last.GetAllowed()) + " allowed, 0 denied"
		if got := d.chart.tooltipAt(d.chart.left + 59.5*d.chart.barW); got != want {
			t.Errorf("last bar's tooltip %q, want %q", got, want)
		}
		if got := d.chart.tooltipAt(d.chart.left - 1); got != "" {
			t.Errorf("tooltip %q left of the bars", got)
		}
	})
	screenshot(t, "program-detail-hour")
	press(t, "the week chart", func() bool { return len(d.chart.buckets) == 168 && d.chart.step == time.Hour }, "alt+w")
	screenshot(t, "program-detail-week")

	// A rule from a destination: github.com's port 443, prefilled.
	onGTK(t, func() {
		if !d.selectDest("github.com", 443) {
			t.Fatal("no github.com:443 row")
		}
	})
	clickUntil(t, "the rule dialog", &d.makeRule.Widget, func() bool { dl := e.a.main.lastDialog; return dl != nil && dl.dlg.IsVisible() })
	dl := e.a.main.lastDialog
	onGTK(t, func() {
		exe, _ := dl.exe.GetText()
		host, _ := dl.host.GetText()
		ports, _ := dl.ports.GetText()
		if exe != demo.FirefoxExe || host != "github.com" || ports != "443" {
			t.Errorf("dialog prefilled with %q %q %q", exe, host, ports)
		}
	})
	activate(t, "^New rule$", &dl.dlg.Window)
	press(t, "AddRule", func() bool { return len(e.svc.CallsTo("AddRule")) == 1 }, "alt+s")
	added := lastCall[*uiv1.AddRuleRequest](t, e.svc, "AddRule").GetRule()
	if added.GetExe() != demo.FirefoxExe || added.GetHost() != "github.com" || added.GetDstPortMin() != 443 ||
		added.GetDstPortMax() != 443 || added.GetProtocol() != rulesv1.Protocol_PROTOCOL_TCP ||
		added.GetAction() != rulesv1.Action_ACTION_ALLOW || added.GetLifetime() != rulesv1.Lifetime_LIFETIME_FOREVER {
		t.Errorf("AddRule %v, want allow Firefox → TCP github.com:443 forever", added)
	}
	waitGTK(t, "the new rule among Firefox's", func() bool { return len(d.rules) == 3 })

	// A host over several destinations: a rule for any port.
	onGTK(t, func() {
		if !d.selectDest("rr3---sn-4g5e6nsz.googlevideo.com", 0) {
			t.Fatal("no googlevideo.com host row")
		}
	})
	activate(t, "^Bastion$", e.a.main.win)
	press(t, "the second rule dialog", func() bool { dl2 := e.a.main.lastDialog; return dl2 != dl && dl2.dlg.IsVisible() }, "alt+m")
	onGTK(t, func() {
		dl2 := e.a.main.lastDialog
		host, _ := dl2.host.GetText()
		ports, _ := dl2.ports.GetText()
		if host != "rr3---sn-4g5e6nsz.googlevideo.com" || ports != "" {
			t.Errorf("host row's rule prefilled with %q, ports %q", host, ports)
		}
		dl2.dlg.Response(gtk.RESPONSE_CANCEL)
	})

	// Its rules: disable the telemetry one, then delete it.
	activate(t, "^Bastion$", e.a.main.win)
	press(t, "the Rules tab", func() bool { return d.tabs.GetCurrentPage() == 1 }, "alt+r")

	// Edit: the rule dialog with the rule made above; saved with a note.
	var made int
	onGTK(t, func() {
		made = slices.IndexFunc(d.rules, func(r *rulesv1.Rule) bool { return r.GetHost() == "github.com" })
	})
	if made < 0 {
		t.Fatal("the rule made is not among Firefox's")
	}
	clickRowUntil(t, "the rule made selected", d.ruleView, strconv.Itoa(made), 2, func() bool {
		r := d.selectedRule()
		return r != nil && r.GetHost() == "github.com"
	})
	prev := e.a.main.lastDialog
	press(t, "the Edit rule dialog", func() bool { dl := e.a.main.lastDialog; return dl != prev && dl.dlg.IsVisible() }, "alt+e")
	ed := e.a.main.lastDialog
	activate(t, "^Edit rule$", &ed.dlg.Window)
	press(t, "the note focused", ed.note.HasFocus, "alt+e")
	xdo(t, "type", "GitHub in the browser")
	press(t, "UpdateRule", func() bool { return len(e.svc.CallsTo("UpdateRule")) == 1 }, "alt+s")
	var madeID string
	for _, r := range e.svc.Rules() {
		if r.GetHost() == "github.com" && r.GetExe() == demo.FirefoxExe {
			madeID = r.GetId()
		}
	}
	if r := lastCall[*uiv1.UpdateRuleRequest](t, e.svc, "UpdateRule").GetRule(); r.GetNote() != "GitHub in the browser" ||
		r.GetId() != madeID || r.GetHost() != "github.com" {
		t.Errorf("UpdateRule %v, want rule %s (github.com) with its note", r, madeID)
	}
	activate(t, "^Bastion$", e.a.main.win)
	var telemetry int
	onGTK(t, func() {
		telemetry = slices.IndexFunc(d.rules, func(r *rulesv1.Rule) bool { return r.GetHost() == "*.telemetry.mozilla.org" })
	})
	if telemetry < 0 {
		t.Fatal("no telemetry rule in Firefox's rules")
	}
	clickRowUntil(t, "the rule selected", d.ruleView, strconv.Itoa(telemetry), 2, func() bool {
		return d.selectedRule() != nil && d.toggle.GetSensitive()
	})
	id := ""
	onGTK(t, func() { id = d.selectedRule().GetId() })
	screenshot(t, "program-detail-rules")
	clickUntil(t, "SetRuleEnabled", &d.toggle.Widget, func() bool { return len(e.svc.CallsTo("SetRuleEnabled")) > 0 })
	if n := len(e.svc.CallsTo("SetRuleEnabled")); n != 1 {
		t.Fatalf("%d SetRuleEnabled calls for one click", n)
	}
	if r := lastCall[*uiv1.SetRuleEnabledRequest](t, e.svc, "SetRuleEnabled"); r.GetId() != id || r.GetEnabled() {
		t.Errorf("SetRuleEnabled %v, want %s off", r, id)
	}
	waitGTK(t, "the rule shown off, and Enable offered", func() bool {
		r := d.selectedRule()
		l, _ := d.toggle.GetLabel()
		return r != nil && r.GetId() == id && !r.GetEnabled() && l == "En_able"
	})
	clickUntil(t, "DeleteRule", &d.del.Widget, func() bool { return len(e.svc.CallsTo("DeleteRule")) > 0 })
	if r := lastCall[*uiv1.DeleteRuleRequest](t, e.svc, "DeleteRule"); r.GetId() != id {
		t.Errorf("DeleteRule %v, want %s", r, id)
	}
	waitGTK(t, "two rules left", func() bool { return len(d.rules) == 2 && labelText(d.ruleLabel) == "Rules (2)" })

	// Escape goes back to the list, with Firefox selected.
	onGTK(t, func() { d.ruleView.GrabFocus() })
	press(t, "the list again", func() bool {
		return p.stack.GetVisibleChildName() == "list" && p.selectedKey() == demo.FirefoxExe
	}, "Escape")
}

// TestProgramDetailUnknownExe: a program named only by its comm opens,
// and no rule can be made for it.
func TestProgramDetailUnknownExe(t *testing.T) {
	e := newEnv(t, envOpt{cfg: func(c *Config) { c.MainWindow, c.NoPrompts = true, true }, setup: func(s *fakeui.Service) {
		s.SetPrograms(demo.SamplePrograms(testNow, time.UTC)...)
	}})
	waitGTK(t, "the programs listed", func() bool { return e.a.main != nil && len(e.a.main.progs.shownKeys()) == 11 })
	p := e.a.main.progs
	onGTK(t, func() { p.openProgram("comm:nm-dispatcher") })
	waitGTK(t, "its detail", func() bool { return p.detail.resp != nil && len(p.detail.destShape) == 1 })
	if got := lastCall[*uiv1.GetProgramRequest](t, e.svc, "GetProgram").GetProgram(); got != "nm-dispatcher" {
		t.Errorf("GetProgram %q, want the comm", got)
	}
	onGTK(t, func() {
		p.detail.selectDest("connectivity-check.ubuntu.com", 80)
		if p.detail.makeRule.GetSensitive() {
			t.Error("Make a rule offered for a program whose executable is unknown")
		}
	})
}

// TestProgramsRefreshKeepsScroll: a refresh that changes figures and adds
// a program keeps the list where it was scrolled to and what was selected.
func TestProgramsRefreshKeepsScroll(t *testing.T) {
	var ps []*fakeui.Program
	for i := range 80 {
		ps = append(ps, &fakeui.Program{Summary: &uiv1.ProgramSummary{Exe: fmt.Sprintf("/opt/app%02d/app", i), Comm: "app",
			Allowed: uint64(i), BytesReceived: uint64(1000 * i), LastActivity: timestamppb.New(testNow.Add(-time.Duration(i) * time.Minute))}})
	}
	e := newEnv(t, envOpt{cfg: func(c *Config) { c.MainWindow, c.NoPrompts = true, true }, setup: func(s *fakeui.Service) {
		s.SetPrograms(ps...)
	}})
	waitGTK(t, "the programs listed", func() bool { return e.a.main != nil && len(e.a.main.progs.shownKeys()) == 80 })
	p := e.a.main.progs
	sw, _ := p.view.GetParent()
	adj := sw.(*gtk.ScrolledWindow).GetVAdjustment()
	// The page a person looks at, on a desktop: the tree view scrolls to
	// a row in an animation, which the window's frame clock drives; on a
	// bare Xvfb without a window manager it stopped part of the way.
	startWindowManager(t)
	activate(t, "^Bastion$", e.a.main.win)
	onGTK(t, func() { e.a.main.present("programs") })
	waitGTK(t, "the Programs page shown", func() bool {
		return e.a.main.stack.GetVisibleChildName() == "programs" && !e.a.main.stack.GetTransitionRunning() && p.view.GetMapped()
	})
	var at float64
	onGTK(t, func() { p.selectKey("/opt/app70/app") })
	// Wait until the row is in view and the list stands still.
	testenv.WaitFor(t, waitTimeout, "scrolled down to the selected row, at rest", func() bool {
		last := at
		time.Sleep(100 * time.Millisecond)
		var inView bool
		onGTK(t, func() {
			at = adj.GetValue()
			sel, _ := p.view.GetSelection()
			if _, it, ok := sel.GetSelected(); ok {
				path, _ := p.store.GetPath(it)
				r := p.view.GetCellArea(path, p.view.GetColumn(0))
				inView = r.GetY() >= 0 && float64(r.GetY()+r.GetHeight()) <= adj.GetPageSize()
			}
		})
		return at > 0 && at == last && inView
	})
	ps[70].Summary.BytesReceived = 5_000_000
	ps = append(ps, &fakeui.Program{Summary: &uiv1.ProgramSummary{Exe: "/opt/new/app", Comm: "app",
		LastActivity: timestamppb.New(testNow.Add(-200 * time.Minute))}})
	e.svc.SetPrograms(ps...)
	onGTK(t, func() { p.setEvery(30 * time.Millisecond) })
	waitGTK(t, "the new figures", func() bool {
		return len(p.shownKeys()) == 81 && p.cell("/opt/app70/app", pColRecv) == "5.0 MB"
	})
	onGTK(t, func() {
		if got := adj.GetValue(); got != at {
			t.Errorf("scrolled to %v after a refresh, was %v", got, at)
		}
		if got := p.selectedKey(); got != "/opt/app70/app" {
			t.Errorf("selection %q after a refresh", got)
		}
	})
}

// TestProgramsShowHostileStringsInert: a hostile program's path and comm,
// and a hostile host name, reach the Programs list (whose name cell is
// markup) and the detail without raw controls and without being read as
// markup.
func TestProgramsShowHostileStringsInert(t *testing.T) {
	hostileHost := "h\u202e.test<i>\x1b[2K"
	e := newEnv(t, envOpt{cfg: func(c *Config) { c.MainWindow, c.NoPrompts = true, true }, setup: func(s *fakeui.Service) {
		s.SetPrograms(&fakeui.Program{
			Summary: &uiv1.ProgramSummary{Exe: hostileExe, Comm: "\x1b[31mx", Allowed: 1, LastActivity: timestamppb.New(testNow)},
			Destinations: []*uiv1.Destination{{Host: hostileHost, Address: "192.0.2.7", Protocol: agentv1.Protocol_PROTOCOL_TCP,
				Port: 443, Allowed: 1, FirstSeen: timestamppb.New(testNow), LastSeen: timestamppb.New(testNow),
				DecidedBy: "rule:\x1b[31m", LastAction: rulesv1.Action_ACTION_ALLOW}},
		})
	}})
	waitGTK(t, "the program listed", func() bool { return e.a.main != nil && len(e.a.main.progs.shownKeys()) == 1 })
	p := e.a.main.progs
	onGTK(t, func() {
		name := p.cell(hostileExe, pColName)
		if raw := inerttest.RawControls(strings.ReplaceAll(name, "\n", "")); raw != "" {
			t.Errorf("name cell shows %q raw: %q", raw, name)
		}
		if !strings.Contains(name, `exe\u202efdp.sh\x1b[2K&lt;b&gt;</b>`) {
			t.Errorf("name cell %q: the path's markup is not escaped", name)
		}
		p.openProgram(hostileExe)
	})
	waitGTK(t, "the detail", func() bool { return p.detail.resp != nil && len(p.detail.destIters) == 1 })
	onGTK(t, func() {
		d := p.detail
		for what, l := range map[string]*gtk.Label{"name": d.name, "path": d.path} {
			if raw := inerttest.RawControls(labelText(l)); raw != "" {
				t.Errorf("%s label shows %q raw: %q", what, raw, labelText(l))
			}
		}
		if got := labelText(d.name); got != `exe\u202efdp.sh\x1b[2K<b>` {
			t.Errorf("name label %q", got)
		}
		for _, col := range []int{dColDest, dColBy} {
			v, _ := d.destStore.GetValue(d.destIters[0], col)
			s, _ := v.GetString()
			if raw := inerttest.RawControls(s); raw != "" {
				t.Errorf("destination column %d shows %q raw: %q", col, raw, s)
			}
		}
	})
}

// TestProgramDetailShowsConnections: as a person, Alt+C in a program's
// detail shows the Connections page with only that program's connections;
// for a program named only by its comm, the comm is the filter.
func TestProgramDetailShowsConnections(t *testing.T) {
	e := newEnv(t, envOpt{cfg: func(c *Config) { c.MainWindow, c.NoPrompts = true, true }, setup: func(s *fakeui.Service) {
		s.SetPrograms(demo.SamplePrograms(testNow, time.UTC)...)
		s.AddHistory(demo.SampleHistory(testNow)...)
		s.AddHistory(&uiv1.HistoryEntry{Time: timestamppb.New(testNow.Add(-time.Hour)), Process: &agentv1.Process{Pid: 812, Comm: "nm-dispatcher"},
			Flow: &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 4, SrcIp: "192.168.1.23", SrcPort: 50100,
				DstIp: "185.125.190.49", DstPort: 80}, Host: "connectivity-check.ubuntu.com",
			Action: rulesv1.Action_ACTION_ALLOW, DecidedBy: "prompt"})
	}})
	waitGTK(t, "the programs listed", func() bool { return e.a.main != nil && len(e.a.main.progs.shownKeys()) == 11 })
	m := e.a.main
	p := m.progs
	startWindowManager(t)
	activate(t, "^Bastion$", m.win)
	onGTK(t, func() { p.openProgram(demo.FirefoxExe) })
	waitGTK(t, "Firefox's detail", func() bool { return p.stack.GetVisibleChildName() == "detail" && p.detail.resp != nil })

	shows := func(program string, rows int) func() bool {
		return func() bool {
			entry, _ := m.conn.program.GetEntry()
			text, _ := entry.GetText()
			return m.stack.GetVisibleChildName() == "history" && text == program &&
				m.conn.answered == m.conn.gen && m.conn.asked.GetFilter().GetProgram() == program && rowCount(m.histStore) == rows
		}
	}
	press(t, "Firefox's 3 connections on the Connections page", shows(demo.FirefoxExe, 3), "alt+c")
	onGTK(t, func() {
		for _, h := range shownEntries(m) {
			if h.GetProcess().GetExe() != demo.FirefoxExe {
				t.Errorf("a row of %s", h.GetProcess().GetExe())
			}
		}
	})

	// Back on the Programs page, a program whose executable is unknown.
	press(t, "the Programs page", func() bool { return m.stack.GetVisibleChildName() == "programs" }, pageKey("programs"))
	onGTK(t, func() { p.openProgram("comm:nm-dispatcher") })
	waitGTK(t, "nm-dispatcher's detail", func() bool { return p.detail.key == "comm:nm-dispatcher" && p.detail.resp != nil })
	clickUntil(t, "nm-dispatcher's connections", &p.detail.conns.Widget, shows("nm-dispatcher", 1))
}
