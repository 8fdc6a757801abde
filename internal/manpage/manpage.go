package manpage

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// Option is one command-line option.
type Option struct {
	Name  string // without dashes
	Arg   string // the value's placeholder ("PATH"); "" for a switch
	Usage string
}

// Command is one subcommand: its name (possibly with operands) and options.
type Command struct {
	Name    string
	Summary string
	Options []Option
}

// Page is a manual page in section 1.
type Page struct {
	Name, Summary, Synopsis, Description string
	Options                              []Option
	Commands                             []Command
	Exit                                 []string
	SeeAlso                              []string
}

// FromFlag describes f, with its default when it has one.
func FromFlag(f *flag.Flag) Option {
	name, usage := flag.UnquoteUsage(f)
	o := Option{Name: f.Name, Arg: strings.ToUpper(name), Usage: usage}
	if isBool(f) {
		o.Arg = ""
	}
	if d := f.DefValue; d != "" && d != "false" && d != "0" && d != "0s" && !strings.Contains(usage, "default") {
		o.Usage += " (default " + d + ")"
	}
	return o
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	if ok && b.IsBoolFlag() {
		return true
	}
	return reflect.TypeOf(f.Value).String() == "*flag.boolValue"
}

// ParseHelp reads the options from what a Go program's flag package
// prints for -h ("  -name type\n    \tusage").
func ParseHelp(help string) []Option {
	var out []Option
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "  -"):
			head, inline, _ := strings.Cut(strings.TrimPrefix(line, "  -"), "\t")
			name, arg, _ := strings.Cut(head, " ")
			out = append(out, Option{Name: name, Arg: strings.ToUpper(strings.TrimSpace(arg)), Usage: strings.TrimSpace(inline)})
		case strings.HasPrefix(line, "    \t") && len(out) > 0:
			o := &out[len(out)-1]
			o.Usage = strings.TrimSpace(o.Usage + " " + strings.TrimSpace(line))
		}
	}
	return out
}

// roff escapes s for a roff text line.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func optionLine(o Option) string {
	s := `\fB\-\-` + roff(o.Name) + `\fR`
	if o.Arg != "" {
		s += " " + `\fI` + roff(o.Arg) + `\fR`
	}
	return s
}

// Write writes p as a roff manual page, section 1.
func Write(w io.Writer, p Page) {
	fmt.Fprintf(w, ".TH %s 1 \"\" \"Bastion\" \"User Commands\"\n", strings.ToUpper(p.Name))
	fmt.Fprintf(w, ".SH NAME\n%s \\- %s\n", roff(p.Name), roff(p.Summary))
	fmt.Fprintf(w, ".SH SYNOPSIS\n.B %s\n", roff(p.Synopsis))
	if p.Description != "" {
		fmt.Fprintf(w, ".SH DESCRIPTION\n%s\n", roff(p.Description))
	}
	if len(p.Options) > 0 {
		fmt.Fprintln(w, ".SH OPTIONS")
		for _, o := range p.Options {
			fmt.Fprintf(w, ".TP\n%s\n%s\n", optionLine(o), roff(o.Usage))
		}
	}
	if len(p.Commands) > 0 {
		fmt.Fprintln(w, ".SH COMMANDS")
		for _, c := range p.Commands {
			fmt.Fprintf(w, ".TP\n\\fB%s\\fR\n%s\n", roff(strings.TrimSpace(c.Name)), roff(c.Summary))
			for _, o := range c.Options {
				fmt.Fprintf(w, ".RS\n.TP\n%s\n%s\n.RE\n", optionLine(o), roff(o.Usage))
			}
		}
	}
	if len(p.Exit) > 0 {
		fmt.Fprintln(w, ".SH EXIT STATUS")
		for _, e := range p.Exit {
			code, text, _ := strings.Cut(e, " ")
			fmt.Fprintf(w, ".TP\n.B %s\n%s\n", roff(code), roff(text))
		}
	}
	if len(p.SeeAlso) > 0 {
		fmt.Fprintf(w, ".SH SEE ALSO\n%s\n", roff(strings.Join(p.SeeAlso, ", ")))
	}
}
