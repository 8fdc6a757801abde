package gtkclient

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gotk3/gotk3/gtk"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/gtkclient/internal/demo"
	"github.com/bastion-fw/bastion/internal/testenv"
	"github.com/bastion-fw/bastion/internal/testenv/fakeui"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// mainEnv is an env with the sample rules, history and decide-later
// entries, and the main window open.
func mainEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, envOpt{cfg: func(c *Config) { c.MainWindow, c.NoPrompts = true, true }})
	e.svc.AddRules(demo.SampleRules(testNow)...)
	e.svc.AddHistory(demo.SampleHistory(testNow)...)
	e.svc.AddDecideLater(demo.SampleDecideLater(testNow)...)
	waitGTK(t, "the rules", func() bool { return len(e.a.main.shownRules) == 8 })
	return e
}

func rowCount(s *gtk.ListStore) int {
	n := 0
	it, ok := s.GetIterFirst()
	for ok {
		n++
		ok = s.IterNext(it)
	}
	return n
}

func lastCall[T proto.Message](t *testing.T, svc *fakeui.Service, method string) T {
	t.Helper()
	calls := svc.CallsTo(method)
	if len(calls) == 0 {
		t.Fatalf("no %s call", method)
	}
	return calls[len(calls)-1].(T)
}

func TestRulesSearchAndFilter(t *testing.T) {
	e := mainEnv(t)
	tests := []struct {
		search string
		filter int // index in ruleFilters
		want   int
	}{
		{"", 0, 8},
		{"firefox", 0, 2},
		{"FIREFOX telemetry", 0, 1}, // every word, any case
		{"github.com", 0, 1},
		{"", 1, 6}, // allow
		{"", 2, 2}, // deny or reject
		{"", 4, 1}, // disabled
		{"", 5, 2}, // temporary: 1 hour and until logout
		{"zoom", 2, 0},
		{"udp", 0, 1},
	}
	for _, tc := range tests {
		onGTK(t, func() {
			m := e.a.main
			m.search.SetText(tc.search)
			m.filter.SetActive(tc.filter)
			m.fillRules() // search-changed is debounced by GTK
			if got := rowCount(m.rulesStore); got != tc.want {
				t.Errorf("search %q filter %q: %d rows, want %d", tc.search, ruleFilters[tc.filter].label, got, tc.want)
			}
		})
	}
}

func TestRulesColumns(t *testing.T) {
	e := mainEnv(t)
	onGTK(t, func() {
		m := e.a.main
		it, _ := m.rulesStore.GetIterFirst()
		m.rulesStore.IterNext(it)
		m.rulesStore.IterNext(it) // the curl rule: 1 hour
		var got []string
		for _, c := range []int{colAction, colApp, colDest, colLifetime, colHits, colLastHit} {
			v, _ := m.rulesStore.GetValue(it, c)
			s, _ := v.GetString()
			got = append(got, s)
		}
		want := []string{"Allow", "/usr/bin/curl", "TCP deb.debian.org:443", "42m left", "3", "17m ago"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("row (-want +got):\n%s", diff)
		}
	})
}

func TestRulesEditDeleteEnable(t *testing.T) {
	e := mainEnv(t)
	var target *rulesv1.Rule
	// Disable the git rule with its checkbox.
	onGTK(t, func() {
		target = e.a.main.shownRules[1]
		e.a.main.setEnabled(1, false)
	})
	testenv.WaitFor(t, waitTimeout, "SetRuleEnabled", func() bool { return len(e.svc.CallsTo("SetRuleEnabled")) == 1 })
	if got := lastCall[*uiv1.SetRuleEnabledRequest](t, e.svc, "SetRuleEnabled"); got.GetId() != target.GetId() || got.GetEnabled() {
		t.Errorf("SetRuleEnabled(%q, %v), want (%q, false)", got.GetId(), got.GetEnabled(), target.GetId())
	}
	waitGTK(t, "the rule shown disabled", func() bool { return !e.a.main.shownRules[1].GetEnabled() })

	// Edit it: deny instead, port 22.
	onGTK(t, func() {
		selectRow(e.a.main.rulesView, 1)
		e.a.main.edit.Clicked()
		d := e.a.main.lastDialog
		d.action.SetActive(1)
		d.ports.SetText("22")
		d.protocol.SetActive(1)
		d.dlg.Response(gtk.RESPONSE_OK)
	})
	testenv.WaitFor(t, waitTimeout, "UpdateRule", func() bool { return len(e.svc.CallsTo("UpdateRule")) == 1 })
	want := proto.Clone(target).(*rulesv1.Rule)
	want.Enabled = false
	want.Action = rulesv1.Action_ACTION_DENY
	want.DstPortMin, want.DstPortMax, want.Protocol = 22, 22, rulesv1.Protocol_PROTOCOL_TCP
	if diff := cmp.Diff(want, lastCall[*uiv1.UpdateRuleRequest](t, e.svc, "UpdateRule").GetRule(), protocmp.Transform()); diff != "" {
		t.Errorf("updated rule (-want +got):\n%s", diff)
	}

	waitGTK(t, "the edited rule listed", func() bool {
		return e.a.main.shownRules[1].GetAction() == rulesv1.Action_ACTION_DENY
	})

	// An invalid edit stays in the dialog with the reason.
	onGTK(t, func() {
		selectRow(e.a.main.rulesView, 1)
		e.a.main.edit.Clicked()
		d := e.a.main.lastDialog
		d.ports.SetText("99999")
		d.dlg.Response(gtk.RESPONSE_OK)
		if !strings.Contains(labelText(d.errLabel), "99999") {
			t.Errorf("invalid port: dialog says %q", labelText(d.errLabel))
		}
		d.dlg.Response(gtk.RESPONSE_CANCEL)
	})

	// Delete it, then undo.
	onGTK(t, func() {
		selectRow(e.a.main.rulesView, 1)
		e.a.main.del.Clicked()
	})
	testenv.WaitFor(t, waitTimeout, "DeleteRule", func() bool { return len(e.svc.CallsTo("DeleteRule")) == 1 })
	if got := lastCall[*uiv1.DeleteRuleRequest](t, e.svc, "DeleteRule").GetId(); got != target.GetId() {
		t.Errorf("deleted %q, want %q", got, target.GetId())
	}
	waitGTK(t, "7 rules and an undo", func() bool {
		return len(e.a.main.shownRules) == 7 && e.a.main.undoButton.GetVisible()
	})
	onGTK(t, func() { e.a.main.undoButton.Clicked() })
	testenv.WaitFor(t, waitTimeout, "AddRule", func() bool { return len(e.svc.CallsTo("AddRule")) == 1 })
	back := lastCall[*uiv1.AddRuleRequest](t, e.svc, "AddRule").GetRule()
	want.Id, want.Created = "", nil
	if diff := cmp.Diff(want, back, protocmp.Transform()); diff != "" {
		t.Errorf("undo re-added (-want +got):\n%s", diff)
	}
	waitGTK(t, "8 rules again", func() bool { return len(e.a.main.shownRules) == 8 })
}

func TestRulesImportExport(t *testing.T) {
	e := mainEnv(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		file   string
		format uiv1.Format
		n      int // rules held then
	}{{"rules.json", uiv1.Format_FORMAT_JSON, 8}, {"rules.toml", uiv1.Format_FORMAT_TOML, 16}} {
		path := filepath.Join(dir, tc.file)
		onGTK(t, func() { e.a.main.exportFile(path, tc.format) })
		exported := fmt.Sprintf("Exported %d rule(s)", tc.n)
		waitGTK(t, "the export notice", func() bool { return strings.HasPrefix(labelText(e.a.main.noticeText), exported) })
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "/usr/bin/git") {
			t.Errorf("%s does not hold the rules:\n%s", tc.file, data)
		}
		// Importing the export adds the same rules again.
		onGTK(t, func() { e.a.main.importFile(path, tc.format) })
		imported := fmt.Sprintf("Imported %d rule(s) from %s.", tc.n, tc.file)
		waitGTK(t, "the import notice", func() bool { return labelText(e.a.main.noticeText) == imported })
		waitGTK(t, "the imported rules listed", func() bool { return len(e.a.main.rules) == 2*tc.n })
	}
	// OpenSnitch.
	onGTK(t, func() {
		e.a.main.importFile(filepath.Join("testdata", "opensnitch-firefox.json"), uiv1.Format_FORMAT_OPENSNITCH)
	})
	waitGTK(t, "the OpenSnitch import", func() bool {
		return labelText(e.a.main.noticeText) == "Imported 1 rule(s) from opensnitch-firefox.json."
	})
	req := lastCall[*uiv1.ImportRulesRequest](t, e.svc, "ImportRules")
	if req.GetFormat() != uiv1.Format_FORMAT_OPENSNITCH {
		t.Errorf("format %s, want OpenSnitch", req.GetFormat())
	}
	waitGTK(t, "the imported rule listed", func() bool {
		for _, r := range e.a.main.rules {
			if r.GetExe() == "/usr/lib/firefox/firefox" {
				return true
			}
		}
		return false
	})
	// A broken file: the service's reason is shown.
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{"), 0o600)
	onGTK(t, func() { e.a.main.importFile(bad, uiv1.Format_FORMAT_JSON) })
	waitGTK(t, "the import error", func() bool { return strings.HasPrefix(labelText(e.a.main.noticeText), "Could not import bad.json") })
}

func TestHistoryMakeRule(t *testing.T) {
	e := mainEnv(t)
	waitGTK(t, "3 decisions", func() bool { return rowCount(e.a.main.histStore) == 3 })
	// A live decision arrives on top.
	p := demo.SSHv6Prompt(testNow, 0)
	e.svc.AddHistory(&uiv1.HistoryEntry{Time: timestamppb.New(testNow), Process: p.Process, Flow: p.Flow,
		Action: rulesv1.Action_ACTION_DENY, DecidedBy: "deadline"})
	waitGTK(t, "4 decisions", func() bool { return rowCount(e.a.main.histStore) == 4 })
	onGTK(t, func() {
		m := e.a.main
		it, _ := m.histStore.GetIterFirst()
		v, _ := m.histStore.GetValue(it, hColBy)
		if s, _ := v.GetString(); s != "default (not answered)" {
			t.Errorf("newest row decided by %q", s)
		}
		selectRow(m.histView, 0)
		m.ruleFromHistory()
		m.lastDialog.dlg.Response(gtk.RESPONSE_OK)
	})
	testenv.WaitFor(t, waitTimeout, "AddRule", func() bool { return len(e.svc.CallsTo("AddRule")) == 1 })
	want := &rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_DENY, Exe: "/usr/bin/ssh", Dst: "2001:db8:4006:812::200e",
		DstPortMin: 2222, DstPortMax: 2222, Protocol: rulesv1.Protocol_PROTOCOL_TCP, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}
	if diff := cmp.Diff(want, lastCall[*uiv1.AddRuleRequest](t, e.svc, "AddRule").GetRule(), protocmp.Transform()); diff != "" {
		t.Errorf("rule from history (-want +got):\n%s", diff)
	}
}

func TestDecideLater(t *testing.T) {
	e := mainEnv(t)
	waitGTK(t, "2 entries", func() bool { return rowCount(e.a.main.laterStore) == 2 })
	first := e.svc.CallsTo("ListDecideLater")
	_ = first
	entries := func() []*uiv1.DecideLaterEntry {
		r, _ := e.svc.ListDecideLater(t.Context(), &uiv1.ListDecideLaterRequest{})
		return r.GetEntries()
	}
	es := entries()
	onGTK(t, func() {
		selectRow(e.a.main.laterView, 0)
		e.a.main.resolveSelected(rulesv1.Action_ACTION_ALLOW)
		d := e.a.main.lastDialog
		d.lifetime.SetActive(2) // for a time
		d.minutes.SetValue(90)
		d.dlg.Response(gtk.RESPONSE_OK)
	})
	testenv.WaitFor(t, waitTimeout, "ResolveDecideLater", func() bool { return len(e.svc.CallsTo("ResolveDecideLater")) == 1 })
	got := lastCall[*uiv1.ResolveDecideLaterRequest](t, e.svc, "ResolveDecideLater")
	want := &uiv1.ResolveDecideLaterRequest{Id: es[0].GetId(), Rule: &rulesv1.Rule{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW,
		Exe: "/usr/bin/syncthing", Dst: "192.168.1.255", DstPortMin: 21027, DstPortMax: 21027, Protocol: rulesv1.Protocol_PROTOCOL_UDP,
		Lifetime: rulesv1.Lifetime_LIFETIME_DURATION, Expires: timestamppb.New(testNow.Add(90 * time.Minute))}}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("resolve (-want +got):\n%s", diff)
	}
	waitGTK(t, "1 entry", func() bool { return rowCount(e.a.main.laterStore) == 1 })
	onGTK(t, func() {
		selectRow(e.a.main.laterView, 0)
		e.a.main.resolveSelected(rulesv1.Action_ACTION_UNSPECIFIED) // Dismiss
	})
	testenv.WaitFor(t, waitTimeout, "the dismissal", func() bool { return len(e.svc.CallsTo("ResolveDecideLater")) == 2 })
	if got := lastCall[*uiv1.ResolveDecideLaterRequest](t, e.svc, "ResolveDecideLater"); got.GetId() != es[1].GetId() || got.GetRule() != nil {
		t.Errorf("dismiss sent %v", got)
	}
	waitGTK(t, "no entries", func() bool { return rowCount(e.a.main.laterStore) == 0 })
}

// TestStatusBanner: the banner says when the agent or the rules service
// is down, and goes when they are back; the client reconnects by itself.
func TestStatusBanner(t *testing.T) {
	e := newEnv(t, envOpt{cfg: func(c *Config) { c.MainWindow = true }})
	waitGTK(t, "connected, no banner", func() bool { return e.a.up && !e.a.main.banner.GetVisible() })
	onGTK(t, func() {
		if got := labelText(e.a.main.statusValues["Identification"]); !strings.HasPrefix(got, "netfilter-link") {
			t.Errorf("identification %q", got)
		}
		if got := labelText(e.a.main.statusValues["Reused UDP ports"]); got != "active" {
			t.Errorf("reused UDP ports %q, want active", got)
		}
		if got := labelText(e.a.main.statusValues["Host names"]); !strings.Contains(got, "57 addresses named") {
			t.Errorf("host names %q", got)
		}
		if got := labelText(e.a.main.statusValues["Kernel decisions"]); got != "on (cgroup-sock-addr+xt-bpf): 12 of your decisions remembered in the kernel" {
			t.Errorf("kernel decisions %q", got)
		}
		if got := labelText(e.a.main.statusValues["Decided in the last minute"]); got != "90 decided in the kernel, 10 by the agent (90% in the kernel)" {
			t.Errorf("decided in the last minute %q", got)
		}
	})
	e.svc.SetAgentConnected(false)
	waitGTK(t, "the agent banner", func() bool {
		return e.a.main.banner.GetVisible() && strings.Contains(labelText(e.a.main.bannerText), "agent is not connected")
	})
	e.svc.SetAgentConnected(true)
	waitGTK(t, "no banner", func() bool { return !e.a.main.banner.GetVisible() })

	// The rules service restarts; a prompt waiting across the restart
	// comes back.
	id := e.svc.AddPrompt(demo.CurlPrompt(testNow, time.Minute))
	e.promptShown(id)
	e.shutdown()
	waitGTK(t, "the rules service banner", func() bool {
		return e.a.main.banner.GetVisible() && strings.Contains(labelText(e.a.main.bannerText), "Not connected to your rules service")
	})
	e.promptHidden() // its stream is gone: it cannot be answered from here
	e.serve()
	waitGTK(t, "reconnected, no banner", func() bool { return e.a.up && !e.a.main.banner.GetVisible() })
	e.promptShown(id)
	onGTK(t, func() { e.a.prompt.allow.Clicked() })
	testenv.WaitFor(t, waitTimeout, "the answer after reconnecting", func() bool { return len(answers(e.svc)) == 1 })
}
