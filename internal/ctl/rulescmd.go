package ctl

// rules: the user's stored rules, through the rules service.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/inert"
	"github.com/bastion-fw/bastion/internal/rules"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

const rulesUse = "rules list | add | rm ID... | enable ID | disable ID | export | import FILE..."

func (c *cli) rulesCmd(ctx context.Context, args []string) int {
	if len(args) == 0 {
		if c.help {
			return c.helpCmd(ctx, []string{"rules"})
		}
		return exitCode(fmt.Errorf("%w: %s", errUsage, rulesUse), c.errOut)
	}
	var err error
	switch args[0] {
	case "list", "ls":
		err = c.rulesList(ctx, args[1:])
	case "add":
		err = c.rulesAdd(ctx, args[1:])
	case "rm", "remove", "delete":
		err = c.rulesRemove(ctx, args[1:])
	case "enable":
		err = c.rulesEnable(ctx, args[1:], true)
	case "disable":
		err = c.rulesEnable(ctx, args[1:], false)
	case "export":
		err = c.rulesExport(ctx, args[1:])
	case "import":
		err = c.rulesImport(ctx, args[1:])
	default:
		err = fmt.Errorf("%w: unknown rules command %q; %s", errUsage, args[0], rulesUse)
	}
	return exitCode(err, c.errOut)
}

func (c *cli) rulesList(ctx context.Context, args []string) error {
	if ops, err := c.parse(c.flagSet("rules list"), args); err != nil || len(ops) != 0 {
		return orUsage(err, "rules list")
	}
	resp, err := c.ui.ListRules(ctx, &uiv1.ListRulesRequest{})
	if err != nil {
		return c.uiErr(err)
	}
	if c.json {
		for _, r := range resp.GetRules() {
			c.emitJSON(r)
		}
		return nil
	}
	if len(resp.GetRules()) == 0 {
		fmt.Fprintln(c.out, "You have no rules.")
		return nil
	}
	printRuleTable(c.out, resp.GetRules(), c.now(), c.loc)
	return nil
}

// operandFlags are the flags that set a rule's operands.
type operandFlags struct {
	exe, cmdline, sha256, dst, port, host, proto string
	anyMountNS                                   bool
}

// anySet reports whether any operand flag was given.
func (o *operandFlags) anySet(set map[string]bool) bool {
	for _, name := range []string{"exe", "cmdline", "sha256", "dst", "port", "host", "proto"} {
		if set[name] {
			return true
		}
	}
	return false
}

func (o *operandFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.exe, "exe", "", "executable path or glob")
	fs.BoolVar(&o.anyMountNS, "any-mount-ns", false, "--exe (an exact host path) also matches processes in other mount namespaces (containers, Flatpak, Snap) that run that very file")
	fs.StringVar(&o.cmdline, "cmdline", "", "RE2 expression matching the whole command line")
	fs.StringVar(&o.sha256, "sha256", "", "hex SHA-256 of the executable")
	fs.StringVar(&o.dst, "dst", "", "destination address or CIDR prefix")
	fs.StringVar(&o.port, "port", "", "destination port N or range N-M")
	fs.StringVar(&o.host, "host", "", "destination host name or *.domain")
	fs.StringVar(&o.proto, "proto", "", "tcp, udp, icmp, icmpv6, udplite, sctp, dccp, gre, or a protocol number 1-255")
}

// apply sets the operands whose flags were given (set) on r.
func (o *operandFlags) apply(r *rules.Rule, set map[string]bool) error {
	if set["exe"] {
		r.Exe = o.exe
	}
	if set["any-mount-ns"] {
		r.AnyMountNS = o.anyMountNS
	}
	if set["cmdline"] {
		r.Cmdline = o.cmdline
	}
	if set["sha256"] {
		r.ExeSHA256 = strings.ToLower(o.sha256)
	}
	if set["dst"] {
		r.Dst = netip.Prefix{}
		if o.dst != "" {
			p, err := parseDst(o.dst)
			if err != nil {
				return err
			}
			r.Dst = p
		}
	}
	if set["port"] {
		r.PortMin, r.PortMax = 0, 0
		if o.port != "" {
			lo, hi, err := parsePorts(o.port)
			if err != nil {
				return err
			}
			r.PortMin, r.PortMax = lo, hi
		}
	}
	if set["host"] {
		r.Host = strings.ToLower(o.host)
	}
	if set["proto"] {
		r.Proto = 0
		if o.proto != "" && o.proto != "any" {
			p, err := flow.ParseProto(strings.ToLower(o.proto))
			if err != nil {
				return fmt.Errorf("--proto: %q is not a protocol: use tcp, udp, icmp, icmpv6, udplite, sctp, dccp, gre, esp, ah, igmp or a number 1-255", o.proto)
			}
			r.Proto = p
		}
	}
	return nil
}

func parseDst(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("--dst: %q is not an address with a prefix length (e.g. 10.0.0.0/8 or 2001:db8::/32)", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("--dst: %q is not an IP address (e.g. 192.0.2.1 or 2001:db8::1) or a prefix (10.0.0.0/8)", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parsePorts(s string) (lo, hi uint16, err error) {
	a, b, isRange := strings.Cut(s, "-")
	l, err := strconv.ParseUint(a, 10, 16)
	if err != nil || l == 0 {
		return 0, 0, fmt.Errorf("--port: %q is not a port (1-65535) or range N-M", s)
	}
	h := l
	if isRange {
		h, err = strconv.ParseUint(b, 10, 16)
		if err != nil || h < l {
			return 0, 0, fmt.Errorf("--port: %q is not a port (1-65535) or range N-M", s)
		}
	}
	return uint16(l), uint16(h), nil
}

// lifetimeFlags are --for, --session and --forever.
type lifetimeFlags struct {
	dur              time.Duration
	session, forever bool
}

func (l *lifetimeFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&l.dur, "for", 0, "the rule applies for this long")
	fs.BoolVar(&l.session, "session", false, "the rule applies until you log out")
	fs.BoolVar(&l.forever, "forever", false, "the rule applies until deleted (default)")
}

func (l *lifetimeFlags) apply(r *rules.Rule, now time.Time) error {
	n := 0
	for _, b := range []bool{l.dur != 0, l.session, l.forever} {
		if b {
			n++
		}
	}
	switch {
	case n > 1:
		return errors.New("choose one of --for, --session and --forever")
	case l.dur < 0:
		return errors.New("--for must be positive")
	case l.dur > 0:
		r.Lifetime, r.Expires = rules.Duration, now.Add(l.dur)
	case l.session:
		r.Lifetime = rules.Session
	default:
		r.Lifetime = rules.Forever
	}
	return nil
}

func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

const addUse = "rules add --action allow|deny|reject [--any] [--id ID] [--exe PATH|GLOB [--any-mount-ns]] [--cmdline RE] [--sha256 HEX] [--dst IP|CIDR] " +
	"[--port N|N-M] [--host NAME|*.domain] [--proto P] [--for DURATION|--session|--forever] [--note TEXT] [--disabled]"

func (c *cli) rulesAdd(ctx context.Context, args []string) error {
	fs := c.flagSet("rules add")
	action := fs.String("action", "", "allow, deny (drop silently) or reject (refuse at once)")
	note := fs.String("note", "", "a note for yourself")
	disabled := fs.Bool("disabled", false, "store the rule disabled")
	anyConn := fs.Bool("any", false, "the rule has no operands on purpose: it covers every program and destination")
	id := fs.String("id", "", "the new rule's id (default: a new random one); adding again with the same id does not add a second rule")
	var ops operandFlags
	ops.register(fs)
	var life lifetimeFlags
	life.register(fs)
	if rest, err := c.parse(fs, args); err != nil || len(rest) != 0 {
		return orUsage(err, addUse)
	}
	a, err := flow.ParseAction(*action)
	if err != nil {
		return fmt.Errorf("%w: --action must be allow, deny or reject (bastionctl help rules add)", errUsage)
	}
	r := rules.Rule{Enabled: !*disabled, Action: a, Note: *note}
	set := setFlags(fs)
	if err := ops.apply(&r, set); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := life.apply(&r, c.ruleNow()); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if !ops.anySet(set) && !*anyConn {
		return fmt.Errorf("%w: this rule would cover every program and every destination; "+
			"name what it covers (--exe, --host, --dst, --port, --proto, --cmdline, --sha256), or add --any if that is what you mean", errUsage)
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	// The id is chosen here, so that a retry after a lost answer cannot
	// add the rule twice.
	r.ID = *id
	if r.ID == "" {
		r.ID = c.ruleID()
	}
	req := &uiv1.AddRuleRequest{Rule: rules.ToProto(r)}
	resp, err := c.ui.AddRule(ctx, req)
	if err != nil && !neverSent(err) && status.Code(err) == codes.Unavailable && ctx.Err() == nil {
		// Sent, but the answer was lost: the same id makes one retry safe,
		// once the service is back (it restarts with its unit).
		rctx, cancel := context.WithTimeout(ctx, c.retryWait)
		resp, err = c.ui.AddRule(rctx, req, grpc.WaitForReady(true))
		cancel()
	}
	if err != nil {
		if outcomeUnknown(ctx, err) {
			return status.Errorf(codes.Unavailable, "the connection to your rules service was lost before it answered, so the rule "+
				"may or may not have been added. Check with `bastionctl rules list`; to retry safely, run the same command "+
				"with --id %s (an add with an id that is already there adds nothing)", r.ID)
		}
		return c.uiErr(err)
	}
	if c.json {
		c.emitJSON(resp.GetRule())
		return nil
	}
	printRule(c.out, resp.GetRule(), c.now(), c.loc)
	return nil
}

// outcomeUnknown reports whether a request that failed with err may still
// have been carried out: it was sent (something listened), and the
// connection went away or the user interrupted before the answer came.
func outcomeUnknown(ctx context.Context, err error) bool {
	switch status.Code(err) {
	case codes.Unavailable:
		return !neverSent(err)
	case codes.Canceled, codes.DeadlineExceeded:
		return true
	}
	return ctx.Err() != nil
}

// newRuleID is a random rule id, as the rules service makes them.
func newRuleID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails on Linux
	return hex.EncodeToString(b[:])
}

func (c *cli) rulesRemove(ctx context.Context, args []string) error {
	ids, err := c.parse(c.flagSet("rules rm"), args)
	if err != nil || len(ids) == 0 {
		return orUsage(err, "rules rm ID...")
	}
	// Remove what can be removed; report the first failure's code.
	var first error
	for _, id := range ids {
		if _, err := c.ui.DeleteRule(ctx, &uiv1.DeleteRuleRequest{Id: id}); err != nil {
			err = c.ruleErr(err, id)
			if first == nil {
				first = err
			} else {
				exitCode(err, c.errOut)
			}
			continue
		}
		if !c.json {
			fmt.Fprintln(c.out, "removed", inert.String(id))
		}
	}
	return first
}

// ruleErr is uiErr, with NotFound said in words for the rule id.
func (c *cli) ruleErr(err error, id string) error {
	if status.Code(err) == codes.NotFound {
		return status.Errorf(codes.NotFound, "you have no rule with id %q; `bastionctl rules list` shows your rules and their ids", id)
	}
	return c.uiErr(err)
}

func (c *cli) rulesEnable(ctx context.Context, args []string, enabled bool) error {
	use, name := "rules disable ID", "rules disable"
	if enabled {
		use, name = "rules enable ID", "rules enable"
	}
	ops, err := c.parse(c.flagSet(name), args)
	if err != nil || len(ops) != 1 {
		return orUsage(err, use)
	}
	resp, err := c.ui.SetRuleEnabled(ctx, &uiv1.SetRuleEnabledRequest{Id: ops[0], Enabled: enabled})
	if err != nil {
		return c.ruleErr(err, ops[0])
	}
	if c.json {
		c.emitJSON(resp.GetRule())
		return nil
	}
	printRule(c.out, resp.GetRule(), c.now(), c.loc)
	return nil
}

func parseFormat(s string, importing bool) (uiv1.Format, error) {
	switch strings.ToLower(s) {
	case "json":
		return uiv1.Format_FORMAT_JSON, nil
	case "toml":
		return uiv1.Format_FORMAT_TOML, nil
	case "opensnitch":
		if importing {
			return uiv1.Format_FORMAT_OPENSNITCH, nil
		}
		return 0, errors.New("OpenSnitch is an import format only; export as json or toml")
	}
	if importing {
		return 0, fmt.Errorf("unknown format %q (want json, toml or opensnitch)", s)
	}
	return 0, fmt.Errorf("unknown format %q (want json or toml)", s)
}

func (c *cli) rulesExport(ctx context.Context, args []string) error {
	const use = "rules export [--format json|toml] [-o FILE]"
	fs := c.flagSet("rules export")
	format := fs.String("format", "json", "json or toml")
	outPath := fs.String("o", "", "write to FILE instead of standard output")
	if ops, err := c.parse(fs, args); err != nil || len(ops) != 0 {
		return orUsage(err, use)
	}
	f, err := parseFormat(*format, false)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	resp, err := c.ui.ExportRules(ctx, &uiv1.ExportRulesRequest{Format: f})
	if err != nil {
		return c.uiErr(err)
	}
	if *outPath == "" {
		_, err := c.out.Write(resp.GetData())
		return err
	}
	// Rules say what a user runs and where it connects: keep them private.
	if err := os.WriteFile(*outPath, resp.GetData(), 0o600); err != nil {
		return fmt.Errorf("write rules: %w", err)
	}
	return nil
}

// rulesImport imports each file on its own: a file that cannot be imported
// at all fails the command (exit 1) after the others were tried; rules that
// were skipped are reported on stderr without failing it.
func (c *cli) rulesImport(ctx context.Context, args []string) error {
	const use = "rules import [--format json|toml|opensnitch] FILE..."
	fs := c.flagSet("rules import")
	format := fs.String("format", "", "json, toml or opensnitch (default: from the file name, .toml or json)")
	files, err := c.parse(fs, args)
	if err != nil || len(files) == 0 {
		return orUsage(err, use)
	}
	var forced uiv1.Format
	if *format != "" {
		f, err := parseFormat(*format, true)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		forced = f
	}
	failed := 0
	for _, name := range files {
		f := forced
		if f == uiv1.Format_FORMAT_UNSPECIFIED {
			f = uiv1.Format_FORMAT_JSON
			if strings.EqualFold(filepath.Ext(name), ".toml") {
				f = uiv1.Format_FORMAT_TOML
			}
		}
		data, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintf(c.errOut, "bastionctl: %s: %v\n", name, errors.Unwrap(err))
			failed++
			continue
		}
		resp, err := c.ui.ImportRules(ctx, &uiv1.ImportRulesRequest{Format: f, Data: data})
		if err != nil {
			err = c.uiErr(err)
			if codeOf(err) == ExitNoAgent {
				return err // nothing else will work either
			}
			fmt.Fprintf(c.errOut, "bastionctl: %s: not imported: %s\n", name, inert.String(statusMessage(err)))
			failed++
			continue
		}
		for _, p := range resp.GetProblems() {
			fmt.Fprintf(c.errOut, "bastionctl: %s: %s\n", name, inert.String(p))
		}
		n := resp.GetAdded() + resp.GetChanged() + resp.GetUnchanged()
		if n == 0 && len(resp.GetProblems()) > 0 {
			fmt.Fprintf(c.errOut, "bastionctl: %s: no rule could be imported\n", name)
			failed++
			continue
		}
		if c.json {
			for _, r := range resp.GetImported() {
				c.emitJSON(r)
			}
			continue
		}
		fmt.Fprintf(c.out, "%s: %d rule(s) added, %d changed, %d left alone (already there)", name,
			resp.GetAdded(), resp.GetChanged(), resp.GetUnchanged())
		if len(resp.GetProblems()) > 0 {
			fmt.Fprintf(c.out, ", %d problem(s)", len(resp.GetProblems()))
		}
		fmt.Fprintln(c.out)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d file(s) could not be imported", failed, len(files))
	}
	return nil
}
