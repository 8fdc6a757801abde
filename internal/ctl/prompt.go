package ctl

// prompt: answering connection prompts in a terminal, for machines without
// a desktop. On a terminal one key answers (no Enter): a allow once, A
// allow always, d deny once, D deny always, m more choices. From a pipe or
// a script, input is read line by line, one answer a line.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/inert"
	"github.com/bastion-fw/bastion/internal/procinfo"
	"github.com/bastion-fw/bastion/internal/rules"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// promptSystem is what the prompt reads about the machine beyond the
// prompt itself: /proc for the parent process, the user database and
// /etc/services. Everything is best effort: a prompt shows what it can.
type promptSystem struct {
	procFS     fs.FS // rooted at /proc
	lookupUser func(uid uint32) (string, error)
	services   *procinfo.Services
}

func defaultPromptSystem() promptSystem {
	sys := promptSystem{
		procFS:     os.DirFS("/proc"),
		lookupUser: procinfo.UserName,
		services:   procinfo.LoadServices("/etc/services"),
	}
	return sys
}

func (c *cli) prompt(ctx context.Context, args []string) error {
	if ops, err := c.parse(c.flagSet("prompt"), args); err != nil || len(ops) != 0 {
		return orUsage(err, "prompt")
	}
	sys := defaultPromptSystem()
	if c.promptSys != nil {
		sys = *c.promptSys
	}
	s := &promptSession{ui: c.ui, in: c.in, out: c.out, now: c.now, ruleNow: c.ruleNow, loc: c.loc, sys: sys}
	if restore, ok := cbreak(c.in); ok {
		defer restore()
		s.keys = true
	}
	return c.uiErr(s.run(ctx))
}

// promptSession shows the user's prompts one at a time, asks for an action,
// a lifetime, a scope and optionally the command line, prints the rule that
// makes and answers the prompt with it once confirmed.
type promptSession struct {
	ui           uiv1.UIServiceClient
	in           io.Reader
	out          io.Writer
	now, ruleNow func() time.Time
	loc          *time.Location
	sys          promptSystem

	// keys: the input is a terminal read key by key (answers are single
	// keys, echoed here); otherwise it is read line by line.
	keys bool

	queue    []*uiv1.Prompt          // waiting to be shown, oldest first
	cur      *uiv1.Prompt            // being answered
	known    map[string]*uiv1.Prompt // prompt id -> prompt, to say what finally happened
	later    map[string]bool
	step     promptStep
	choice   rules.Choice
	previews map[string]rules.Scope // scope menu key -> scope, for cur
}

type promptStep int

const (
	stepQuick  promptStep = iota // one key answers the common cases
	stepAction                   // more choices: action, lifetime, scope, ...
	stepLifetime
	stepScope
	stepCmdline
	stepConfirm
)

type lineResult struct {
	line string
	eof  bool
	err  error
}

type eventResult struct {
	ev  *uiv1.PromptEvent
	err error
}

// errQuit ends the session at the user's request.
var errQuit = errors.New("quit")

// run serves prompts until ctx ends, the input ends, the user quits or the
// stream fails. Input is only read while a question is asked, so scripted
// answers wait for their prompt.
func (s *promptSession) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.later = map[string]bool{}
	s.known = map[string]*uiv1.Prompt{}
	stream, err := s.ui.WatchPrompts(ctx, &uiv1.WatchPromptsRequest{})
	if err != nil {
		return err
	}
	events := make(chan eventResult)
	go func() {
		for {
			ev, err := stream.Recv()
			select {
			case events <- eventResult{ev, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	// The reader reads one answer per request: a line, or on a terminal
	// one key. It blocks in Read when the session ends without input: on
	// a terminal that ends with the process; a test closes its input.
	want := make(chan struct{})
	lines := make(chan lineResult)
	go func() {
		br := bufio.NewReader(s.in)
		for {
			select {
			case <-want:
			case <-ctx.Done():
				return
			}
			var r lineResult
			if s.keys {
				r = readKey(br)
			} else {
				line, err := br.ReadString('\n')
				r = lineResult{line: line}
				if err != nil && line == "" {
					r = lineResult{eof: errors.Is(err, io.EOF), err: err}
				}
			}
			select {
			case lines <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	if s.keys {
		fmt.Fprintln(s.out, "Waiting for prompts. Press the key in brackets (no Enter needed); Enter or Esc leaves a prompt to its default; q quits.")
	} else {
		fmt.Fprintln(s.out, "Waiting for prompts. Answer with the letter or number in brackets, one a line; an empty line leaves a prompt to its default; q quits.")
	}
	reading := false
	for {
		if s.cur == nil && len(s.queue) > 0 {
			s.cur, s.queue = s.queue[0], s.queue[1:]
			s.step, s.choice = stepQuick, rules.Choice{}
			s.show()
			s.ask()
		}
		if s.cur != nil && !reading {
			select {
			case want <- struct{}{}:
				reading = true
			case <-ctx.Done():
				return nil
			}
		}
		select {
		case r := <-events:
			if r.err != nil {
				if errors.Is(r.err, io.EOF) {
					return errors.New("the rules service closed the prompt stream")
				}
				if status.Code(r.err) == codes.Canceled && ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watch prompts: %w", r.err)
			}
			s.event(r.ev)
		case r := <-lines:
			reading = false
			if r.err != nil {
				if r.eof {
					return nil
				}
				return fmt.Errorf("read answer: %w", r.err)
			}
			if s.cur == nil {
				continue // the prompt went away while the line was typed
			}
			if s.keys {
				fmt.Fprintln(s.out, keyEcho(r.line))
			}
			if err := s.answer(ctx, r.line); errors.Is(err, errQuit) {
				return nil
			} else if err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// event applies a prompt event to the queue and the current prompt, and
// says what finally happened to a prompt that goes away: answered here or
// in another client, timed out, decided by a rule.
func (s *promptSession) event(ev *uiv1.PromptEvent) {
	p := ev.GetPrompt()
	id := p.GetId()
	switch ev.GetKind() {
	case uiv1.PromptEvent_KIND_ADDED, uiv1.PromptEvent_KIND_UPDATED:
		s.known[id] = p
		if s.cur != nil && s.cur.GetId() == id {
			s.cur = p
			return
		}
		for i, q := range s.queue {
			if q.GetId() == id {
				s.queue[i] = p
				return
			}
		}
		if s.later[id] {
			return
		}
		s.queue = append(s.queue, p)
		if s.cur != nil {
			fmt.Fprintf(s.out, "\n(new prompt from %s; %d more waiting)\n", appName(p.GetProcess()), len(s.queue))
			s.ask()
		}
	case uiv1.PromptEvent_KIND_WITHDRAWN:
		kp, known := s.known[id]
		delete(s.known, id)
		title := promptTitle(kp)
		if ev.GetAction() == rulesv1.Action_ACTION_UNSPECIFIED && ev.GetReason() == "deadline" && known {
			ev.Action = kp.GetDeadlineAction()
		}
		if s.later[id] {
			delete(s.later, id)
			fmt.Fprintf(s.out, "%s: %s\n", title, withdrawnText(ev))
			s.reask()
			return
		}
		for i, q := range s.queue {
			if q.GetId() == id {
				s.queue = append(s.queue[:i], s.queue[i+1:]...)
				fmt.Fprintf(s.out, "\n(%s: %s while waiting)\n", title, withdrawnText(ev))
				s.reask()
				return
			}
		}
		if s.cur != nil && s.cur.GetId() == id {
			fmt.Fprintf(s.out, "\n%s: %s\n", s.title(), withdrawnText(ev))
			s.cur = nil
			return
		}
		if known && ev.GetReason() != "answered" {
			fmt.Fprintf(s.out, "%s: %s\n", title, withdrawnText(ev))
		}
	}
}

// reask repeats the current question after a line printed meanwhile.
func (s *promptSession) reask() {
	if s.cur != nil {
		s.ask()
	}
}

// withdrawnText says what happened to a prompt that went away.
func withdrawnText(ev *uiv1.PromptEvent) string {
	a := ""
	if ev.GetAction() != rulesv1.Action_ACTION_UNSPECIFIED {
		a = ruleActionWords(ev.GetAction())
	}
	switch ev.GetReason() {
	case "deadline":
		if a == "" {
			return "timed out; the default applied"
		}
		return "timed out; the default applied: " + a
	case "rule":
		if a == "" {
			return "decided by a rule added meanwhile"
		}
		return a + " by a rule added meanwhile"
	case "agent":
		return "decided outside the rules service (by root, or the agent's own deadline)"
	}
	if a == "" {
		return "answered in another prompt client"
	}
	return a + ", answered in another prompt client"
}

// ruleActionWords is what an action does, in a person's words.
func ruleActionWords(a rulesv1.Action) string {
	switch a {
	case rulesv1.Action_ACTION_ALLOW:
		return "allowed"
	case rulesv1.Action_ACTION_REJECT:
		return "denied (refused at once)"
	case rulesv1.Action_ACTION_DENY:
		return "dropped silently"
	}
	return ruleActionName(a)
}

// promptTitle names a prompt: "curl -> example.com 93.184.216.34:443".
func promptTitle(p *uiv1.Prompt) string {
	return appName(p.GetProcess()) + " -> " + flowDestination(p.GetFlow(), p.GetHost())
}

// title names the current prompt: "curl -> example.com:443".
func (s *promptSession) title() string { return promptTitle(s.cur) }

// show prints everything known about the current prompt. Every value a
// program or the network chose goes through inert (field does it), so
// that a command line cannot drive the terminal or pose as another one.
func (s *promptSession) show() {
	p := s.cur
	proc, fl := p.GetProcess(), p.GetFlow()
	more := ""
	if len(s.queue) > 0 {
		more = fmt.Sprintf(" (%d more waiting)", len(s.queue))
	}
	to := inert.String(fl.GetDstIp())
	if p.GetHost() != "" {
		to = inert.String(p.GetHost())
	}
	if fl.GetDstPort() != 0 {
		if fl.GetIpVersion() == 6 && p.GetHost() == "" {
			to = "[" + to + "]"
		}
		to += ":" + strconv.FormatUint(uint64(fl.GetDstPort()), 10)
	}
	fmt.Fprintf(s.out, "\n== %s wants to connect to %s%s ==\n", appName(proc), to, more)
	field := func(k, v string) { fmt.Fprintf(s.out, "  %-14s %s\n", k+":", inert.String(v)) }
	field("process", fmt.Sprintf("PID %d, user %s", proc.GetTgid(), s.userName(proc.GetUid())))
	field("app", appName(proc))
	field("executable", orDash(apiconv.ExeText(proc)))
	field("parent", s.parent(proc.GetPpid()))
	cmd := inert.String(strings.Join(proc.GetArgs(), " "))
	if len([]rune(cmd)) > 120 {
		cmd = inert.Elide(cmd, 120) + "  (m shows all)"
	}
	field("command line", orDash(cmd))
	field("destination", s.destination(p))
	proto := flowProtoName(fl)
	field("protocol", fmt.Sprintf("%s, IPv%d", proto, fl.GetIpVersion()))
	if p.GetConnections() > 1 {
		field("connections", strconv.Itoa(int(p.GetConnections())))
	}
	if also := alsoProcesses(p.GetProcesses(), p.GetMoreProcesses()); also != "" {
		field("processes", strings.TrimPrefix(also, "; "))
	}
	field("default", s.countdown()+" (if nobody answers)")
}

func (s *promptSession) userName(uid uint32) string {
	if s.sys.lookupUser != nil {
		if name, err := s.sys.lookupUser(uid); err == nil && name != "" {
			return fmt.Sprintf("%s (uid %d)", name, uid)
		}
	}
	return fmt.Sprintf("uid %d", uid)
}

// parent describes the parent process from /proc/PPID/{exe,comm}; the
// parent may be gone or not readable, so this shows what it can.
func (s *promptSession) parent(ppid uint32) string {
	return procinfo.Parent(s.sys.procFS, ppid)
}

// destination is "example.com (93.184.216.34), port 443 (https)".
func (s *promptSession) destination(p *uiv1.Prompt) string {
	fl := p.GetFlow()
	d := inert.String(fl.GetDstIp())
	if p.GetHost() != "" {
		d = inert.String(p.GetHost()) + " (" + d + ")"
	}
	proto := flowProtoName(fl)
	if (proto == "tcp" || proto == "udp") && fl.GetDstPort() != 0 {
		d += ", port " + s.sys.services.DescribePort(proto, uint16(fl.GetDstPort()))
	}
	return d
}

func (s *promptSession) countdown() string {
	a := defaultActionName(s.cur.GetDeadlineAction())
	if s.cur.GetDeadline() == nil {
		return a
	}
	left := s.cur.GetDeadline().AsTime().Sub(s.now()).Round(time.Second)
	if left <= 0 {
		return a + " now"
	}
	return fmt.Sprintf("%s in %v", a, left)
}

// defaultActionName names the deadline's action as the keys do: deny
// (refused at once), drop silently, allow.
func defaultActionName(a rulesv1.Action) string {
	switch a {
	case rulesv1.Action_ACTION_REJECT:
		return "deny"
	case rulesv1.Action_ACTION_DENY:
		return "drop silently"
	}
	return ruleActionName(a)
}

var lifetimes = []struct {
	key   string
	label string
	life  rules.Lifetime
	dur   time.Duration
}{
	{"1", "once", rules.Once, 0},
	{"2", "15 minutes", rules.Duration, 15 * time.Minute},
	{"3", "1 hour", rules.Duration, time.Hour},
	{"4", "until logout", rules.Session, 0},
	{"5", "forever", rules.Forever, 0},
}

var scopes = []struct {
	label string
	scope rules.Scope
}{
	{"this destination and port", rules.ScopeDestinationPort},
	{"this host, any port", rules.ScopeHost},
	{"this domain", rules.ScopeDomain},
	{"this port anywhere", rules.ScopePort},
	{"anywhere", rules.ScopeAny},
}

// ask prints the question of the current step, with what Enter does.
func (s *promptSession) ask() {
	switch s.step {
	case stepQuick:
		always := "this program to " + s.shortDestination()
		fmt.Fprintf(s.out, "Action? [a] allow once  [A] allow always (%s)  [d] deny once  [D] deny always\n", always)
		fmt.Fprintf(s.out, "        [m] more choices (drop silently, how long, which connections)  [Enter] leave it: %s > ", s.countdown())
	case stepAction:
		fmt.Fprintf(s.out, "Action? [a] allow  [d] deny: refuse, the program fails at once  [s] drop silently: the program waits until it gives up\n")
		fmt.Fprintf(s.out, "        [Enter] leave it: %s > ", s.countdown())
	case stepLifetime:
		var opts []string
		for _, l := range lifetimes {
			opts = append(opts, "["+l.key+"] "+l.label)
		}
		fmt.Fprintf(s.out, "For how long? %s  [Enter] once > ", strings.Join(opts, " "))
	case stepScope:
		fmt.Fprintf(s.out, "Which connections of %s?\n", appName(s.cur.GetProcess()))
		s.previews = map[string]rules.Scope{}
		n := 0
		for _, sc := range scopes {
			r, err := s.build(rules.Choice{Action: s.choice.Action, Lifetime: s.choice.Lifetime, For: s.choice.For, Scope: sc.scope})
			if err != nil {
				continue // e.g. no host name for the domain scope
			}
			n++
			key := strconv.Itoa(n)
			s.previews[key] = sc.scope
			if sc.scope == rules.ScopeAny {
				fmt.Fprintf(s.out, "  [%s] %s\n", key, sc.label)
				continue
			}
			fmt.Fprintf(s.out, "  [%s] %s: %s\n", key, sc.label, inert.String(ruleDestination(rules.ToProto(r))))
		}
		fmt.Fprint(s.out, "[Enter] 1 > ")
	case stepCmdline:
		fmt.Fprintf(s.out, "Only with this command line (%s)? [y] yes [n] no  [Enter] no > ", inert.Elide(strings.Join(s.cur.GetProcess().GetArgs(), " "), 60))
	case stepConfirm:
		fmt.Fprint(s.out, "Store it? [y] yes [n] no: start over  [Enter] yes > ")
	}
}

// shortDestination is what "always" covers: host or address, and port.
func (s *promptSession) shortDestination() string {
	r, err := s.build(rules.Choice{Action: flow.ActionAllow, Lifetime: rules.Forever, Scope: rules.ScopeDestinationPort})
	if err != nil {
		return "not possible here: " + inert.String(err.Error())
	}
	return inert.String(ruleDestination(rules.ToProto(r)))
}

// build makes the rule for choice c. Created is left to the rules
// service, which assigns it when it stores the rule.
func (s *promptSession) build(c rules.Choice) (rules.Rule, error) {
	r, err := rules.ForPrompt(apiconv.Process(s.cur.GetProcess()), apiconv.Tuple(s.cur.GetFlow()), s.cur.GetHost(), c, s.ruleNow())
	r.Created = time.Time{}
	return r, err
}

// quickAnswers are the one-key answers: a person's deny refuses (the
// program fails at once); always is this program, this destination and
// port, forever.
var quickAnswers = map[string]rules.Choice{
	"a":      {Action: flow.ActionAllow, Lifetime: rules.Once, Scope: rules.ScopeDestinationPort},
	"allow":  {Action: flow.ActionAllow, Lifetime: rules.Once, Scope: rules.ScopeDestinationPort},
	"A":      {Action: flow.ActionAllow, Lifetime: rules.Forever, Scope: rules.ScopeDestinationPort},
	"d":      {Action: flow.ActionReject, Lifetime: rules.Once, Scope: rules.ScopeDestinationPort},
	"deny":   {Action: flow.ActionReject, Lifetime: rules.Once, Scope: rules.ScopeDestinationPort},
	"r":      {Action: flow.ActionReject, Lifetime: rules.Once, Scope: rules.ScopeDestinationPort},
	"reject": {Action: flow.ActionReject, Lifetime: rules.Once, Scope: rules.ScopeDestinationPort},
	"D":      {Action: flow.ActionReject, Lifetime: rules.Forever, Scope: rules.ScopeDestinationPort},
}

// answer handles one answer (a key or a line) for the current step.
func (s *promptSession) answer(ctx context.Context, line string) error {
	raw := strings.TrimSpace(line)
	if strings.Contains(line, "\x1b") || (raw == "" && (s.step == stepQuick || s.step == stepAction)) {
		fmt.Fprintf(s.out, "left to the default: %s\n", s.countdown())
		s.later[s.cur.GetId()] = true
		s.cur = nil
		return nil
	}
	in := raw
	if len(in) > 1 {
		in = strings.ToLower(in) // words; single letters keep their case
	}
	switch in {
	case "q", "quit":
		fmt.Fprintf(s.out, "quit; %d prompt(s) left to their default\n", len(s.queue)+1)
		return errQuit
	case "?":
		s.show()
		s.ask()
		return nil
	case "m", "more":
		fmt.Fprintf(s.out, "command line: %s\n", orDash(inert.String(strings.Join(s.cur.GetProcess().GetArgs(), " "))))
		if s.step == stepQuick {
			s.step = stepAction
		}
		s.ask()
		return nil
	}
	switch s.step {
	case stepQuick:
		c, ok := quickAnswers[in]
		if !ok {
			fmt.Fprintln(s.out, "press a, A, d, D or m (Enter leaves it to the default)")
			break
		}
		s.choice = c
		return s.send(ctx)
	case stepAction:
		a, ok := map[string]flow.Action{"a": flow.ActionAllow, "allow": flow.ActionAllow, "d": flow.ActionReject,
			"deny": flow.ActionReject, "r": flow.ActionReject, "reject": flow.ActionReject, "s": flow.ActionDeny, "drop": flow.ActionDeny}[strings.ToLower(in)]
		if !ok {
			fmt.Fprintln(s.out, "press a, d or s")
			break
		}
		s.choice.Action = a
		s.step = stepLifetime
	case stepLifetime:
		if in == "" {
			in = "1"
		}
		found := false
		for _, l := range lifetimes {
			if in == l.key {
				s.choice.Lifetime, s.choice.For, found = l.life, l.dur, true
			}
		}
		if !found {
			fmt.Fprintln(s.out, "press 1 to 5")
			break
		}
		if s.choice.Lifetime == rules.Once {
			// Once decides this prompt's connections: no scope to choose.
			s.choice.Scope = rules.ScopeDestinationPort
			return s.send(ctx)
		}
		s.step = stepScope
	case stepScope:
		if in == "" {
			in = "1"
		}
		sc, ok := s.previews[in]
		if !ok {
			fmt.Fprintf(s.out, "press 1 to %d\n", len(s.previews))
			break
		}
		s.choice.Scope = sc
		s.step = stepCmdline
		if len(s.cur.GetProcess().GetArgs()) == 0 {
			s.step = stepConfirm
			return s.showRule()
		}
	case stepCmdline:
		switch strings.ToLower(in) {
		case "y", "yes":
			s.choice.WithCmdline = true
		case "n", "no", "":
			s.choice.WithCmdline = false
		default:
			fmt.Fprintln(s.out, "press y or n")
			s.ask()
			return nil
		}
		s.step = stepConfirm
		return s.showRule()
	case stepConfirm:
		switch strings.ToLower(in) {
		case "y", "yes", "":
			return s.send(ctx)
		case "n", "no":
			s.step, s.choice = stepQuick, rules.Choice{}
		default:
			fmt.Fprintln(s.out, "press y or n")
		}
	}
	s.ask()
	return nil
}

// showRule prints exactly the rule the answer will send, then asks to
// confirm it.
func (s *promptSession) showRule() error {
	r, err := s.build(s.choice)
	if err != nil {
		fmt.Fprintf(s.out, "cannot make that rule: %s\n", inert.String(err.Error()))
		s.step, s.choice = stepQuick, rules.Choice{}
		s.ask()
		return nil
	}
	fmt.Fprintln(s.out, "This rule will be stored:")
	printRule(s.out, rules.ToProto(r), s.now(), s.loc)
	s.ask()
	return nil
}

// send answers the prompt with s.choice and says what happened. The rule
// is built now, so that a Duration rule's expiry counts from the answer.
func (s *promptSession) send(ctx context.Context) error {
	r, err := s.build(s.choice)
	if err != nil {
		fmt.Fprintf(s.out, "cannot make that rule: %s\n", inert.String(err.Error()))
		s.step, s.choice = stepQuick, rules.Choice{}
		s.ask()
		return nil
	}
	title := s.title()
	resp, err := s.ui.AnswerPrompt(ctx, &uiv1.AnswerPromptRequest{PromptId: s.cur.GetId(), Rule: rules.ToProto(r)})
	s.cur = nil
	switch status.Code(err) {
	case codes.OK:
	case codes.NotFound:
		fmt.Fprintf(s.out, "%s: too late: already decided (answered elsewhere, timed out or decided by a rule)\n", title)
		return nil
	case codes.InvalidArgument, codes.FailedPrecondition:
		fmt.Fprintf(s.out, "%s: the rules service refused the answer: %s\n", title, inert.String(statusMessage(err)))
		return nil
	default:
		return fmt.Errorf("answer prompt: %w", err)
	}
	got := resp.GetRule()
	what := ruleActionName(got.GetAction())
	if got.GetAction() == rulesv1.Action_ACTION_DENY {
		what = "drop silently"
	} else if got.GetAction() == rulesv1.Action_ACTION_REJECT {
		what = "deny"
	}
	if got.GetLifetime() == rulesv1.Lifetime_LIFETIME_ONCE || got.GetId() == "" {
		fmt.Fprintf(s.out, "%s: %s once\n", title, what)
		return nil
	}
	fmt.Fprintf(s.out, "%s: %s, rule %s, %s\n", title, what, inert.String(got.GetId()), ruleLifetime(got, s.now(), s.loc))
	return nil
}

// readKey reads one key from a terminal in cbreak mode: Enter is "", Esc
// (and the sequences arrow keys send) "\x1b", Ctrl-D the end of input.
func readKey(br *bufio.Reader) lineResult {
	r, _, err := br.ReadRune()
	if err != nil {
		return lineResult{eof: errors.Is(err, io.EOF), err: err}
	}
	switch r {
	case '\r', '\n':
		return lineResult{line: ""}
	case 0x04:
		return lineResult{eof: true, err: io.EOF}
	case 0x1b:
		// Swallow the rest of an escape sequence already buffered.
		for br.Buffered() > 0 {
			if _, _, err := br.ReadRune(); err != nil {
				break
			}
		}
		return lineResult{line: "\x1b"}
	}
	return lineResult{line: string(r)}
}

// keyEcho shows the key pressed, as the terminal does not echo it.
func keyEcho(k string) string {
	switch k {
	case "":
		return "(Enter)"
	case "\x1b":
		return "(Esc)"
	}
	return inert.String(k)
}
