package rules

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bastion-fw/bastion/internal/flow"
)

func TestImportOpenSnitchGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/opensnitch/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no OpenSnitch fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			rs, problems, err := ImportOpenSnitch(data)
			if err != nil {
				t.Fatalf("ImportOpenSnitch: %v", err)
			}
			out, err := Export(rs, FormatTOML)
			if err != nil {
				t.Fatalf("imported rules do not export: %v", err)
			}
			var b bytes.Buffer
			b.WriteString("# problems\n")
			for _, p := range problems {
				b.WriteString("# " + p + "\n")
			}
			b.Write(out)
			golden(t, "opensnitch/"+strings.TrimSuffix(filepath.Base(f), ".json")+".golden", b.Bytes())
		})
	}
}

func TestImportOpenSnitchSemantics(t *testing.T) {
	data, err := os.ReadFile("testdata/opensnitch/001-curl-list.json")
	if err != nil {
		t.Fatal(err)
	}
	rs, problems, err := ImportOpenSnitch(data)
	if err != nil || len(rs) != 1 || len(problems) != 0 {
		t.Fatalf("ImportOpenSnitch = %v, %v, %v", rs, problems, err)
	}
	r := rs[0]
	c := Conn{Exe: "/usr/bin/curl", Host: "api.github.com", Tuple: flow.Tuple{Proto: flow.TCP, Dst: pfx("140.82.121.6").Addr(), DstPort: 443}}
	if !Covers(r, c) {
		t.Errorf("rule %+v does not cover %+v", r, c)
	}
	// OpenSnitch's "tcp" is IPv4 only; the import must not widen to IPv6.
	c.Tuple.Dst = pfx("2606:50c0::1").Addr()
	if Covers(r, c) {
		t.Errorf("rule %+v covers an IPv6 connection; OpenSnitch's tcp is IPv4", r)
	}

	// Skipped rules name the rule and the field.
	data, err = os.ReadFile("testdata/opensnitch/004-unmappable.json")
	if err != nil {
		t.Fatal(err)
	}
	rs, problems, err = ImportOpenSnitch(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 0 {
		t.Errorf("imported %d rules from a file of unmappable ones: %+v", len(rs), rs)
	}
	for _, want := range []string{
		`rule "allow-user-1000": skipped: operator user.id`,
		`rule "deny-ads-blocklist": skipped: operator lists.domains: lists read from files`,
		`rule "allow-once-wget": skipped: duration "once"`,
		`rule "allow-python-scripts": skipped: operator process.path: regular expression`,
		`rule "allow-host-sensitive": skipped: operator dest.host: sensitive`,
		`rule "allow-pid": skipped: operator process.id`,
		`rule "allow-parent-bash": skipped: operator process.parent.path`,
		`rule "tcp-to-v6-address": skipped: protocol`,
	} {
		found := false
		for _, p := range problems {
			found = found || strings.HasPrefix(p, want)
		}
		if !found {
			t.Errorf("no problem starting %q in %q", want, problems)
		}
	}
}

func TestImportOpenSnitchMalformed(t *testing.T) {
	for _, in := range []string{``, `{`, `[{"name": 5}]`, `"rule"`, `{"operator": []}`} {
		if _, _, err := ImportOpenSnitch([]byte(in)); err == nil {
			t.Errorf("ImportOpenSnitch(%q): no error", in)
		}
	}
	// Deep nesting is refused, not recursed into.
	deep := `{"name":"deep","action":"allow","duration":"always","operator":` +
		strings.Repeat(`{"type":"list","operand":"list","list":[`, 10) + `{"type":"simple","operand":"true"}` + strings.Repeat(`]}`, 10) + `}`
	rs, problems, err := ImportOpenSnitch([]byte(deep))
	if err != nil || len(rs) != 0 || len(problems) != 1 || !strings.Contains(problems[0], "nested deeper") {
		t.Errorf("deep: %v %q %v", rs, problems, err)
	}
}

func FuzzImportOpenSnitch(f *testing.F) {
	files, _ := filepath.Glob("testdata/opensnitch/*.json")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"action":"allow","duration":"always","operator":{"type":"regexp","operand":"dest.host","data":"^(.*\\.)?a\\.b$"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, _, err := ImportOpenSnitch(data)
		if err != nil {
			return
		}
		for _, r := range rs {
			if err := r.Validate(); err != nil {
				t.Fatalf("imported rule does not validate: %v: %+v", err, r)
			}
		}
		if _, err := Export(rs, FormatJSON); err != nil {
			t.Fatalf("imported rules do not export: %v", err)
		}
	})
}
