package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/desktopentry"
	"github.com/bastion-fw/bastion/internal/inert"
	"github.com/bastion-fw/bastion/internal/rules"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
	// ExitNotFound: the pending connection, rule or entry does not exist
	// (any more), or is another user's: the agent answers both alike, so
	// that IDs cannot be probed.
	ExitNotFound = 3
	ExitDenied   = 4 // the service refused: not yours (another user's rules or rules service)
	ExitNoAgent  = 5 // the agent or the rules service is not reachable
	// ExitLimit: the agent refused over one of its limits (too many
	// streams or calls at once), or ended a stream that fell behind; retry.
	ExitLimit      = 6
	defaultAgentSk = "/run/bastion/agent.sock"
)

// Env is what bastionctl takes from its process: standard streams, the
// environment and the user.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	UID            int

	// Tests replace the clocks, the time zone, the history quiet period
	// and the prompt's system lookups; zero values mean the real ones.
	now, ruleNow func() time.Time
	loc          *time.Location
	quiet        time.Duration
	promptSys    *promptSystem
	ruleID       func() string
	retryWait    time.Duration
	// apps names programs (default: the desktop entries installed);
	// width is the chart's width (default: the terminal's).
	apps  *desktopentry.Index
	width int
}

// Main runs bastionctl with args and the process's standard streams and
// environment, and returns its exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return Run(ctx, args, Env{Stdin: os.Stdin, Stdout: stdout, Stderr: stderr, Getenv: os.Getenv, UID: os.Getuid()})
}

// DefaultUISocket is where the user's rules service listens:
// $XDG_RUNTIME_DIR/bastion/ui.sock, or /run/user/UID/bastion/ui.sock.
func DefaultUISocket(getenv func(string) string, uid int) string {
	if dir := getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "bastion", "ui.sock")
	}
	return filepath.Join("/run/user", strconv.Itoa(uid), "bastion", "ui.sock")
}

// Run is Main with everything passed in.
func Run(ctx context.Context, args []string, env Env) int {
	stdout, stderr := env.Stdout, env.Stderr
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	g := globalFlags{agentSocket: defaultAgentSk, uiSocket: DefaultUISocket(env.Getenv, env.UID)}
	rest, err := extractGlobals(args, &g)
	if err != nil {
		return exitCode(err, stderr)
	}
	if len(rest) == 0 {
		printUsage(stderr)
		if g.help {
			return ExitOK
		}
		return ExitUsage
	}
	sock, uiSock, asJSON := &g.agentSocket, &g.uiSocket, &g.json
	agentConn, err := dial(*sock)
	if err != nil {
		fmt.Fprintln(stderr, "bastionctl:", err)
		return ExitError
	}
	defer agentConn.Close()
	uiConn, err := dial(*uiSock)
	if err != nil {
		fmt.Fprintln(stderr, "bastionctl:", err)
		return ExitError
	}
	defer uiConn.Close()
	c := &cli{
		agent:     agentv1.NewAgentServiceClient(agentConn),
		ui:        uiv1.NewUIServiceClient(uiConn),
		uiSocket:  *uiSock,
		agentSk:   *sock,
		in:        env.Stdin,
		out:       stdout,
		errOut:    stderr,
		json:      *asJSON,
		now:       time.Now,
		ruleNow:   rules.Now,
		loc:       time.Local,
		quiet:     300 * time.Millisecond,
		promptSys: env.promptSys,
		help:      g.help,
		ruleID:    newRuleID,
		retryWait: 10 * time.Second,
		getenv:    env.Getenv,
		apps:      env.apps,
		width:     env.width,
	}
	if env.retryWait != 0 {
		c.retryWait = env.retryWait
	}
	if env.ruleID != nil {
		c.ruleID = env.ruleID
	}
	if env.now != nil {
		c.now = env.now
	}
	if env.ruleNow != nil {
		c.ruleNow = env.ruleNow
	}
	if env.loc != nil {
		c.loc = env.loc
	}
	if env.quiet != 0 {
		c.quiet = env.quiet
	}
	return c.run(ctx, rest[0], rest[1:])
}

// printUsage prints bastionctl's synopsis and its commands.
func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: bastionctl [--json] [--agent-socket PATH] [--ui-socket PATH] COMMAND [ARGS]")
	fmt.Fprintln(w, "\nOptions go anywhere on the line. `bastionctl help COMMAND` explains a command.\n\nCommands:")
	for _, cmd := range commands() {
		fmt.Fprintf(w, "  %s\n      %s\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.summary)
	}
}

func dial(sock string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", sock, err)
	}
	return conn, nil
}

func (c *cli) run(ctx context.Context, cmd string, rest []string) int {
	var err error
	switch cmd {
	case "status":
		fs := c.flagSet("status")
		if _, err := c.parse(fs, rest); err != nil {
			return exitCode(err, c.errOut)
		}
		return c.status(ctx)
	case "pending":
		err = c.pending(ctx, rest)
	case "decide":
		err = c.decide(ctx, rest)
	case "decisions":
		err = c.decisions(ctx, rest)
	case "cache":
		err = c.cache(ctx, rest)
	case "rules":
		return c.rulesCmd(ctx, rest)
	case "prompt":
		err = c.prompt(ctx, rest)
	case "watch":
		err = c.watch(ctx, rest)
	case "history":
		err = c.history(ctx, rest)
	case "later":
		err = c.later(ctx, rest)
	case "programs":
		err = c.programs(ctx, rest)
	case "program":
		err = c.program(ctx, rest)
	case "connections":
		err = c.connections(ctx, rest)
	case "help":
		return c.helpCmd(ctx, rest)
	case "completion":
		err = c.completion(rest)
	case "man":
		err = c.man(ctx, rest)
	default:
		fmt.Fprintf(c.errOut, "bastionctl: unknown command %q; `bastionctl help` lists the commands\n", cmd)
		return ExitUsage
	}
	return exitCode(err, c.errOut)
}

// helpCmd prints the help of the command named by args, or the list of
// commands.
func (c *cli) helpCmd(ctx context.Context, args []string) int {
	if len(args) == 0 {
		printUsage(c.out)
		return ExitOK
	}
	name := strings.Join(args, " ")
	var sub []command
	for _, cmd := range commands() {
		if cmd.name == name {
			c.help = true
			return c.run(ctx, args[0], args[1:])
		}
		if strings.HasPrefix(cmd.name, name+" ") {
			sub = append(sub, cmd)
		}
	}
	if len(sub) == 0 {
		fmt.Fprintf(c.errOut, "bastionctl: no command %q; `bastionctl help` lists the commands\n", name)
		return ExitUsage
	}
	for _, cmd := range sub {
		fmt.Fprintf(c.out, "bastionctl %s\n    %s\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.summary)
	}
	return ExitOK
}

var errUsage = errors.New("usage")

// exitCode prints err and maps it to an exit code.
func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, errHelp) || status.Code(err) == codes.Canceled {
		return ExitOK // Ctrl-C ends a command quietly
	}
	if errors.Is(err, errUsage) {
		fmt.Fprintln(stderr, "bastionctl:", inert.String(err.Error()))
		return ExitUsage
	}
	var shown shownError
	if errors.As(err, &shown) {
		fmt.Fprintln(stderr, "bastionctl:", shown.st.Message())
		return codeOf(err)
	}
	// SECURITY: a service's message can quote an exe or a command line.
	st, _ := status.FromError(err)
	fmt.Fprintln(stderr, "bastionctl:", inert.String(st.Message()))
	return codeOf(err)
}

// shownError is an error bastionctl wrote itself, of several lines, every
// string from elsewhere in it already made inert: it is printed as it is.
type shownError struct{ st *status.Status }

// shownErrorf makes a shownError; the caller makes the args inert.
func shownErrorf(c codes.Code, format string, args ...any) error {
	return shownError{status.Newf(c, format, args...)}
}

func (e shownError) Error() string              { return e.st.Message() }
func (e shownError) GRPCStatus() *status.Status { return e.st }

// codeOf maps an error to an exit code without printing it.
func codeOf(err error) int {
	if err == nil || errors.Is(err, context.Canceled) {
		return ExitOK
	}
	if errors.Is(err, errUsage) {
		return ExitUsage
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.NotFound:
		return ExitNotFound
	case codes.PermissionDenied:
		return ExitDenied
	case codes.Unavailable:
		return ExitNoAgent
	case codes.ResourceExhausted:
		return ExitLimit
	case codes.Canceled:
		return ExitOK
	}
	return ExitError
}

type cli struct {
	agent    agentv1.AgentServiceClient
	ui       uiv1.UIServiceClient
	uiSocket string
	agentSk  string
	in       io.Reader
	out      io.Writer
	errOut   io.Writer
	json     bool
	// now is the wall clock (countdowns, "time left"); ruleNow is the clock
	// Duration rules are written on (rules.Now).
	now, ruleNow func() time.Time
	loc          *time.Location
	// quiet is how long a history stream must be silent for its backlog
	// to count as complete.
	quiet time.Duration
	// prompt overrides the prompt session's system lookups (tests).
	promptSys *promptSystem
	// ruleID makes the id of a rule added (tests: predictable ones).
	ruleID func() string
	// retryWait bounds the retry of an add whose answer was lost.
	retryWait time.Duration
	// help: the command prints its help instead of running.
	help bool
	// getenv reads the environment (XDG data directories, COLUMNS).
	getenv func(string) string
	// apps names programs from their desktop entries; read on first use.
	apps *desktopentry.Index
	// width, when set, is the terminal's width (tests).
	width int
	// seen, when set, collects each command's flag set instead of running
	// it (completion and the man page describe the options).
	seen map[string]*flag.FlagSet
}

// emitJSON prints m as one line of JSON. The values are exact; inert.JSON
// writes the characters protojson leaves raw (C1 and bidi controls) as \u
// escapes, so the line is as safe on a terminal as the text output.
func (c *cli) emitJSON(m proto.Message) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		fmt.Fprintf(c.errOut, "bastionctl: %s\n", inert.String(fmt.Sprintf("json: %v", err)))
		return
	}
	fmt.Fprintln(c.out, string(inert.JSON(b)))
}

// uiErr says what went wrong with the rules service in words, and what to
// do: not running, someone else's; other errors pass through.
func (c *cli) uiErr(err error) error {
	msg := status.Convert(err).Message()
	switch {
	case status.Code(err) == codes.Unavailable && strings.Contains(msg, "permission denied"):
		// The socket's directory is 0700: this is someone else's service.
		return status.Errorf(codes.PermissionDenied, "the rules service at %s belongs to another user (permission denied); use your own "+
			"(--ui-socket, default $XDG_RUNTIME_DIR/bastion/ui.sock)", c.uiSocket)
	case notListening(err):
		return status.Errorf(codes.Unavailable, "your rules service is not running (nothing answers at %s). "+
			"Start it with `systemctl --user start bastion-uiserver`, or run `bastion-uiserver` in another terminal", c.uiSocket)
	case status.Code(err) == codes.Unavailable:
		return status.Errorf(codes.Unavailable, "the connection to your rules service at %s was lost (%s); "+
			"check that bastion-uiserver is running (`systemctl --user status bastion-uiserver`) and try again", c.uiSocket, plainCause(msg))
	}
	return err
}

// agentErr is uiErr for the agent.
func (c *cli) agentErr(err error) error {
	msg := status.Convert(err).Message()
	switch {
	case status.Code(err) == codes.Unavailable && strings.Contains(msg, "permission denied"):
		return status.Errorf(codes.PermissionDenied, "you may not use the agent's socket %s (permission denied); "+
			"the agent admits every local user, so check the socket's mode (0666) and the directory's", c.agentSk)
	case notListening(err):
		return status.Errorf(codes.Unavailable, "the agent is not running (nothing answers at %s). "+
			"Start it with `sudo systemctl start bastion-agent` (or `sudo make run` from the source tree)", c.agentSk)
	case status.Code(err) == codes.Unavailable:
		return status.Errorf(codes.Unavailable, "the connection to the agent at %s was lost (%s); "+
			"check that it is running (`systemctl status bastion-agent`) and try again", c.agentSk, plainCause(msg))
	}
	return err
}

// notListening reports whether err says that nothing listens at the
// socket (gRPC's "transport: Error while dialing: ... connect: no such
// file or directory" or "connection refused"): the request never left.
func notListening(err error) bool {
	msg := status.Convert(err).Message()
	return status.Code(err) == codes.Unavailable && strings.Contains(msg, "dialing") &&
		(strings.Contains(msg, "no such file") || strings.Contains(msg, "connection refused"))
}

// neverSent reports whether err says the connection could not be made
// (gRPC's "Error while dialing"): a request that fails so never left.
func neverSent(err error) bool {
	return status.Code(err) == codes.Unavailable && strings.Contains(status.Convert(err).Message(), "dialing")
}

// plainCause is the end of a gRPC transport message, without its layers
// ("connection error: desc = \"transport: ...\"").
func plainCause(msg string) string {
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return strings.Trim(msg, `"`)
}

// decidedByLabel names who decided, as the README lists them: a rule, the
// cache (a remembered decision), the policy, an answer, the deadline.
func decidedByLabel(by string) string {
	switch {
	case strings.HasPrefix(by, "rule:"):
		return "rule " + inert.String(strings.TrimPrefix(by, "rule:"))
	case strings.HasPrefix(by, "cache:"):
		return "cache " + inert.String(strings.TrimPrefix(by, "cache:"))
	case strings.HasPrefix(by, "api:uid="):
		return "answer of uid " + inert.String(strings.TrimPrefix(by, "api:uid="))
	case strings.HasPrefix(by, "deadline:uid="):
		return "deadline of uid " + inert.String(strings.TrimPrefix(by, "deadline:uid=")) + "'s rules service"
	case strings.HasPrefix(by, "default:uid="):
		return "silent action of uid " + inert.String(strings.TrimPrefix(by, "default:uid=")) + "'s rules service"
	case by == "prompt":
		return "your answer"
	case by == "later":
		return "silent action (decide later)"
	case by == "paused":
		return "protection paused"
	case by == "":
		return "-"
	}
	return inert.String(by)
}

// orUsage is err, or a usage error naming use when err is nil (the
// operands were wrong).
func orUsage(err error, use string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: bastionctl %s", errUsage, use)
}

// statusMessage is an error's text without the gRPC decoration.
func statusMessage(err error) string {
	return status.Convert(err).Message()
}
