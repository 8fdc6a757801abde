package rules

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestExportGolden(t *testing.T) {
	for _, f := range []Format{FormatJSON, FormatTOML} {
		b, err := Export(sampleRules(), f)
		if err != nil {
			t.Fatalf("Export %s: %v", f, err)
		}
		golden(t, "export."+f.String(), b)
		got, err := Import(b, f)
		if err != nil {
			t.Fatalf("Import(Export) %s: %v", f, err)
		}
		if !reflect.DeepEqual(got, sampleRules()) {
			t.Errorf("%s round trip:\n got %+v\nwant %+v", f, got, sampleRules())
		}
	}
}

// TestExportImportRoundTrip is property-style: random valid rules survive
// Export then Import exactly, in both formats.
func TestExportImportRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 50 {
		rs := randomRules(rng, rng.IntN(20))
		for i := range rs {
			rs[i].ID = fmt.Sprintf("id-%d-%d", round, i)
			rs[i].Hits = rng.Uint64() >> 1
			rs[i].Note = strings.Repeat("n\"\\\t", rng.IntN(3))
			if rng.IntN(2) == 0 {
				rs[i].LastHit = time.Unix(rng.Int64N(1<<33), rng.Int64N(1e9)).UTC()
			}
			if rs[i].Lifetime == Forever && rng.IntN(3) == 0 {
				rs[i].Lifetime = Session
			}
		}
		for _, f := range []Format{FormatJSON, FormatTOML} {
			b, err := Export(rs, f)
			if err != nil {
				t.Fatalf("Export %s: %v", f, err)
			}
			got, err := Import(b, f)
			if err != nil {
				t.Fatalf("Import %s: %v\n%s", f, err, b)
			}
			if len(rs) == 0 && len(got) == 0 {
				continue
			}
			if !reflect.DeepEqual(got, rs) {
				t.Fatalf("%s round trip differs:\n got %+v\nwant %+v", f, got, rs)
			}
		}
	}
}

func TestImportErrors(t *testing.T) {
	tests := []struct {
		name    string
		f       Format
		in      string
		wantErr string
	}{
		{"json syntax", FormatJSON, "{\n  \"version\": 1,\n  \"rules\": [}\n", "import json: line 3, column 13: invalid character '}'"},
		{"json unknown field", FormatJSON, `{"version":1,"rules":[{"action":"allow","bogus":1}]}`, `unknown field "bogus"`},
		{"json wrong type", FormatJSON, `{"version":1,"rules":[{"action":5}]}`, `line 1, column 34: field "rules.action"`},
		{"json trailing", FormatJSON, `{"version":1,"rules":[]} {}`, "data after the top-level object"},
		{"json version", FormatJSON, `{"rules":[]}`, "version 0, want 1"},
		{"json no action", FormatJSON, `{"version":1,"rules":[{"exe":"/bin/x"}]}`, `rule 1 (id ""): action: missing`},
		{"json bad action", FormatJSON, `{"version":1,"rules":[{"action":"maybe"}]}`, `action: unknown action "maybe"`},
		{"json bad ports", FormatJSON, `{"version":1,"rules":[{"action":"allow","ports":"9-8"}]}`, `ports: "9-8": range runs backwards`},
		{"json port 0", FormatJSON, `{"version":1,"rules":[{"action":"allow","ports":"0"}]}`, `ports: port "0": want a number 1-65535`},
		{"json bad time", FormatJSON, `{"version":1,"rules":[{"action":"allow","created":"yesterday"}]}`, `created: parsing time "yesterday"`},
		{"json bad proto", FormatJSON, `{"version":1,"rules":[{"action":"allow","protocol":"sctp6"}]}`, `protocol: unknown protocol "sctp6"`},
		{"json proto 0", FormatJSON, `{"version":1,"rules":[{"action":"allow","protocol":"0"}]}`, `protocol: unknown protocol "0"`},
		{"json bad lifetime", FormatJSON, `{"version":1,"rules":[{"action":"allow","lifetime":"week"}]}`, `lifetime: unknown lifetime "week"`},
		{"json duplicate id", FormatJSON, `{"version":1,"rules":[{"id":"a","action":"allow"},{"id":"a","action":"deny"}]}`, `rule 2: id "a" is also rule 1's`},
		{"json invalid rule", FormatJSON, `{"version":1,"rules":[{"id":"x","action":"allow","host":"A.com"}]}`, `rule 1 (id "x"): host: "A.com": must be lower case`},
		{"toml syntax", FormatTOML, "version = 1\n[[rule]]\naction = \n", "import toml: toml: line 3"},
		{"toml unknown key", FormatTOML, "version = 1\n[[rule]]\naction = \"allow\"\nbogus = 2\n", "unknown keys: rule.bogus"},
		{"toml wrong type", FormatTOML, "version = 1\n[[rule]]\naction = 3\n", "import toml: toml: line 3"},
		{"toml bad glob", FormatTOML, "version = 1\n[[rule]]\naction = \"deny\"\nexe = \"/bin/[\"\n", `rule 1 (id ""): exe: bad glob "/bin/["`},
		{"unknown format", Format(9), "", "unknown format 9"},
	}
	for _, tt := range tests {
		_, err := Import([]byte(tt.in), tt.f)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: Import error = %v, want it to contain %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestImportDefaults(t *testing.T) {
	rs, err := Import([]byte("version = 1\n[[rule]]\naction = \"deny\"\nhost = \"*.tracker.example\"\n"), FormatTOML)
	if err != nil {
		t.Fatal(err)
	}
	want := Rule{Enabled: true, Action: 2, Host: "*.tracker.example", Lifetime: Forever}
	if len(rs) != 1 || !reflect.DeepEqual(rs[0], want) {
		t.Errorf("Import = %+v, want [%+v]", rs, want)
	}
}

func fuzzImport(f *testing.F, format Format) {
	b, err := Export(sampleRules(), format)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	empty, _ := Export(nil, format)
	f.Add(empty)
	if format == FormatJSON {
		f.Add([]byte(`{"version":1,"rules":[{"action":"allow","ports":"1-"}]}`))
		f.Add([]byte(`{"version":1,"rules":[{"action":"allow","dst":"::ffff:1.2.3.4/120"}]}`))
		f.Add([]byte(`[1,2`))
	} else {
		f.Add([]byte("version = 1\n[[rule]]\naction = \"allow\"\nports = \"65536\"\n"))
		f.Add([]byte("version = 1\nrule = 3\n"))
		f.Add([]byte("[[rule]]\n[[rule.x]]\n"))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Import(data, format)
		if err != nil {
			return
		}
		// Whatever imports must export and import back to the same rules.
		out, err := Export(rs, format)
		if err != nil {
			t.Fatalf("Export of imported rules: %v", err)
		}
		back, err := Import(out, format)
		if err != nil {
			t.Fatalf("re-Import: %v\n%s", err, out)
		}
		if len(rs) > 0 && !reflect.DeepEqual(back, rs) {
			t.Fatalf("re-Import differs:\n got %+v\nwant %+v", back, rs)
		}
		if _, err := NewMatcher(rs); err != nil {
			t.Fatalf("imported rules do not compile: %v", err)
		}
	})
}

func FuzzImportJSON(f *testing.F) { fuzzImport(f, FormatJSON) }
func FuzzImportTOML(f *testing.F) { fuzzImport(f, FormatTOML) }
