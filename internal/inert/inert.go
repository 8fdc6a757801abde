package inert

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// String returns s with every character that could act on a terminal or a
// text view, or change how the text around it reads, replaced by a visible
// escape (see the package documentation). Plain printable ASCII is
// returned as it is, without allocating.
func String(s string) string {
	i := firstUnsafe(s)
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for s = s[i:]; s != ""; {
		r, size := utf8.DecodeRuneInString(s)
		appendRune(&b, s[:size], r, size)
		s = s[size:]
	}
	return b.String()
}

// Elide is String bounded to at most max runes: when the escaped text is
// longer, it is cut at the end of an escape or character and ends in "…"
// (which counts as one). It reads only as much of s as it shows, so a
// megabyte-long command line costs no more than a short one. A max below 1
// gives "".
func Elide(s string, max int) string {
	if max < 1 {
		return ""
	}
	var b strings.Builder
	b.Grow(min(len(s), 4*max) + len("…"))
	n := 0   // runes written to b
	cut := 0 // length of b when n was at most max-1
	for s != "" {
		r, size := utf8.DecodeRuneInString(s)
		before := b.Len()
		appendRune(&b, s[:size], r, size)
		n += utf8.RuneCountInString(b.String()[before:])
		s = s[size:]
		if n <= max-1 {
			cut = b.Len()
		}
		if n > max {
			break
		}
	}
	if n <= max {
		return b.String()
	}
	return b.String()[:cut] + "…"
}

// Markup is String with the result escaped for GLib/Pango markup, for
// notification bodies and for labels set with markup.
func Markup(s string) string {
	return markupEscaper.Replace(String(s))
}

var markupEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "'", "&#39;", "\"", "&quot;")

// Safe reports whether String would return s unchanged.
func Safe(s string) bool {
	for len(s) > 0 {
		i := firstUnsafe(s)
		if i == len(s) {
			return true
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if mustEscape(r, size) {
			return false
		}
		s = s[i+size:]
	}
	return true
}

// firstUnsafe returns the index of the first byte of s that is not
// printable ASCII, or len(s).
func firstUnsafe(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return i
		}
	}
	return len(s)
}

// mustEscape reports whether the rune r, decoded from size bytes, is shown
// as an escape.
func mustEscape(r rune, size int) bool {
	switch {
	case r == utf8.RuneError && size <= 1:
		return true // invalid UTF-8
	case r < 0x20, r == 0x7f:
		return true
	case r < 0x7f:
		return false
	}
	// Cc: C1; Cf: bidi controls U+061C, U+200E/F, U+202A-U+202E,
	// U+2066-U+2069, zero-width characters, tags; Zl/Zp: U+2028/U+2029,
	// which break lines in GTK.
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)
}

// appendRune writes raw, the bytes of r, or their escape.
func appendRune(b *strings.Builder, raw string, r rune, size int) {
	if !mustEscape(r, size) {
		b.WriteString(raw)
		return
	}
	switch {
	case r == utf8.RuneError && size <= 1:
		c := raw[0]
		b.WriteString(`\x`)
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xf])
	case r == '\t':
		b.WriteString(`\t`)
	case r == '\n':
		b.WriteString(`\n`)
	case r == '\r':
		b.WriteString(`\r`)
	case r < 0x80:
		b.WriteString(`\x`)
		b.WriteByte(hexDigits[r>>4])
		b.WriteByte(hexDigits[r&0xf])
	case r <= 0xffff:
		b.WriteString(`\u`)
		for shift := 12; shift >= 0; shift -= 4 {
			b.WriteByte(hexDigits[(r>>shift)&0xf])
		}
	default:
		b.WriteString(`\U`)
		for shift := 28; shift >= 0; shift -= 4 {
			b.WriteByte(hexDigits[(r>>shift)&0xf])
		}
	}
}
