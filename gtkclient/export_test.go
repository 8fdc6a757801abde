package gtkclient

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/inert"
)

// TestEncodeConnections: both formats read back to what was written; a
// hostile host name stays inert (no terminal escape, no formula) in CSV
// and exact but escaped in JSON.
func TestEncodeConnections(t *testing.T) {
	recs := []connRecord{
		{Time: "2026-03-14T15:09:26Z", Program: "/usr/bin/curl", PID: 48213, UID: 1000, User: "alice", Host: "example.com",
			Address: "93.184.215.14", Port: 443, Protocol: "TCP", Action: "allow", DecidedBy: "you, in the prompt"},
		{Time: "2026-03-14T15:08:00Z", Program: "/tmp/evil\x1b]0;owned\a", PID: 1, UID: 1000, User: "alice",
			Host: "=HYPERLINK(\"http://x\")", Address: "10.0.0.1", Port: 53, Protocol: "UDP", Action: "deny",
			DecidedBy: "rule “Deny, \"quoted\"\nnew line”", RuleID: "0000000000000004", Rule: "Deny any program → 10.0.0.0/8"},
	}
	data, err := encodeConnections(recs, exportJSON)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsRune(data, 0x1b) || bytes.ContainsRune(data, '\a') {
		t.Errorf("raw escape in the JSON: %q", data)
	}
	var got []connRecord
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("%v in %s", err, data)
	}
	if !slices.Equal(got, recs) {
		t.Errorf("JSON read back\n%+v\nwant\n%+v", got, recs)
	}
	if n := bytes.Count(data, []byte("\n")); n != len(recs)+2 {
		t.Errorf("%d lines in the JSON, want the brackets' and one a record:\n%s", n, data)
	}
	if data, err := encodeConnections(nil, exportJSON); err != nil || strings.TrimSpace(string(data)) != "[\n]" {
		t.Errorf("no rows: %q, %v", data, err)
	}

	data, err = encodeConnections(recs, exportCSV)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsRune(data, 0x1b) || bytes.ContainsRune(data, '\a') {
		t.Errorf("raw control characters in the CSV: %q", data)
	}
	rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || !slices.Equal(rows[0], csvHeader) {
		t.Fatalf("CSV rows %q", rows)
	}
	want := []string{"2026-03-14T15:09:26Z", "/usr/bin/curl", "48213", "1000", "alice", "example.com", "93.184.215.14", "443",
		"TCP", "allow", "you, in the prompt", "", ""}
	if !slices.Equal(rows[1], want) {
		t.Errorf("row 1 %q, want %q", rows[1], want)
	}
	if h := rows[2][5]; h != `'=HYPERLINK("http://x")` {
		t.Errorf("the formula host reads %q", h)
	}
	if p := rows[2][1]; p != inert.String("/tmp/evil\x1b]0;owned\a") {
		t.Errorf("the hostile program reads %q", p)
	}
	if by := rows[2][10]; by != inert.String("rule “Deny, \"quoted\"\nnew line”") {
		t.Errorf("decided by reads %q", by)
	}
}

func TestCSVCell(t *testing.T) {
	for in, want := range map[string]string{
		"":            "",
		"example.com": "example.com",
		"=1+1":        "'=1+1",
		"+1":          "'+1",
		"-1":          "'-1",
		"@SUM(A1)":    "'@SUM(A1)",
		"a=b":         "a=b",
	} {
		if got := csvCell(in); got != want {
			t.Errorf("csvCell(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExportFormatFor(t *testing.T) {
	for path, want := range map[string]struct {
		f  exportFormat
		ok bool
	}{
		"/tmp/a.csv": {exportCSV, true}, "/tmp/a.JSON": {exportJSON, true}, "/tmp/a": {exportCSV, false},
		"/tmp/a.txt": {exportCSV, false}, "/tmp/json": {exportCSV, false},
	} {
		if f, ok := exportFormatFor(path); f != want.f || ok != want.ok {
			t.Errorf("%s: %v %v, want %v %v", path, f, ok, want.f, want.ok)
		}
	}
}

func TestParseWhen(t *testing.T) {
	loc := time.FixedZone("CET", 3600)
	now := time.Date(2026, 3, 14, 15, 9, 26, 0, loc)
	for in, want := range map[string]time.Time{
		"":                    {},
		"2026-03-12":          time.Date(2026, 3, 12, 0, 0, 0, 0, loc),
		" 2026-03-12 08:30 ":  time.Date(2026, 3, 12, 8, 30, 0, 0, loc),
		"2026-03-12 08:30:15": time.Date(2026, 3, 12, 8, 30, 15, 0, loc),
		"09:05":               time.Date(2026, 3, 14, 9, 5, 0, 0, loc),
	} {
		got, err := parseWhen(in, now, loc)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"yesterday", "2026-13-01", "25:00", "14/03/2026"} {
		if _, err := parseWhen(in, now, loc); err == nil || !strings.Contains(err.Error(), "2026-03-14 15:09") {
			t.Errorf("parseWhen(%q): %v, want an error showing the format", in, err)
		}
	}
}
