// Package inert makes untrusted text safe to show to a person: in a
// terminal, a GTK label, a desktop notification or a log line.
//
// Trust boundary: every string given to this package may be chosen by an
// attacker. Executable paths, argv and comm are set by whatever program
// made the connection (another user's, or a hostile one); host names come
// from DNS answers and rule files; error messages can quote any of them.
// Shown raw, such a string can drive the reader's terminal (ESC sequences:
// OSC 52 writes the clipboard, others retitle the window, move the cursor
// or overwrite earlier lines with CR), rewrite a label's layout (newlines,
// U+2028), or pose as something else through bidirectional controls
// ("exe\u202efdp.sh" renders as "exehs.pdf").
//
// String escapes, visibly, every character that is not plain visible text:
// invalid UTF-8 bytes as \xNN; C0 controls and DEL as \xNN (or \t, \n,
// \r); and C1 controls, Unicode format characters (category Cf: the
// bidirectional embeddings, overrides, isolates and marks, zero-width
// characters, the BOM, tag characters) and the line and paragraph
// separators as \uNNNN. Everything else is kept, so ordinary paths,
// command lines and non-Latin names read as they are. Elide does the same
// and bounds the length for displays that need it, marking the cut with
// "…". Markup additionally escapes Pango/GLib markup for notification
// bodies and labels set with markup.
//
// The escaped text is for reading only: it is not a reversible encoding
// (a literal backslash is kept as it is), and nothing may match, store or
// decide on it. Machine-readable output keeps the exact value and relies
// on its own encoding: encoding/json and protojson write every control
// character as \u00XX, and log/slog's TextHandler quotes any value with a
// character that unicode.IsPrint rejects (which includes every bidi
// control) with strconv.Quote.
//
// SECURITY: every place that shows a value from the list above to a
// person goes through String, Elide or Markup.
package inert
