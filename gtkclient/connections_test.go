package gtkclient

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gotk3/gotk3/gtk"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/gtkclient/internal/demo"
	"github.com/bastion-fw/bastion/internal/testenv"
	"github.com/bastion-fw/bastion/internal/testenv/fakeui"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// olderHistory is what only QueryConnections finds: 20 git fetches two
// days ago, allowed by the sample rule for *.github.com (its ID is
// 0000000000000002), and 10 ssh connections three days ago that nobody
// answered.
func olderHistory(now time.Time) []*uiv1.HistoryEntry {
	git := &agentv1.Process{Pid: 4100, Tgid: 4100, Uid: 1000, Comm: "git", Exe: "/usr/bin/git", Args: []string{"git", "fetch"}}
	s := demo.SSHv6Prompt(now, 0)
	var out []*uiv1.HistoryEntry
	for i := 9; i >= 0; i-- {
		out = append(out, &uiv1.HistoryEntry{Time: timestamppb.New(now.Add(-72*time.Hour - time.Duration(i)*time.Minute)),
			Process: s.Process, Flow: s.Flow, Action: rulesv1.Action_ACTION_REJECT, DecidedBy: "deadline"})
	}
	for i := 19; i >= 0; i-- {
		out = append(out, &uiv1.HistoryEntry{Time: timestamppb.New(now.Add(-48*time.Hour - time.Duration(i)*time.Minute)),
			Process: git, Host: "github.com",
			Flow: &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 4, SrcIp: "192.168.1.23",
				SrcPort: uint32(40000 + i), DstIp: "140.82.121.4", DstPort: 443},
			Action: rulesv1.Action_ACTION_ALLOW, DecidedBy: "rule:0000000000000002", RuleId: "0000000000000002"})
	}
	return out
}

// connEnv is the main window over the sample rules and a history of 37
// decisions: the 7 sample ones, which WatchHistory sends (history_size
// 7), and the 30 older ones of olderHistory, which only a query finds.
func connEnv(t *testing.T, more ...*uiv1.HistoryEntry) *env {
	t.Helper()
	e := newEnv(t, envOpt{cfg: func(c *Config) { c.MainWindow, c.NoPrompts = true, true }, setup: func(s *fakeui.Service) {
		cfg, _ := s.GetConfig(context.Background(), &uiv1.GetConfigRequest{})
		cfg.GetConfig().HistorySize = 7
		if _, err := s.SetConfig(context.Background(), &uiv1.SetConfigRequest{Config: cfg.GetConfig()}); err != nil {
			t.Fatal(err)
		}
		s.AddRules(demo.SampleRules(testNow)...)
		s.AddHistory(more...)
		s.AddHistory(olderHistory(testNow)...)
		s.AddHistory(demo.SampleHistory(testNow)...)
	}})
	waitGTK(t, fmt.Sprintf("the rules listed and %d connections", 37+len(more)), func() bool {
		m := e.a.main
		return len(m.rules) == 8 && m.conn.answered == m.conn.gen && rowCount(m.histStore) == 37+len(more)
	})
	return e
}

// shownEntries are the page's rows, top first.
func shownEntries(m *mainWindow) []*uiv1.HistoryEntry {
	var out []*uiv1.HistoryEntry
	it, ok := m.histStore.GetIterFirst()
	for ok {
		out = append(out, m.conn.rows[m.rowID(it)])
		ok = m.histStore.IterNext(it)
	}
	return out
}

// connFilters are the page's filters as a person sets them.
type connFilters struct {
	search, program, host, action, period, since, until, by string
}

// setConnFilters sets every filter at once and searches.
func setConnFilters(m *mainWindow, f connFilters) {
	c := m.conn
	c.settingUp = true
	c.search.SetText(f.search)
	e, _ := c.program.GetEntry()
	e.SetText(f.program)
	c.host.SetText(f.host)
	c.action.SetActiveID(f.action)
	c.period.SetActiveID(cmpOr(f.period, "all"))
	c.since.SetText(f.since)
	c.until.SetText(f.until)
	c.by.SetActiveID(f.by)
	c.settingUp = false
	m.connFiltersChanged()
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// TestConnectionsFilters: each filter, alone and together, shows the
// matching rows of both the live history and the older one, and the
// structured ones reach the rules service's query.
func TestConnectionsFilters(t *testing.T) {
	e := connEnv(t)
	day := func(d time.Duration) string { return testNow.Add(d).Format("2006-01-02 15:04") }
	tests := []struct {
		name   string
		f      connFilters
		want   int
		filter *uiv1.ConnectionFilter // the query's, when it says more than nothing
	}{
		{"nothing", connFilters{}, 37, nil},
		{"search a host", connFilters{search: "TELEMETRY"}, 1, nil},
		{"search the decided-by words", connFilters{search: "earlier answer"}, 1, nil},
		{"search a rule's name as shown", connFilters{search: "*.github.com"}, 20, nil},
		{"program by path", connFilters{program: "/usr/bin/git"}, 21, &uiv1.ConnectionFilter{Program: "/usr/bin/git"}},
		{"program by name", connFilters{program: "ssh"}, 11, &uiv1.ConnectionFilter{Program: "ssh"}},
		{"host", connFilters{host: "github"}, 21, &uiv1.ConnectionFilter{Host: "github"}},
		{"host by address", connFilters{host: "2001:db8:4006"}, 11, &uiv1.ConnectionFilter{Host: "2001:db8:4006"}},
		{"allowed", connFilters{action: "allow"}, 25, &uiv1.ConnectionFilter{Action: rulesv1.Action_ACTION_ALLOW}},
		{"denied and rejected", connFilters{action: "deny"}, 12, &uiv1.ConnectionFilter{Action: rulesv1.Action_ACTION_DENY}},
		{"last hour", connFilters{period: "hour"}, 7, &uiv1.ConnectionFilter{Since: timestamppb.New(testNow.Add(-time.Hour))}},
		{"today", connFilters{period: "today"}, 7,
			&uiv1.ConnectionFilter{Since: timestamppb.New(time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC))}},
		{"last 7 days", connFilters{period: "week"}, 37, &uiv1.ConnectionFilter{Since: timestamppb.New(testNow.Add(-7 * 24 * time.Hour))}},
		{"between", connFilters{period: "custom", since: day(-48*time.Hour - 30*time.Minute), until: day(-24 * time.Hour)}, 20,
			&uiv1.ConnectionFilter{Since: timestamppb.New(testNow.Add(-48*time.Hour - 30*time.Minute).Truncate(time.Minute)),
				Until: timestamppb.New(testNow.Add(-24 * time.Hour).Truncate(time.Minute))}},
		{"since a time today", connFilters{period: "custom", since: "15:00"}, 5,
			&uiv1.ConnectionFilter{Since: timestamppb.New(time.Date(2026, 3, 14, 15, 0, 0, 0, time.UTC))}},
		{"one rule", connFilters{by: "rule:0000000000000002"}, 20, &uiv1.ConnectionFilter{RuleId: "0000000000000002"}},
		{"any rule", connFilters{by: "rule"}, 23, nil},
		{"the prompt", connFilters{by: "prompt"}, 1, nil},
		{"nobody answered", connFilters{by: "deadline"}, 11, nil},
		{"program and action", connFilters{program: "/usr/bin/git", action: "deny"}, 0,
			&uiv1.ConnectionFilter{Program: "/usr/bin/git", Action: rulesv1.Action_ACTION_DENY}},
		{"everything", connFilters{search: "fetch", program: "git", host: "140.82", action: "allow", period: "week",
			by: "rule:0000000000000002"}, 20, &uiv1.ConnectionFilter{Program: "git", Host: "140.82",
			Action: rulesv1.Action_ACTION_ALLOW, Since: timestamppb.New(testNow.Add(-7 * 24 * time.Hour)), RuleId: "0000000000000002"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := e.a.main
			onGTK(t, func() { setConnFilters(m, tc.f) })
			var got []*uiv1.HistoryEntry
			var count string
			waitGTK(t, fmt.Sprintf("%d rows", tc.want), func() bool {
				got, count = shownEntries(m), labelText(m.conn.count)
				return m.conn.answered == m.conn.gen && len(got) == tc.want
			})
			wantCount := fmt.Sprintf("%d connections match.", tc.want)
			switch tc.want {
			case 0:
				wantCount = "No connection matches."
			case 1:
				wantCount = "1 connection matches."
			}
			if count != wantCount {
				t.Errorf("count %q, want %q", count, wantCount)
			}
			if !slices.IsSortedFunc(got, func(a, b *uiv1.HistoryEntry) int { return b.GetTime().AsTime().Compare(a.GetTime().AsTime()) }) {
				t.Error("the rows are not newest first")
			}
			// The rows shown are the answer to the page's last query
			// (search words alone make none), which reached the service.
			var q *uiv1.QueryConnectionsRequest
			onGTK(t, func() { q = m.conn.asked })
			if !slices.ContainsFunc(e.svc.CallsTo("QueryConnections"), func(c proto.Message) bool { return proto.Equal(c, q) }) {
				t.Errorf("the service got no query %v", q)
			}
			want := tc.filter
			if want == nil {
				want = &uiv1.ConnectionFilter{}
			}
			if diffProto(q.GetFilter(), want) != "" || q.GetLimit() != connQueryLimit {
				t.Errorf("query %v, want filter %v and limit %d", q, want, connQueryLimit)
			}
		})
	}
}

// TestConnectionsBadTimeSaysSo: a custom time that cannot be read is
// said under the filters, and no query is made for it.
func TestConnectionsBadTimeSaysSo(t *testing.T) {
	e := connEnv(t)
	m := e.a.main
	before := len(e.svc.CallsTo("QueryConnections"))
	onGTK(t, func() { setConnFilters(m, connFilters{period: "custom", since: "yesterday"}) })
	waitGTK(t, "the problem said", func() bool {
		return strings.HasPrefix(labelText(m.conn.count), `Since: "yesterday" is not a time: write it as 2026-03-14 15:09`)
	})
	onGTK(t, func() { setConnFilters(m, connFilters{period: "custom", since: "2026-03-14", until: "2026-03-13"}) })
	waitGTK(t, "the problem said", func() bool { return strings.Contains(labelText(m.conn.count), "make Until later than Since") })
	if n := len(e.svc.CallsTo("QueryConnections")); n != before {
		t.Errorf("%d queries for filters that cannot be read", n-before)
	}
}

// TestConnectionsSaysMoreExist: when the service has more matching rows
// than the page asked for, the page says so.
func TestConnectionsSaysMoreExist(t *testing.T) {
	e := connEnv(t)
	m := e.a.main
	onGTK(t, func() { m.conn.limit = 10; setConnFilters(m, connFilters{program: "/usr/bin/git"}) })
	waitGTK(t, "10 git rows and the note", func() bool {
		return m.conn.answered == m.conn.gen && rowCount(m.histStore) == 10 &&
			strings.Contains(labelText(m.conn.count), "More match in the kept history than were fetched")
	})
	onGTK(t, func() { m.conn.limit = 100; setConnFilters(m, connFilters{program: "/usr/bin/git"}) })
	waitGTK(t, "21 git rows without the note", func() bool {
		return m.conn.answered == m.conn.gen && rowCount(m.histStore) == 21 && labelText(m.conn.count) == "21 connections match."
	})
}

// TestConnectionsWithoutQuery: when the rules service cannot search (an
// older one, or its store failed), the live rows still show, filtered,
// and the page says why older ones are missing.
func TestConnectionsWithoutQuery(t *testing.T) {
	e := connEnv(t)
	m := e.a.main
	for _, tc := range []struct {
		err  error
		note string
	}{
		{status.Error(codes.Unimplemented, "unknown method"), "this rules service cannot search older ones."},
		{status.Error(codes.Internal, "read store: disk I/O error"), "searching the older ones failed (read store: disk I/O error)."},
	} {
		e.svc.SetQueryConnectionsError(tc.err)
		onGTK(t, func() { setConnFilters(m, connFilters{program: "firefox-esr"}) })
		want := "3 connections match. Only those seen since Bastion started are shown: " + tc.note
		waitGTK(t, want, func() bool {
			return m.conn.answered == m.conn.gen && rowCount(m.histStore) == 3 && labelText(m.conn.count) == want
		})
	}
}

func diffProto(got, want proto.Message) string {
	return cmp.Diff(want, got, protocmp.Transform())
}

// chronyHistory is n NTP exchanges an hour apart, from 5 hours ago back.
func chronyHistory(n int) []*uiv1.HistoryEntry {
	p := &agentv1.Process{Pid: 612, Tgid: 612, Uid: 1000, Comm: "chronyd", Exe: "/usr/sbin/chronyd"}
	var out []*uiv1.HistoryEntry
	for i := n - 1; i >= 0; i-- {
		out = append(out, &uiv1.HistoryEntry{Time: timestamppb.New(testNow.Add(-5*time.Hour - time.Duration(i)*time.Minute)),
			Process: p, Flow: &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_UDP, IpVersion: 4, SrcIp: "192.168.1.23",
				SrcPort: 123, DstIp: "162.159.200." + strconv.Itoa(i%250), DstPort: 123},
			Host: fmt.Sprintf("%d.debian.pool.ntp.org", i), Action: rulesv1.Action_ACTION_ALLOW,
			DecidedBy: "rule:0000000000000005", RuleId: "0000000000000005"})
	}
	return out
}

// liveEntry is a decision made now, by curl, to host.
func liveEntry(at time.Duration, host string) *uiv1.HistoryEntry {
	p := demo.CurlPrompt(testNow, 0)
	return &uiv1.HistoryEntry{Time: timestamppb.New(testNow.Add(at)), Process: p.Process, Flow: p.Flow, Host: host,
		Action: rulesv1.Action_ACTION_ALLOW, DecidedBy: "prompt"}
}

// topRow is the row at the top of the list's view, and how far its top
// is above the view's (0 or less, in pixels).
func topRow(m *mainWindow) (*uiv1.HistoryEntry, int) {
	path, col, _, _, ok := m.histView.GetPathAtPos(1, 1)
	if !ok {
		return nil, 0
	}
	it, err := m.histStore.GetIter(path)
	if err != nil {
		return nil, 0
	}
	return m.conn.rows[m.rowID(it)], m.histView.GetCellArea(path, col).GetY()
}

// TestConnectionsLiveKeepsScroll: as a person reading older rows, new
// connections arriving do not move the list: the row at the top of the
// view stays there, at the same height, and "3 new" appears; clicking it
// shows the newest, which are followed from then on. A selected row holds
// the list still too.
func TestConnectionsLiveKeepsScroll(t *testing.T) {
	e := connEnv(t, chronyHistory(60)...)
	m := e.a.main
	startWindowManager(t)
	activate(t, "^Bastion$", m.win)
	press(t, "the Connections page", func() bool { return m.stack.GetVisibleChildName() == "history" }, pageKey("history"))
	adj := m.conn.scroll.GetVAdjustment()

	// Scroll down with the mouse wheel over the list, as a person turns
	// the wheel again when the list did not move. Each turn first moves
	// the pointer to the list's middle, where it is now: the page may
	// still be sliding in, and the window manager may still move the
	// window, and a pointer that moves makes X tell GTK it is there.
	var value float64
	var state string
	for i, deadline := 0, time.Now().Add(waitTimeout); ; i++ {
		x, y := screenPoint(t, m.histView.ToWidget(), -1, -1)
		x += i % 2
		xdo(t, "mousemove", "--sync", strconv.Itoa(x), strconv.Itoa(y), "click", "5")
		time.Sleep(50 * time.Millisecond)
		onGTK(t, func() {
			value = adj.GetValue()
			state = fmt.Sprintf("the list at %v of %v (page %v), the pointer at %d,%d, the page sliding in: %v",
				value, adj.GetUpper(), adj.GetPageSize(), x, y, m.stack.GetTransitionRunning())
		})
		if value > 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for the list scrolled down: %s; under the pointer: %s",
				waitTimeout, state, strings.Join(strings.Fields(xdo(t, "getmouselocation")), " "))
		}
	}
	// The wheel scrolls smoothly: wait until the list stands still.
	var top *uiv1.HistoryEntry
	var topY int
	testenv.WaitFor(t, waitTimeout, "the list at rest", func() bool {
		last := value
		time.Sleep(100 * time.Millisecond) // two reads 100 ms apart: no condition tells when a kinetic scroll ends
		onGTK(t, func() { value = adj.GetValue(); top, topY = topRow(m) })
		return value == last && top != nil
	})
	var upper, rowHeight float64
	onGTK(t, func() { upper = adj.GetUpper(); rowHeight = upper / float64(rowCount(m.histStore)) })
	screenshot(t, "connections-scrolled")

	e.svc.AddHistory(liveEntry(time.Second, "one.example"), liveEntry(2*time.Second, "two.example"), liveEntry(3*time.Second, "three.example"))
	// The tree view lays new rows out a few at a time: wait for all 3.
	waitGTK(t, "3 rows added and laid out", func() bool {
		return rowCount(m.histStore) == 100 && adj.GetUpper() > upper+2.5*rowHeight
	})
	waitGTK(t, "“↑ 3 new”", func() bool { l, _ := m.conn.newer.GetLabel(); return m.conn.newer.GetVisible() && l == "↑ 3 new" })
	onGTK(t, func() {
		got, gotY := topRow(m)
		if got != top || gotY != topY {
			t.Errorf("the top row moved: %s at %d, was %s at %d", got.GetHost(), gotY, top.GetHost(), topY)
		}
		if first := shownEntries(m)[0]; first.GetHost() != "three.example" {
			t.Errorf("the first row is %s, want the newest", first.GetHost())
		}
	})
	screenshot(t, "connections-3-new")

	// Click it; again, as a person would, when the click was lost (now
	// and then on this Xvfb, the first click on the window is).
	click(t, m.conn.newer)
	lastClick := time.Now()
	if !testenv.Poll(waitTimeout, func() bool {
		var ok, shown bool
		onGTK(t, func() { shown = m.conn.newer.GetVisible() })
		if shown && time.Since(lastClick) > time.Second {
			click(t, m.conn.newer)
			lastClick = time.Now()
		}
		onGTK(t, func() {
			got, _ := topRow(m)
			state = fmt.Sprintf("scrolled to %v, %s at the top, “new” shown: %v", adj.GetValue(), got.GetHost(), m.conn.newer.GetVisible())
			ok = adj.GetValue() == 0 && got.GetHost() == "three.example" && !m.conn.newer.GetVisible()
		})
		return ok
	}) {
		t.Fatalf("after clicking “new”, %s; want three.example at the top", state)
	}
	// At the top, a new row shows at once.
	e.svc.AddHistory(liveEntry(4*time.Second, "four.example"))
	waitGTK(t, "four.example at the top", func() bool {
		got, _ := topRow(m)
		return got.GetHost() == "four.example" && !m.conn.newer.GetVisible()
	})
	// A selected row stays where it is.
	onGTK(t, func() { selectRow(m.histView, 0) })
	onGTK(t, func() { upper = adj.GetUpper() })
	e.svc.AddHistory(liveEntry(5*time.Second, "five.example"))
	waitGTK(t, "five.example added and laid out", func() bool {
		return rowCount(m.histStore) == 102 && adj.GetUpper() > upper+0.5*rowHeight
	})
	waitGTK(t, "“↑ 1 new”", func() bool { l, _ := m.conn.newer.GetLabel(); return m.conn.newer.GetVisible() && l == "↑ 1 new" })
	onGTK(t, func() {
		if got, _ := topRow(m); got.GetHost() != "four.example" {
			t.Errorf("the top row is %s, want the selected four.example", got.GetHost())
		}
		if sel := m.selectedHistory(); sel.GetHost() != "four.example" {
			t.Errorf("the selection moved to %s", sel.GetHost())
		}
	})
}

// TestConnectionsLiveRowsFiltered: a live row shows only when it matches
// the filters.
func TestConnectionsLiveRowsFiltered(t *testing.T) {
	e := connEnv(t)
	m := e.a.main
	onGTK(t, func() { setConnFilters(m, connFilters{host: "wanted"}) })
	waitGTK(t, "no row", func() bool { return m.conn.answered == m.conn.gen && rowCount(m.histStore) == 0 })
	e.svc.AddHistory(liveEntry(time.Second, "other.example"), liveEntry(2*time.Second, "wanted.example"))
	waitGTK(t, "the wanted row", func() bool {
		es := shownEntries(m)
		return len(es) == 1 && es[0].GetHost() == "wanted.example" && labelText(m.conn.count) == "1 connection matches."
	})
}

// TestShowConnectionsFor: the function other pages call shows the
// Connections page with only that program's connections.
func TestShowConnectionsFor(t *testing.T) {
	e := connEnv(t)
	m := e.a.main
	onGTK(t, func() {
		setConnFilters(m, connFilters{search: "x", host: "y", action: "deny", period: "hour", by: "prompt"})
		m.present("rules")
		m.showConnectionsFor("/usr/bin/git")
	})
	waitGTK(t, "21 git rows on the Connections page", func() bool {
		return m.stack.GetVisibleChildName() == "history" && m.conn.answered == m.conn.gen && rowCount(m.histStore) == 21
	})
	// The queries run concurrently: the one answered is the page's last.
	var asked *uiv1.QueryConnectionsRequest
	onGTK(t, func() { asked = m.conn.asked })
	if diffProto(asked.GetFilter(), &uiv1.ConnectionFilter{Program: "/usr/bin/git"}) != "" {
		t.Errorf("query %v, want only the program", asked)
	}
	onGTK(t, func() {
		entry, _ := m.conn.program.GetEntry()
		if p, _ := entry.GetText(); p != "/usr/bin/git" {
			t.Errorf("the program filter shows %q", p)
		}
	})
}

// TestConnectionsExport: as a person, Export… saves the filtered rows:
// to JSON when the name says .json, to CSV by default, and to the format
// chosen below the file chooser; reading the files back gives every
// column of every row.
func TestConnectionsExport(t *testing.T) {
	e := connEnv(t)
	m := e.a.main
	dir := t.TempDir()
	onGTK(t, func() { setConnFilters(m, connFilters{program: "/usr/bin/git"}) })
	waitGTK(t, "21 git rows", func() bool { return m.conn.answered == m.conn.gen && rowCount(m.histStore) == 21 })
	startWindowManager(t)
	activate(t, "^Bastion$", m.win)
	press(t, "the Connections page", func() bool { return m.stack.GetVisibleChildName() == "history" }, pageKey("history"))

	// export opens the dialog, writes name in it and saves.
	export := func(name string, before func(fc *gtk.FileChooserDialog)) {
		t.Helper()
		press(t, "the Export dialog", func() bool { return m.exportChooser != nil && m.exportChooser.IsVisible() }, "alt+e")
		fc := m.exportChooser
		activate(t, "^Export connections$", &fc.Window)
		if before != nil {
			before(fc)
		}
		if name != "" {
			xdo(t, "key", "ctrl+a")
			xdo(t, "type", name)
		} else {
			onGTK(t, func() { fc.SetCurrentFolder(dir) })
		}
		if name != "" {
			press(t, "the dialog closed", func() bool { return m.exportChooser == nil }, "Return")
			return
		}
		screenshot(t, "connections-export-format")
		var save *gtk.Button
		onGTK(t, func() {
			w, _ := fc.GetWidgetForResponse(gtk.RESPONSE_ACCEPT)
			save, _ = w.(*gtk.Button)
		})
		click(t, save)
		waitGTK(t, "the dialog closed", func() bool { return m.exportChooser == nil })
	}
	want := connRecord{Time: "2026-03-14T14:49:26Z", Program: "/usr/bin/git", PID: 51230, UID: 1000, User: "alice",
		Host: "github.com", Address: "140.82.121.4", Port: 443, Protocol: "TCP", Action: "allow",
		DecidedBy: "a rule deleted since", RuleID: "00000000000000ff"}
	wantOld := connRecord{Time: "2026-03-12T15:09:26Z", Program: "/usr/bin/git", PID: 4100, UID: 1000, User: "alice",
		Host: "github.com", Address: "140.82.121.4", Port: 443, Protocol: "TCP", Action: "allow",
		DecidedBy: "rule “Allow git → *.github.com”", RuleID: "0000000000000002", Rule: "Allow git to *.github.com, any port, forever"}

	jsonPath := filepath.Join(dir, "git.json")
	export(jsonPath, nil)
	screenshot(t, "connections-export-json")
	noticeSays(t, m, "Saved 21 connections to "+jsonPath+".")
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var got []connRecord
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("%v in %s", err, data)
	}
	if len(got) != 21 {
		t.Fatalf("%d records, want 21", len(got))
	}
	if got[0] != want || got[1].RuleID != wantOld.RuleID || got[1].DecidedBy != wantOld.DecidedBy {
		t.Errorf("records 0 and 1:\n%+v\n%+v\nwant\n%+v\n%+v", got[0], got[1], want, wantOld)
	}
	if got[1].Rule == "" {
		t.Error("the rule column of a rule's row is empty")
	}

	// No extension: CSV, the format chosen by default. (A name that
	// starts like git.json would be completed to it.)
	export(filepath.Join(dir, "conns"), nil)
	noticeSays(t, m, "Saved 21 connections to "+filepath.Join(dir, "conns.csv")+".")
	f, err := os.Open(filepath.Join(dir, "conns.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 22 || !slices.Equal(rows[0], csvHeader) {
		t.Fatalf("%d CSV rows, header %q", len(rows), rows[0])
	}
	if !slices.Equal(rows[1], want.csv()) {
		t.Errorf("first CSV row %q, want %q", rows[1], want.csv())
	}

	// The format chosen below the file chooser renames the file.
	export("", func(fc *gtk.FileChooserDialog) {
		press(t, "JSON chosen", func() bool { return fc.GetCurrentName() == "bastion-connections.json" }, "alt+f", "Down")
	})
	noticeSays(t, m, "Saved 21 connections to "+filepath.Join(dir, "bastion-connections.json")+".")
	data, err = os.ReadFile(filepath.Join(dir, "bastion-connections.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &got); err != nil || len(got) != 21 {
		t.Errorf("%d records, %v", len(got), err)
	}
	screenshot(t, "connections-exported")
}

// TestConnectionsExportFailure: a file that cannot be written is said
// plainly, with what to do, and nothing is left behind.
func TestConnectionsExportFailure(t *testing.T) {
	e := connEnv(t)
	m := e.a.main
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "taken.csv"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "missing", "out.csv"), "Could not save the connections to " + dir + "/missing/out.csv: no such file or directory. Choose a folder that exists."},
		{filepath.Join(dir, "taken.csv"), "Could not save the connections to " + dir + "/taken.csv: file exists. Choose another file."},
	} {
		onGTK(t, func() { m.exportConnectionsTo(tc.path, exportCSV) })
		noticeSays(t, m, tc.want)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left in the folder: %v", ents)
	}
}

// noticeSays waits until the notice above the pages says want.
func noticeSays(t *testing.T, m *mainWindow, want string) {
	t.Helper()
	var got string
	if !testenv.Poll(waitTimeout, func() bool {
		onGTK(t, func() { got = labelText(m.noticeText) })
		return got == want
	}) {
		t.Fatalf("the notice says %q, want %q", got, want)
	}
}

// TestConnectionsSearchNeedsNoQuery: the search words are matched on the
// rows as shown, so typing them asks the rules service nothing more.
func TestConnectionsSearchNeedsNoQuery(t *testing.T) {
	e := connEnv(t)
	m := e.a.main
	before := len(e.svc.CallsTo("QueryConnections"))
	for _, words := range []string{"te", "telemetry", "nobody"} {
		onGTK(t, func() { m.conn.search.SetText(words) })
	}
	waitGTK(t, "the 11 rows nobody answered", func() bool { return rowCount(m.histStore) == 11 })
	if n := len(e.svc.CallsTo("QueryConnections")) - before; n != 0 {
		t.Errorf("%d queries for search words", n)
	}
	onGTK(t, func() { m.conn.action.SetActiveID("allow") })
	waitGTK(t, "no row", func() bool { return m.conn.answered == m.conn.gen && rowCount(m.histStore) == 0 })
	if n := len(e.svc.CallsTo("QueryConnections")) - before; n != 1 {
		t.Errorf("%d queries for a new action, want 1", n)
	}
}

// pageKey is the key that shows a main window page: Alt and its place.
func pageKey(name string) string {
	i := slices.IndexFunc(mainPages, func(p struct {
		name, title string
		make        func(m *mainWindow) gtk.IWidget
	}) bool {
		return p.name == name
	})
	return "alt+" + strconv.Itoa(i+1)
}

// TestConnectionsFiltersByKeyboard: as a person, each filter is reached
// by its Alt key and typed or chosen; the rows follow.
func TestConnectionsFiltersByKeyboard(t *testing.T) {
	e := connEnv(t)
	m := e.a.main
	startWindowManager(t)
	activate(t, "^Bastion$", m.win)
	press(t, "the Connections page", func() bool { return m.stack.GetVisibleChildName() == "history" }, pageKey("history"))
	rows := func(n int) func() bool {
		return func() bool { return m.conn.answered == m.conn.gen && rowCount(m.histStore) == n }
	}
	press(t, "the program focused", func() bool { return focusIn(m.win, m.conn.program) }, "alt+p")
	xdo(t, "type", "ssh")
	waitGTK(t, "11 ssh rows", rows(11))
	press(t, "the host focused", func() bool { return focusIn(m.win, m.conn.host) }, "alt+o")
	xdo(t, "type", "2001:db8")
	press(t, "the action focused", func() bool { return focusIn(m.win, m.conn.action) }, "alt+a")
	press(t, "Denied chosen", func() bool { return m.conn.action.GetActiveID() == "deny" }, "Down", "Down")
	waitGTK(t, "11 denied ssh rows", rows(11))
	press(t, "the time focused", func() bool { return focusIn(m.win, m.conn.period) }, "alt+t")
	press(t, "Last hour chosen", func() bool { return m.conn.period.GetActiveID() == "hour" }, "Down")
	waitGTK(t, "the 1 ssh row of the last hour", rows(1))
	press(t, "the search focused", func() bool { return focusIn(m.win, m.conn.search) }, "alt+f")
	xdo(t, "type", "nobody answered")
	waitGTK(t, "still 1 row", func() bool { return rows(1)() && labelText(m.conn.count) == "1 connection matches." })
	screenshot(t, "connections-filtered-by-keyboard")
	xdo(t, "type", " xyz")
	waitGTK(t, "no row", func() bool { return rowCount(m.histStore) == 0 && labelText(m.conn.count) == "No connection matches." })
	var q *uiv1.ConnectionFilter
	onGTK(t, func() { q = m.conn.asked.GetFilter() })
	if q.GetProgram() != "ssh" || q.GetHost() != "2001:db8" || q.GetAction() != rulesv1.Action_ACTION_DENY {
		t.Errorf("last query %v", q)
	}
}
