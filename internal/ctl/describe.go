package ctl

// Shell completion scripts and the manual page, made from the commands
// table and each command's own flag set, so they cannot drift from the
// options the commands take.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/bastion-fw/bastion/internal/manpage"
)

// describe returns each command's flag set, by running every command with
// --help while c.seen collects them: nothing is parsed or sent.
func (c *cli) describe(ctx context.Context) map[string]*flag.FlagSet {
	d := *c
	d.seen, d.help, d.out, d.errOut = map[string]*flag.FlagSet{}, true, io.Discard, io.Discard
	for _, cmd := range commands() {
		switch cmd.name {
		case "help", "completion", "man":
			continue
		}
		f := strings.Fields(cmd.name)
		d.run(ctx, f[0], f[1:])
	}
	return d.seen
}

var globalOptions = []manpage.Option{
	{Name: "json", Usage: "print JSON, one object per line"},
	{Name: "agent-socket", Arg: "PATH", Usage: "the agent's API socket (default " + defaultAgentSk + ")"},
	{Name: "ui-socket", Arg: "PATH", Usage: "your rules service's socket (default $XDG_RUNTIME_DIR/bastion/ui.sock)"},
	{Name: "help", Usage: "show help"},
}

func optionsOf(fs *flag.FlagSet) []manpage.Option {
	var out []manpage.Option
	if fs == nil {
		return nil
	}
	fs.VisitAll(func(f *flag.Flag) { out = append(out, manpage.FromFlag(f)) })
	return out
}

func (c *cli) completion(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: bastionctl completion bash|zsh|fish", errUsage)
	}
	if c.help {
		fmt.Fprintln(c.out, "usage: bastionctl completion bash|zsh|fish\n\nPrints a completion script; e.g. `source <(bastionctl completion bash)`.")
		return nil
	}
	seen := c.describe(context.Background())
	var cmds []manpage.Command
	for _, cmd := range commands() {
		cmds = append(cmds, manpage.Command{Name: cmd.name, Summary: cmd.summary, Options: optionsOf(seen[cmd.name])})
	}
	switch args[0] {
	case "bash":
		manpage.Bash(c.out, "bastionctl", cmds, globalOptions)
	case "zsh":
		manpage.Zsh(c.out, "bastionctl", cmds, globalOptions)
	case "fish":
		manpage.Fish(c.out, "bastionctl", cmds, globalOptions)
	default:
		return fmt.Errorf("%w: no completion for %q: bash, zsh or fish", errUsage, args[0])
	}
	return nil
}

func (c *cli) man(ctx context.Context, args []string) error {
	if len(args) != 0 {
		return fmt.Errorf("%w: bastionctl man", errUsage)
	}
	seen := c.describe(ctx)
	p := manpage.Page{
		Name:     "bastionctl",
		Summary:  "Bastion's command line: rules, prompts, status",
		Synopsis: "bastionctl [--json] [--agent-socket PATH] [--ui-socket PATH] COMMAND [ARGS]",
		Description: "bastionctl talks to the user's rules service (bastion-uiserver) for rules, history, decide-later " +
			"entries, terminal prompts and the programs view (what each program connected to, how much it sent and " +
			"received, and which rules decided), and to the agent (bastion-agent) for pending connections, decisions and " +
			"the decision cache. Options go anywhere on the command line. `bastionctl help COMMAND` explains a command. " +
			"With --json, list commands print one JSON object per item, and programs, program and connections print the " +
			"rules service's whole reply (ListProgramsResponse, GetProgramResponse, QueryConnectionsResponse of " +
			"bastion.ui.v1, with the proto's field names), which protobuf's JSON decoding reads back exactly.",
		Options: globalOptions,
		SeeAlso: []string{"bastion-agent(1)", "bastion-uiserver(1)", "bastion-gtk(1)"},
	}
	for _, cmd := range commands() {
		p.Commands = append(p.Commands, manpage.Command{Name: cmd.name + " " + cmd.args, Summary: cmd.summary, Options: optionsOf(seen[cmd.name])})
	}
	p.Exit = []string{"0 success", "1 an error", "2 a usage error", "3 not found (the pending connection, rule or entry)",
		"4 refused: not yours", "5 the agent or the rules service is not running or not reachable",
		"6 over one of the agent's limits; retry"}
	manpage.Write(c.out, p)
	return nil
}
