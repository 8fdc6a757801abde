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

const usage = `usage: bastionctl [--agent-socket PATH] [--ui-socket PATH] [--json] COMMAND [ARGS]

Agent commands:
  status                          agent and rules service status
  pending [--watch]               connections waiting for a verdict
  decide ID ACTION [--scope S] [--for DURATION]
                                  answer a pending connection; ACTION is allow,
                                  deny or reject; S is connection (default),
                                  destination-port, destination, port or any
  decisions [--follow]            recent decisions (and new ones with --follow)
  cache list                      cached decisions
  cache forget [ID]               forget one cached decision, or all of yours

Your rules (the rules service, bastion-uiserver):
  rules list                      your rules
  rules add --action allow|deny|reject [OPERANDS] [--for DURATION|--session|--forever]
            [--note TEXT] [--disabled]
                                  OPERANDS: --exe PATH|GLOB, --cmdline RE,
                                  --sha256 HEX, --dst IP|CIDR, --port N|N-M,
                                  --host NAME|*.domain, --proto tcp|udp|icmp|icmpv6
  rules rm ID...                  delete rules
  rules enable ID | rules disable ID
  rules export [--format json|toml] [-o FILE]
  rules import [--format json|toml|opensnitch] FILE...
  prompt                          answer connection prompts in this terminal
  watch                           decisions as they happen
  history [--limit N]             recent decisions
  later list                      connections decided by the default while
                                  nobody was prompted
  later rule ID --action A [--scope S] [OPERANDS] [--for D|--session|--forever]
                                  make a rule from an entry; S is
                                  destination-port (default), host, domain,
                                  port or any; OPERANDS override the scope
  later forget ID                 drop an entry
`

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
	fs := flag.NewFlagSet("bastionctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	sock := fs.String("agent-socket", defaultAgentSk, "agent API socket")
	uiSock := fs.String("ui-socket", DefaultUISocket(env.Getenv, env.UID), "rules service socket")
	asJSON := fs.Bool("json", false, "print JSON (one object per line)")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return ExitUsage
	}
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
	return c.run(ctx, fs.Arg(0), fs.Args()[1:])
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
	default:
		fmt.Fprintf(c.errOut, "bastionctl: unknown command %q\n", cmd)
		fmt.Fprint(c.errOut, usage)
		return ExitUsage
	}
	return exitCode(err, c.errOut)
}

var errUsage = errors.New("usage")

// exitCode prints err and maps it to an exit code.
func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, context.Canceled) {
		return ExitOK
	}
	if errors.Is(err, errUsage) {
		fmt.Fprintln(stderr, "bastionctl:", inert.String(err.Error()))
		return ExitUsage
	}
	// SECURITY: a service's message can quote an exe or a command line.
	st, _ := status.FromError(err)
	fmt.Fprintln(stderr, "bastionctl:", inert.String(st.Message()))
	return codeOf(err)
}

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

// uiErr explains an unreachable rules service; other errors pass through.
func (c *cli) uiErr(err error) error {
	if status.Code(err) == codes.Unavailable && strings.Contains(status.Convert(err).Message(), "permission denied") {
		// The socket's directory is 0700: this is someone else's service.
		return status.Errorf(codes.PermissionDenied, "rules service at %s belongs to another user: %s",
			c.uiSocket, status.Convert(err).Message())
	}
	if status.Code(err) == codes.Unavailable {
		return status.Errorf(codes.Unavailable, "rules service not reachable at %s (is bastion-uiserver running?): %s",
			c.uiSocket, status.Convert(err).Message())
	}
	return err
}

// statusMessage is an error's text without the gRPC decoration.
func statusMessage(err error) string {
	return status.Convert(err).Message()
}
