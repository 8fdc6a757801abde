package ctl

// Command-line parsing shared by every command: options anywhere, help.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// errHelp ends a command that printed its help: exit 0.
var errHelp = errors.New("help shown")

// command is one bastionctl command, for help, completion and man pages.
type command struct {
	name    string // "rules add"
	args    string // its operands after the name, "" when none
	summary string
}

// commands lists every command, in the order help shows them.
func commands() []command {
	return []command{
		{"status", "", "the agent's and your rules service's status"},
		{"prompt", "", "answer connection prompts in this terminal: one key answers (a allow once, A allow always, d deny once, D deny always, m more choices)"},
		{"rules list", "", "your rules"},
		{"rules add", "--action allow|deny|reject OPERANDS|--any [--for DURATION|--session|--forever]", "add a rule; without operands, --any says it covers every program and destination"},
		{"rules rm", "ID...", "delete rules"},
		{"rules enable", "ID", "switch a rule on"},
		{"rules disable", "ID", "switch a rule off"},
		{"rules export", "[--format json|toml] [-o FILE]", "write your rules to a file"},
		{"rules import", "[--format json|toml|opensnitch] FILE...", "merge rules from files: rules with a known id are updated, copies are left alone"},
		{"programs", "[WORD...] [--since DURATION|TIME] [--sort name|allowed|denied|bytes|last]",
			"the programs that made connections today (or since --since): connections allowed and denied, destinations, bytes sent and received, last activity, rules"},
		{"program", "NAME|PATH [--range hour|day|week] [--since DURATION|TIME]",
			"one program: what it did, its rules, its destinations grouped by host, and a traffic chart"},
		{"connections", "[TEXT...] [--program P] [--host H] [--action A] [--since T] [--until T] [--rule ID] [--limit N] [--csv]",
			"search the stored history of your connections, newest first; --csv or --json exports what matches"},
		{"history", "[--limit N]", "your recent decisions"},
		{"watch", "", "your decisions as they happen"},
		{"later list", "", "connections decided by the default while nobody was prompted"},
		{"later rule", "ID --action A [--scope S] [OPERANDS]", "make a rule from a decide-later entry"},
		{"later forget", "ID", "drop a decide-later entry"},
		{"pending", "[--watch]", "connections waiting for a verdict (agent)"},
		{"decide", "ID allow|deny|reject [--scope S] [--for DURATION]", "answer a pending connection (agent)"},
		{"decisions", "[--follow]", "recent decisions, and who made them (agent)"},
		{"cache list", "", "remembered decisions (agent)"},
		{"cache forget", "[ID]", "forget one remembered decision, or all of yours (agent)"},
		{"help", "[COMMAND]", "this help, or a command's"},
		{"completion", "bash|zsh|fish", "print a shell completion script"},
		{"man", "", "print bastionctl's manual page (roff)"},
	}
}

// globalFlags are the options every command takes, anywhere on the line.
type globalFlags struct {
	agentSocket, uiSocket string
	json, help            bool
}

// extractGlobals takes the global options out of args wherever they are
// (up to a "--"), so that `bastionctl rules list --json` works.
func extractGlobals(args []string, g *globalFlags) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || a == "-" {
			rest = append(rest, a)
			continue
		}
		switch name {
		case "json":
			g.json = !hasValue || value == "true" || value == "1"
		case "agent-socket", "ui-socket":
			if !hasValue {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("%w: --%s needs a socket path", errUsage, name)
				}
				i++
				value = args[i]
			}
			if name == "agent-socket" {
				g.agentSocket = value
			} else {
				g.uiSocket = value
			}
		case "h", "help":
			g.help = true
		default:
			rest = append(rest, a)
		}
	}
	return rest, nil
}

// flagSet returns the flag set of the command name ("rules add"); its
// usage names the command's operands and options.
func (c *cli) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if c.seen != nil {
		c.seen[name] = fs
	}
	return fs
}

// parse parses args with options and operands in any order ("--" ends the
// options) and returns the operands. A bad option is a usage error that
// says which; -h/--help prints the command's help.
func (c *cli) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	if c.help {
		c.printCommandHelp(fs)
		return nil, errHelp
	}
	var operands []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.printCommandHelp(fs)
				return nil, errHelp
			}
			msg := strings.Replace(err.Error(), "flag provided but not defined: ", "unknown option ", 1)
			return nil, fmt.Errorf("%w: %s: %s (bastionctl help %s)", errUsage, fs.Name(), msg, fs.Name())
		}
		args = fs.Args()
		if len(args) == 0 {
			return operands, nil
		}
		if args[0] == "--" {
			return append(operands, args[1:]...), nil
		}
		operands = append(operands, args[0])
		args = args[1:]
	}
}

// printCommandHelp prints the synopsis, summary and options of fs's
// command.
func (c *cli) printCommandHelp(fs *flag.FlagSet) {
	if c.seen != nil {
		return // describing, not helping
	}
	for _, cmd := range commands() {
		if cmd.name == fs.Name() {
			fmt.Fprintf(c.out, "usage: bastionctl %s\n\n%s.\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.summary)
		}
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(c.out, "\noptions:")
		fs.SetOutput(c.out)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	fmt.Fprintln(c.out, "\nglobal options (anywhere): --json, --agent-socket PATH, --ui-socket PATH")
}
