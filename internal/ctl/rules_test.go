package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// addSample adds the rules the rules tests share.
func addSample(t *testing.T, h *harness) {
	t.Helper()
	for _, args := range [][]string{
		{"--action", "allow", "--exe", "/usr/bin/curl", "--host", "example.com", "--port", "443", "--proto", "tcp", "--note", "curl to example"},
		{"--action", "deny", "--exe", "/usr/lib/firefox/*", "--dst", "10.0.0.0/8", "--for", "15m"},
		{"--action", "reject", "--exe", "/usr/bin/python3", "--cmdline", `python3 -m http\.server .*`, "--port", "1000-2000", "--session"},
		{"--action", "allow", "--host", "*.debian.org", "--proto", "udp", "--port", "53", "--disabled"},
		{"--action", "allow", "--sha256", strings.Repeat("ab", 32), "--dst", "2001:db8::1"},
	} {
		r := h.run(t, "", append([]string{"rules", "add"}, args...)...)
		if r.code != ExitOK {
			t.Fatalf("rules add %v: exit %d: %s", args, r.code, r.stderr)
		}
	}
}

func TestRulesAddListEnableDisable(t *testing.T) {
	h := newHarness(t, true, false)
	r := h.run(t, "", "rules", "list")
	if r.code != ExitOK || r.stdout != "You have no rules.\n" {
		t.Fatalf("empty list: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	r = h.run(t, "", "rules", "add", "--action", "allow", "--exe", "/usr/bin/curl", "--host", "example.com",
		"--port", "443", "--proto", "tcp", "--note", "curl to example")
	if r.code != ExitOK {
		t.Fatalf("add: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "rules_add.golden", r.stdout)
	got := h.ui.Rules()[0]
	want := &rulesv1.Rule{Id: got.GetId(), Created: got.GetCreated(), Enabled: true, Action: rulesv1.Action_ACTION_ALLOW,
		Exe: "/usr/bin/curl", Host: "example.com", DstPortMin: 443, DstPortMax: 443, Protocol: rulesv1.Protocol_PROTOCOL_TCP,
		Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER, Note: "curl to example"}
	if d := protoDiff(want, got); d != "" {
		t.Errorf("stored rule:\n%s", d)
	}
	h.ui.SetRules()

	addSample(t, h)
	r = h.run(t, "", "rules", "list")
	if r.code != ExitOK {
		t.Fatalf("list: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "rules_list.golden", r.stdout)

	id := h.ui.Rules()[0].GetId()
	if r = h.run(t, "", "rules", "disable", id); r.code != ExitOK || !strings.Contains(r.stdout, "(disabled)") {
		t.Fatalf("disable: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if h.ui.Rules()[0].GetEnabled() {
		t.Error("rule still enabled after disable")
	}
	if r = h.run(t, "", "rules", "enable", id); r.code != ExitOK || !strings.Contains(r.stdout, "(enabled)") {
		t.Fatalf("enable: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if !h.ui.Rules()[0].GetEnabled() {
		t.Error("rule still disabled after enable")
	}

	// --json: one rule per line, each a valid Rule.
	r = h.run(t, "", "--json", "rules", "list")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != ExitOK || len(lines) != 5 {
		t.Fatalf("list --json: exit %d, %d lines: %s", r.code, len(lines), r.stdout)
	}
	for i, l := range lines {
		var got rulesv1.Rule
		if err := protojson.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if d := protoDiff(h.ui.Rules()[i], &got); d != "" {
			t.Errorf("line %d:\n%s", i, d)
		}
	}
}

func TestRulesExportRemoveImport(t *testing.T) {
	for _, format := range []string{"json", "toml"} {
		t.Run(format, func(t *testing.T) {
			h := newHarness(t, true, false)
			addSample(t, h)
			before := h.run(t, "", "rules", "list").stdout

			file := filepath.Join(t.TempDir(), "rules."+format)
			if r := h.run(t, "", "rules", "export", "--format", format, "-o", file); r.code != ExitOK {
				t.Fatalf("export: exit %d: %s", r.code, r.stderr)
			}
			fi, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("exported file mode %v, want 0600", fi.Mode().Perm())
			}
			stdout := h.run(t, "", "rules", "export", "--format", format)
			data, _ := os.ReadFile(file)
			if stdout.stdout != string(data) {
				t.Errorf("export to stdout differs from -o")
			}

			var ids []string
			for _, r := range h.ui.Rules() {
				ids = append(ids, r.GetId())
			}
			r := h.run(t, "", append([]string{"rules", "rm"}, ids...)...)
			if r.code != ExitOK || strings.Count(r.stdout, "removed") != len(ids) {
				t.Fatalf("rm: exit %d, %q %q", r.code, r.stdout, r.stderr)
			}
			if len(h.ui.Rules()) != 0 {
				t.Fatalf("%d rules left after rm", len(h.ui.Rules()))
			}

			// The format follows the file name without --format.
			r = h.run(t, "", "rules", "import", file)
			if r.code != ExitOK || r.stderr != "" {
				t.Fatalf("import: exit %d, %q %q", r.code, r.stdout, r.stderr)
			}
			if want := "DIR/rules." + format + ": 5 rule(s) added, 0 changed, 0 left alone (already there)\n"; !strings.HasSuffix(r.stdout, want[3:]) {
				t.Errorf("import said %q, want %q", r.stdout, want)
			}
			// The fake hands out new ids; everything else must survive.
			after := h.run(t, "", "rules", "list").stdout
			if strip := stripIDs(before); strip != stripIDs(after) {
				t.Errorf("rules changed through export and import:\nbefore\n%s\nafter\n%s", before, after)
			}
		})
	}
}

// stripIDs drops the first column (the id) of a rules table.
func stripIDs(table string) string {
	var b strings.Builder
	for _, l := range strings.Split(table, "\n") {
		if _, rest, ok := strings.Cut(l, " "); ok {
			l = strings.TrimLeft(rest, " ")
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

func TestRulesImportOpenSnitch(t *testing.T) {
	dir := filepath.Join("testdata", "opensnitch")
	good, mixed, broken := filepath.Join(dir, "good.json"), filepath.Join(dir, "mixed.json"), filepath.Join(dir, "broken.json")
	tests := []struct {
		name   string
		files  []string
		code   int
		golden string
	}{
		{"one rule", []string{good}, ExitOK, "import_opensnitch_good.golden"},
		{"skipped rules warn", []string{good, mixed}, ExitOK, "import_opensnitch_mixed.golden"},
		{"a broken file fails", []string{good, broken, mixed}, ExitError, "import_opensnitch_broken.golden"},
		{"a file with no usable rule fails", []string{good, filepath.Join(dir, "unsupported.json")}, ExitError, "import_opensnitch_unsupported.golden"},
		{"a missing file fails", []string{filepath.Join(dir, "missing.json")}, ExitError, "import_opensnitch_missing.golden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, true, false)
			r := h.run(t, "", append([]string{"rules", "import", "--format", "opensnitch"}, tc.files...)...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", r.code, tc.code, r.stderr)
			}
			golden(t, tc.golden, "stdout:\n"+r.stdout+"stderr:\n"+r.stderr)
		})
	}
}

func TestExitCodes(t *testing.T) {
	h := newHarness(t, true, false)
	down := newHarness(t, false, false)
	tests := []struct {
		name string
		h    *harness
		args []string
		code int
		msg  string
	}{
		{"no command", h, nil, ExitUsage, "usage:"},
		{"unknown command", h, []string{"frobnicate"}, ExitUsage, "unknown command"},
		{"rules without subcommand", h, []string{"rules"}, ExitUsage, "usage"},
		{"add without action", h, []string{"rules", "add", "--exe", "/bin/true"}, ExitUsage, "--action"},
		{"add bad port", h, []string{"rules", "add", "--action", "allow", "--port", "70000"}, ExitUsage, "--port"},
		{"add reversed range", h, []string{"rules", "add", "--action", "allow", "--port", "20-10"}, ExitUsage, "--port"},
		{"add bad dst", h, []string{"rules", "add", "--action", "allow", "--dst", "10.0.0.300"}, ExitUsage, "--dst"},
		{"add bad proto", h, []string{"rules", "add", "--action", "allow", "--proto", "sctp6"}, ExitUsage, "protocol"},
		{"add two lifetimes", h, []string{"rules", "add", "--action", "allow", "--for", "1h", "--session"}, ExitUsage, "one of"},
		{"export opensnitch", h, []string{"rules", "export", "--format", "opensnitch"}, ExitUsage, "import format only"},
		{"rm unknown", h, []string{"rules", "rm", "0123456789abcdef"}, ExitNotFound, `you have no rule with id "0123456789abcdef"; ` + "`bastionctl rules list`"},
		{"enable unknown", h, []string{"rules", "enable", "nope"}, ExitNotFound, `you have no rule with id "nope"`},
		{"rm not yours", h, []string{"rules", "rm", "forbidden"}, ExitDenied, "not your rule"},
		{"later unknown", h, []string{"later", "rule", "nope", "--action", "allow"}, ExitNotFound, `there is no decide-later entry "nope"`},
		{"service down", down, []string{"rules", "list"}, ExitNoAgent, "your rules service is not running (nothing answers at DIR/absent-ui.sock). Start it with `systemctl --user start bastion-uiserver`"},
		{"import with service down", down, []string{"rules", "import", filepath.Join("testdata", "opensnitch", "good.json")}, ExitNoAgent, "Start it with"},
		{"agent down", down, []string{"pending"}, ExitNoAgent, "the agent is not running (nothing answers at DIR/absent-agent.sock). Start it with `sudo systemctl start bastion-agent`"},
		{"add with no operands", h, []string{"rules", "add", "--action", "allow", "--forever"}, ExitUsage, "would cover every program and every destination"},
		{"add bad dst words", h, []string{"rules", "add", "--action", "allow", "--dst", "300.1.1.1"}, ExitUsage, `--dst: "300.1.1.1" is not an IP address`},
		{"unknown option", h, []string{"rules", "list", "--jsno"}, ExitUsage, "unknown option -jsno"},
		{"help of an unknown command", h, []string{"help", "frob"}, ExitUsage, `no command "frob"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.h.run(t, "", tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", r.code, tc.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.msg) {
				t.Errorf("stderr %q does not say %q", r.stderr, tc.msg)
			}
		})
	}
}

func TestDefaultUISocket(t *testing.T) {
	tests := []struct {
		xdg  string
		uid  int
		want string
	}{
		{"/run/user/1000", 1000, "/run/user/1000/bastion/ui.sock"},
		{"/tmp/xdg", 1000, "/tmp/xdg/bastion/ui.sock"},
		{"", 1234, "/run/user/1234/bastion/ui.sock"},
	}
	for _, tc := range tests {
		getenv := func(k string) string {
			if k == "XDG_RUNTIME_DIR" {
				return tc.xdg
			}
			return ""
		}
		if got := DefaultUISocket(getenv, tc.uid); got != tc.want {
			t.Errorf("DefaultUISocket(%q, %d) = %q, want %q", tc.xdg, tc.uid, got, tc.want)
		}
	}
}
