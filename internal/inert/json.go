package inert

import "unicode/utf8"

// JSON returns the JSON text b with every character that String would
// escape and that the JSON encoder left raw (DEL, C1 controls, bidi and
// other format characters, the line and paragraph separators) written as
// a JSON \u escape instead. The JSON means exactly what it meant (a
// decoder reads the same strings), but a person who prints it on a
// terminal is not exposed to it: encoding/json and protojson escape only
// the C0 controls. Outside JSON strings such characters cannot occur, so
// b is rewritten without parsing it. b must be valid UTF-8, as the
// encoders' output is; an invalid byte is left as it is.
func JSON(b []byte) []byte {
	i := 0
	for i < len(b) && b[i] < 0x7f {
		i++
	}
	if i == len(b) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	out = append(out, b[:i]...)
	for i < len(b) {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 || !mustEscape(r, size) {
			out = append(out, b[i:i+size]...)
			i += size
			continue
		}
		if r > 0xffff {
			r1, r2 := surrogates(r)
			out = appendJSONEscape(out, r1)
			out = appendJSONEscape(out, r2)
		} else {
			out = appendJSONEscape(out, r)
		}
		i += size
	}
	return out
}

func appendJSONEscape(out []byte, r rune) []byte {
	return append(out, '\\', 'u', hexDigits[(r>>12)&0xf], hexDigits[(r>>8)&0xf], hexDigits[(r>>4)&0xf], hexDigits[r&0xf])
}

// surrogates splits r (above U+FFFF) into its UTF-16 surrogate pair.
func surrogates(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff
}
