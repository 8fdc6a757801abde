// Package manpage writes manual pages (roff) and shell completion scripts
// (bash, zsh, fish) from a program's own flag definitions: from a
// flag.FlagSet, or from the help a Go program prints for -h, so that no
// help text is written twice. bastionctl uses it for `bastionctl man` and
// `bastionctl completion`; cmd genman (./internal/manpage/genman) makes
// the pages of every binary when the package is built.
//
// Trust boundary: the input is the project's own help text; it is escaped
// for roff and for the shells' quoting all the same.
package manpage
