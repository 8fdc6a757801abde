package ctl

import (
	"encoding/csv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/desktopentry"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

func programsHarness(t *testing.T) (*harness, *programsUI) {
	t.Helper()
	h := newHarness(t, false, false)
	p := newProgramsUI()
	serveProgramsUI(t, h, p)
	return h, p
}

// column is the first cells of a table's rows (after the heading lines).
func firstCells(out string) []string {
	var cells []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "PROGRAM ") {
			in = true
			continue
		}
		if !in || l == "" || strings.HasPrefix(l, "`") {
			continue
		}
		cells = append(cells, strings.SplitN(l, "  ", 2)[0])
	}
	return cells
}

func TestProgramsTable(t *testing.T) {
	h, p := programsHarness(t)
	r := h.run(t, "", "programs")
	if r.code != ExitOK {
		t.Fatalf("programs: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "programs.golden", r.stdout)
	if p.lastList().GetSince() != nil {
		t.Errorf("programs asked since %v, want the service's default (today)", p.lastList().GetSince().AsTime())
	}

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"programs", "--sort", "last"}, []string{"Firefox ESR", "[nc]", "curl"}},
		{[]string{"programs", "--sort", "name"}, []string{"curl", "Firefox ESR", "[nc]"}},
		{[]string{"programs", "--sort", "bytes"}, []string{"curl", "Firefox ESR", "[nc]"}},
		{[]string{"programs", "--sort", "allowed"}, []string{"Firefox ESR", "curl", "[nc]"}},
		{[]string{"programs", "--sort", "denied"}, []string{"Firefox ESR", "[nc]", "curl"}},
		// The filter word matches the name, the path or the comm, in any case.
		{[]string{"programs", "FIRE"}, []string{"Firefox ESR"}},
		{[]string{"programs", "--sort=name", "bin"}, []string{"curl"}},
		{[]string{"programs", "nc"}, []string{"[nc]"}},
		// Since yesterday the second curl counts too.
		{[]string{"programs", "curl", "--since", "2d", "--sort", "denied"}, []string{"curl", "curl"}},
	} {
		r := h.run(t, "", tc.args...)
		if got := firstCells(r.stdout); r.code != ExitOK || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%v: exit %d, rows %q, want %q\n%s%s", tc.args, r.code, got, tc.want, r.stdout, r.stderr)
		}
	}
	r = h.run(t, "", "programs", "--since", "2d", "--sort", "denied", "curl")
	if !strings.Contains(r.stdout, "/opt/tools/curl") || !strings.HasPrefix(r.stdout, "2 of 4 programs since 2026-02-27 12:00, most denied connections first:") {
		t.Errorf("programs curl --since 2d:\n%s", r.stdout)
	}
	if got := p.lastList().GetSince().AsTime(); !got.Equal(testNow.Add(-48 * time.Hour)) {
		t.Errorf("--since 2d asked since %v", got)
	}
	r = h.run(t, "", "programs", "zzz")
	if r.code != ExitOK || r.stdout != "No program matches \"zzz\" (3 made connections today (since 00:00)).\n" {
		t.Errorf("programs zzz: exit %d, %q", r.code, r.stdout)
	}
	r = h.run(t, "", "programs", "--since", "10:00")
	if r.code != ExitOK || !strings.HasPrefix(r.stdout, "Programs since 10:00 today, latest activity first:") {
		t.Errorf("programs --since 10:00: exit %d, %q", r.code, r.stdout)
	}
	for _, args := range [][]string{{"programs", "--sort", "size"}, {"programs", "--since", "tomorrow"}, {"programs", "--since", "-2h"},
		{"programs", "--since", "13:00"}} {
		if r := h.run(t, "", args...); r.code != ExitUsage || !strings.Contains(r.stderr, "bastionctl: usage: ") {
			t.Errorf("%v: exit %d, want %d: %s", args, r.code, ExitUsage, r.stderr)
		}
	}
	p.programs = nil
	if r := h.run(t, "", "programs"); r.stdout != "No program has made connections today (since 00:00).\n" {
		t.Errorf("no programs: %q", r.stdout)
	}
}

// TestProgramsJSON: --json is the API's ListProgramsResponse, filtered
// and sorted as asked, exact, and read back by protojson.
func TestProgramsJSON(t *testing.T) {
	h, _ := programsHarness(t)
	r := h.run(t, "", "programs", "--json", "--sort", "bytes")
	if r.code != ExitOK || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("programs --json: exit %d: %q %s", r.code, r.stdout, r.stderr)
	}
	var got uiv1.ListProgramsResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("programs --json printed %q: %v", r.stdout, err)
	}
	all := testPrograms()
	want := &uiv1.ListProgramsResponse{Programs: []*uiv1.ProgramSummary{all[1], all[0], all[3]},
		Since: timestamppb.New(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))}
	if d := protoDiff(want, &got); d != "" {
		t.Error(d)
	}
	for _, key := range []string{`"bytes_received":"2100000000"`, `"last_activity":"2026-03-01T11:58:00Z"`} {
		if !strings.Contains(r.stdout, key) {
			t.Errorf("programs --json does not say %s (field names are the proto's): %s", key, r.stdout)
		}
	}
}

func TestProgramDetail(t *testing.T) {
	h, p := programsHarness(t)
	// The desktop entry's name, in any case, names Firefox.
	r := h.run(t, "", "program", "firefox esr")
	if r.code != ExitOK {
		t.Fatalf("program: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "program_day.golden", r.stdout)
	if got := p.lastGet(); got.GetProgram() != "/usr/lib/firefox-esr/firefox-esr" || got.GetRange() != uiv1.ChartRange_CHART_RANGE_DAY || got.GetSince() != nil {
		t.Errorf("program asked %v", got)
	}
	for _, tc := range []struct {
		rng    string
		golden string
	}{{"hour", "program_hour.golden"}, {"week", "program_week.golden"}} {
		r := h.run(t, "", "program", "/usr/bin/curl", "--range", tc.rng)
		if r.code != ExitOK {
			t.Fatalf("program --range %s: exit %d: %s", tc.rng, r.code, r.stderr)
		}
		golden(t, tc.golden, r.stdout)
	}
	// By comm alone; and --since sets the summary's period.
	r = h.run(t, "", "program", "nc", "--since", "1h")
	if r.code != ExitOK || !strings.Contains(r.stdout, "Since 11:00 today: 0 allowed, 2 denied") {
		t.Errorf("program nc --since 1h: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if got := p.lastGet(); got.GetProgram() != "nc" || !got.GetSince().AsTime().Equal(testNow.Add(-time.Hour)) {
		t.Errorf("program nc asked %v", got)
	}
	// A narrow terminal merges buckets into wider columns and says so.
	h.width = 60
	r = h.run(t, "", "program", "firefox-esr", "--range", "week")
	if !strings.Contains(r.stdout, "one column = 4 hours:") {
		t.Errorf("a 60-column week chart:\n%s", r.stdout)
	}
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.ContainsAny(l, "┤│└▁▂▃▄▅▆▇█") && len([]rune(l)) > 60 {
			t.Errorf("a chart line wider than the terminal: %q", l)
		}
	}
}

// TestProgramJSON: --json is GetProgramResponse, exact.
func TestProgramJSON(t *testing.T) {
	h, _ := programsHarness(t)
	r := h.run(t, "", "--json", "program", "/usr/lib/firefox-esr/firefox-esr", "--range", "hour")
	var got uiv1.GetProgramResponse
	if r.code != ExitOK || protojson.Unmarshal([]byte(r.stdout), &got) != nil {
		t.Fatalf("program --json: exit %d: %q %s", r.code, r.stdout, r.stderr)
	}
	p := newProgramsUI()
	chart, d := testChart(uiv1.ChartRange_CHART_RANGE_HOUR, testNow)
	if len(got.GetChart()) != len(chart) || got.GetBucket().AsDuration() != d || len(got.GetDestinations()) != 4 ||
		len(got.GetRules()) != 2 || protoDiff(p.programs[0], got.GetProgram()) != "" {
		t.Errorf("program --json round trip: %v", &got)
	}
}

// TestProgramNames: names that are no program's, or several programs',
// get plain errors that list what they could mean.
func TestProgramNames(t *testing.T) {
	h, p := programsHarness(t)
	for _, tc := range []struct {
		name   string
		code   int
		says   []string
		sentTo string // what GetProgram was asked, "" for nothing
	}{
		{"curl", ExitError, []string{`"curl" names 2 programs; give the path of the one you mean:`, "  curl  /usr/bin/curl", "  curl  /opt/tools/curl"}, ""},
		{"fire", ExitNotFound, []string{`no program "fire" has made connections`, "did you mean one of these?", "  Firefox ESR  /usr/lib/firefox-esr/firefox-esr"}, "fire"},
		{"/usr/local/bin/curl", ExitNotFound, []string{"did you mean", "/usr/bin/curl", "/opt/tools/curl"}, "/usr/local/bin/curl"},
		{"zzz", ExitNotFound, []string{`no program "zzz" has made connections in the history your rules service keeps; ` +
			"`bastionctl programs --since 30d` lists those that have"}, "zzz"},
		{"evil\x1b[2J", ExitNotFound, []string{`no program "evil\x1b[2J"`}, "evil\x1b[2J"},
	} {
		p.getReqs = nil
		r := h.run(t, "", "program", tc.name)
		if r.code != tc.code {
			t.Errorf("program %q: exit %d, want %d: %s", tc.name, r.code, tc.code, r.stderr)
		}
		for _, s := range tc.says {
			if !strings.Contains(r.stderr, s) {
				t.Errorf("program %q says\n%s\nnot %q", tc.name, r.stderr, s)
			}
		}
		if got := p.lastGet(); (got == nil) != (tc.sentTo == "") || (got != nil && got.GetProgram() != tc.sentTo) {
			t.Errorf("program %q asked GetProgram %v, want %q", tc.name, got, tc.sentTo)
		}
	}
	// The lookup covers the whole kept history, not only today.
	if got := p.lastList().GetSince().AsTime(); !got.Equal(testNow.Add(-allHistory)) {
		t.Errorf("names were looked up since %v", got)
	}
	for _, args := range [][]string{{"program"}, {"program", "a", "b"}, {"program", "curl", "--range", "year"}} {
		if r := h.run(t, "", args...); r.code != ExitUsage {
			t.Errorf("%v: exit %d, want %d", args, r.code, ExitUsage)
		}
	}
}

// TestProgramsOlderService: a rules service without the programs view
// gets an error that says what to do.
func TestProgramsOlderService(t *testing.T) {
	h, p := programsHarness(t)
	p.unimplemented = true
	for _, args := range [][]string{{"programs"}, {"program", "/usr/bin/curl"}, {"connections"}} {
		r := h.run(t, "", args...)
		if r.code != ExitError || !strings.Contains(r.stderr, "your rules service does not keep a programs view (it is older than this bastionctl); update Bastion") {
			t.Errorf("%v against an older service: exit %d: %s", args, r.code, r.stderr)
		}
	}
	down := newHarness(t, false, false)
	if r := down.run(t, "", "programs"); r.code != ExitNoAgent || !strings.Contains(r.stderr, "your rules service is not running") {
		t.Errorf("programs with no service: exit %d: %s", r.code, r.stderr)
	}
}

func connectionEntries() []*uiv1.HistoryEntry {
	e1 := historyEntry(-60, rulesv1.Action_ACTION_ALLOW, "rule:00000000000000aa", "00000000000000aa")
	e2 := historyEntry(-120, rulesv1.Action_ACTION_REJECT, "prompt", "")
	e2.Process.Args = []string{"=HYPERLINK(\"http://evil\")", "x"}
	e2.Host = ""
	return []*uiv1.HistoryEntry{e1, e2}
}

func TestConnections(t *testing.T) {
	h, p := programsHarness(t)
	p.entries = connectionEntries()
	r := h.run(t, "", "connections", "--program", "Firefox ESR", "--host", "example", "--action", "reject",
		"--since", "yesterday", "--until", "11:00", "--rule", "00000000000000bb", "--limit", "5", "tracker", "x")
	if r.code != ExitOK {
		t.Fatalf("connections: exit %d: %s", r.code, r.stderr)
	}
	want := &uiv1.QueryConnectionsRequest{Limit: 5, Filter: &uiv1.ConnectionFilter{
		Program: "/usr/lib/firefox-esr/firefox-esr", Host: "example", Action: rulesv1.Action_ACTION_REJECT,
		Since: timestamppb.New(time.Date(2026, 2, 28, 0, 0, 0, 0, time.UTC)), Until: timestamppb.New(time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)),
		RuleId: "00000000000000bb", Text: "tracker x"}}
	if d := protoDiff(want, p.lastQuery()); d != "" {
		t.Errorf("connections sent the wrong filter:\n%s", d)
	}
	golden(t, "connections.golden", r.stdout)

	r = h.run(t, "", "connections")
	if d := protoDiff(&uiv1.QueryConnectionsRequest{Limit: 1000, Filter: &uiv1.ConnectionFilter{}}, p.lastQuery()); d != "" || r.code != ExitOK {
		t.Errorf("connections with no filter: exit %d\n%s", r.code, d)
	}
	r = h.run(t, "", "connections", "--action", "deny")
	if got := p.lastQuery().GetFilter().GetAction(); got != rulesv1.Action_ACTION_DENY {
		t.Errorf("--action deny sent %v", got)
	}

	// CSV: a header, then one record a connection, exact but for the
	// formula guard.
	r = h.run(t, "", "connections", "--csv")
	if r.code != ExitOK {
		t.Fatalf("connections --csv: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "connections.csv.golden", r.stdout)
	recs, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	if err != nil || len(recs) != 3 || strings.Join(recs[0], ",") != strings.Join(csvHeader, ",") {
		t.Fatalf("connections --csv is not a header and two records: %v %q", err, recs)
	}
	if recs[2][6] != `'=HYPERLINK("http://evil") x` || recs[1][0] != "2026-03-01T11:59:00Z" || recs[1][13] != "rule:00000000000000aa" {
		t.Errorf("connections --csv records: %q", recs[1:])
	}

	// JSON: QueryConnectionsResponse, read back exactly.
	r = h.run(t, "", "connections", "--json")
	var got uiv1.QueryConnectionsResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != ExitOK {
		t.Fatalf("connections --json: exit %d, %v: %s", r.code, err, r.stdout)
	}
	if d := protoDiff(&uiv1.QueryConnectionsResponse{Entries: connectionEntries()}, &got); d != "" {
		t.Error(d)
	}

	// More matched than asked: the rows are the newest, and stderr says so.
	r = h.run(t, "", "connections", "--limit", "1", "--csv")
	if r.code != ExitOK || strings.Count(r.stdout, "\n") != 2 || !strings.Contains(r.stderr, "these are the newest 1; more match") {
		t.Errorf("connections --limit 1: exit %d: %q %q", r.code, r.stdout, r.stderr)
	}
	p.entries = nil
	if r = h.run(t, "", "connections"); r.stdout != "No connections match.\n" {
		t.Errorf("no connections: %q", r.stdout)
	}
	if r = h.run(t, "", "connections", "--csv"); r.stdout != strings.Join(csvHeader, ",")+"\n" {
		t.Errorf("no connections as CSV: %q", r.stdout)
	}
	for _, args := range [][]string{{"connections", "--csv", "--json"}, {"connections", "--limit", "0"}, {"connections", "--limit", "100001"},
		{"connections", "--action", "maybe"}, {"connections", "--since", "1h", "--until", "2h"}, {"connections", "--until", "soon"}} {
		if r := h.run(t, "", args...); r.code != ExitUsage {
			t.Errorf("%v: exit %d, want %d: %s", args, r.code, ExitUsage, r.stderr)
		}
	}
	// A --program nobody has gets the suggestions `program` gives.
	r = h.run(t, "", "connections", "--program", "firefox")
	if r.code != ExitNotFound || !strings.Contains(r.stderr, "did you mean one of these?\n  Firefox ESR  /usr/lib/firefox-esr/firefox-esr") {
		t.Errorf("connections --program firefox: exit %d: %s", r.code, r.stderr)
	}
	// An ambiguous --program is refused before the query.
	p.queryReqs = nil
	if r = h.run(t, "", "connections", "--program", "curl", "--since", "2d"); r.code != ExitError || p.lastQuery() != nil {
		t.Errorf("connections --program curl: exit %d, query %v", r.code, p.lastQuery())
	}
}

// TestProgramsShowHostileStringsInert: a program's exe, comm and
// destinations come from other programs and the network.
func TestProgramsShowHostileStringsInert(t *testing.T) {
	h, p := programsHarness(t)
	p.programs = []*uiv1.ProgramSummary{{Exe: hostExe, Comm: hostComm, Allowed: 1, LastActivity: before(time.Minute)},
		{Comm: hostComm, Denied: 1, LastActivity: before(time.Minute)}}
	p.dests = map[string][]*uiv1.Destination{hostExe: {{Host: "h\u202e.test" + osc52, Address: "192.0.2.7", Protocol: agentv1.Protocol_PROTOCOL_TCP,
		Port: 443, DecidedBy: "rule:\x1b[1m", RuleId: "\x1b[1m", LastAction: rulesv1.Action_ACTION_ALLOW}}}
	p.entries = []*uiv1.HistoryEntry{{Time: timestamppb.New(testNow), Process: hostileProcess(), Flow: hostileFlow(),
		Host: "h\u202e.test", Action: rulesv1.Action_ACTION_DENY, DecidedBy: "rule:\x1b[1m", RuleId: "\x1b[1m"}}
	// A desktop entry's name is shown inert too (anyone may install one in
	// ~/.local/share/applications, e.g. a downloaded program).
	h.apps = desktopentry.New()
	h.apps.AddDir(fstest.MapFS{"evil.desktop": {Data: []byte("[Desktop Entry]\nName=Evil" + osc52 + "\u202e\nExec=" + hostExe + "\n")}})
	for _, args := range [][]string{{"programs"}, {"program", hostExe}, {"connections"}, {"connections", "--csv"}} {
		r := h.run(t, "", args...)
		if r.code != ExitOK {
			t.Errorf("%v: exit %d: %s", args, r.code, r.stderr)
			continue
		}
		checkInert(t, strings.Join(args, " "), r.stdout, 0)
		if args[0] != "connections" && !strings.Contains(r.stdout, `Evil\x1b]52;c;ZXZpbA==\x07\u202e`) {
			t.Errorf("%v does not name the program by its desktop entry, inert:\n%s", args, r.stdout)
		}
	}
}

// TestProgramsInHelpManAndCompletion: the new commands and their options
// are in the help, the manual page and the completion scripts.
func TestProgramsInHelpManAndCompletion(t *testing.T) {
	h := newHarness(t, false, false)
	r := h.run(t, "", "help")
	for _, s := range []string{"  programs [WORD...]", "  program NAME|PATH", "  connections [TEXT...]"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("help does not list %q:\n%s", s, r.stdout)
		}
	}
	r = h.run(t, "", "connections", "--help")
	if r.code != ExitOK || !strings.Contains(r.stdout, "-program NAME") || !strings.Contains(r.stdout, "-csv") {
		t.Errorf("connections --help: exit %d:\n%s", r.code, r.stdout)
	}
	r = h.run(t, "", "man")
	for _, s := range []string{`\fBprograms [WORD...]`, `\-\-sort\fR \fIORDER`, `\-\-range\fR \fIPERIOD`, `\-\-csv`, `\-\-until\fR \fIWHEN`,
		"GetProgramResponse"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("the manual page does not say %q", s)
		}
	}
	r = h.run(t, "", "completion", "bash")
	script := filepath.Join(t.TempDir(), "c.bash")
	if err := os.WriteFile(script, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	for line, want := range map[string]string{
		"COMP_WORDS=(bastionctl progr); COMP_CWORD=1":                "programs program",
		"COMP_WORDS=(bastionctl programs --so); COMP_CWORD=2":        "--sort",
		"COMP_WORDS=(bastionctl program firefox --ra); COMP_CWORD=3": "--range",
		"COMP_WORDS=(bastionctl connections --c); COMP_CWORD=2":      "--csv",
		"COMP_WORDS=(bastionctl connections x --unt); COMP_CWORD=3":  "--until",
	} {
		out, err := exec.Command("bash", "-c", `source "$1"; `+line+`; _bastionctl; echo "${COMPREPLY[@]}"`, "-", script).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("bash completion of %s: %q %v, want %q", line, out, err, want)
		}
	}
}
