package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// kernelPolicy rejects UID 1001's connections unless a rule allows them.
const kernelPolicy = masqueradePolicy

// dialInCgroup runs the dialer as uid in the agent's cgroup, where the
// kernel decision programs see it, and returns its result.
func dialInCgroup(t *testing.T, ctx context.Context, ns *testenv.NS, a *Agent, uid uint32, args ...string) (testenv.DialResult, int) {
	t.Helper()
	return runInCgroup(t, ctx, ns, a, uid, bins(t).dialer, args...)
}

// runInCgroup is dialInCgroup for another build of the dialer at exe.
func runInCgroup(t *testing.T, ctx context.Context, ns *testenv.NS, a *Agent, uid uint32, exe string, args ...string) (testenv.DialResult, int) {
	t.Helper()
	p := start(t, ns.CommandInCgroup(ctx, a.Cgroup, uid, uid, exe, args...))
	return p.DialResult(t, 20*time.Second), p.Pid()
}

// setRules replaces uid's rules in the agent, as root.
func setRules(t *testing.T, a *Agent, uid uint32, rs ...*rulesv1.Rule) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.Client.SetRules(ctx, &agentv1.SetRulesRequest{Uid: proto.Uint32(uid), Rules: rs}); err != nil {
		t.Fatalf("set rules of uid %d: %v", uid, err)
	}
}

// portRule is a rule for TCP to port, of exe ("": any program).
func portRule(id string, action rulesv1.Action, exe string, port int) *rulesv1.Rule {
	return &rulesv1.Rule{Id: id, Enabled: true, Action: action, Exe: exe, Protocol: rulesv1.Protocol_PROTOCOL_TCP,
		DstPortMin: uint32(port), DstPortMax: uint32(port), Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}
}

const (
	rAllow = rulesv1.Action_ACTION_ALLOW
	rDeny  = rulesv1.Action_ACTION_DENY
)

// decisionLog keeps every decision the agent reports, from its backlog on,
// until t ends.
type decisionLog struct {
	mu  sync.Mutex
	evs []*agentv1.DecisionEvent
	err error
}

func recordDecisions(t *testing.T, a *Agent) *decisionLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := a.Client.WatchDecisions(ctx, &agentv1.WatchDecisionsRequest{})
	if err != nil {
		cancel()
		t.Fatalf("watch decisions: %v", err)
	}
	l := &decisionLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, err := stream.Recv()
			l.mu.Lock()
			if err != nil {
				l.err = err
				l.mu.Unlock()
				return
			}
			l.evs = append(l.evs, ev)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return l
}

// of returns the decisions of process tgid's TCP connections so far (the
// tests' clients also send DNS queries).
func (l *decisionLog) of(tgid int) []*agentv1.DecisionEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*agentv1.DecisionEvent
	for _, ev := range l.evs {
		if int(ev.GetProcess().GetTgid()) == tgid && ev.GetFlow().GetProtocol() == agentv1.Protocol_PROTOCOL_TCP {
			out = append(out, ev)
		}
	}
	return out
}

// first waits for the first decision of process tgid's TCP connections.
func (l *decisionLog) first(t *testing.T, tgid int) *agentv1.DecisionEvent {
	t.Helper()
	var d *agentv1.DecisionEvent
	if !testenv.Poll(20*time.Second, func() bool {
		if evs := l.of(tgid); len(evs) > 0 {
			d = evs[0]
			return true
		}
		return false
	}) {
		l.mu.Lock()
		err := l.err
		l.mu.Unlock()
		t.Fatalf("no decision recorded for PID %d (stream: %v)", tgid, err)
	}
	return d
}

// byKernel reports whether the kernel made decision d.
func byKernel(d *agentv1.DecisionEvent) bool {
	return d.GetProcess().GetIdentifiedBy() == kdecide.Source
}

// dialCase is one kind of process in an alternation: run makes one
// connection from a new process and returns whether it got through and
// the process's PID.
type dialCase struct {
	name string
	run  func(t *testing.T) (ok bool, pid int)
}

// alternation counts what n connections, alternately of the process the
// rules allow and of the one they deny, met and who decided them.
type alternation struct {
	allowedOK, allowedRuns, deniedThrough, deniedRuns int
	allowedInKernel, deniedInKernel                   int
}

// alternate runs n connections, allowed first, and checks each one's
// outcome and its decision in the record: every allowed connection gets
// through with an allow by wantAllowBy, no denied one does, each denied
// with a deny by wantDenyBy.
func alternate(t *testing.T, log *decisionLog, n int, allowed, denied dialCase, wantAllowBy, wantDenyBy string) alternation {
	t.Helper()
	var r alternation
	for i := range n {
		c, wantBy, wantAction := allowed, wantAllowBy, allow
		if i%2 == 1 {
			c, wantBy, wantAction = denied, wantDenyBy, deny
		}
		ok, pid := c.run(t)
		d := log.first(t, pid)
		if d.GetAction() != wantAction || d.GetDecidedBy() != wantBy {
			t.Errorf("connection %d (%s, PID %d): %v by %q in the record, want %v by %q", i, c.name, pid, d.GetAction(), d.GetDecidedBy(), wantAction, wantBy)
		}
		if i%2 == 0 {
			r.allowedRuns++
			if ok {
				r.allowedOK++
			}
			if byKernel(d) {
				r.allowedInKernel++
			}
		} else {
			r.deniedRuns++
			if ok {
				r.deniedThrough++
			}
			if byKernel(d) {
				r.deniedInKernel++
			}
		}
	}
	t.Logf("%d connections: %s: %d of %d got through (%d decided in the kernel); %s: %d of %d got through (%d decided in the kernel)",
		n, allowed.name, r.allowedOK, r.allowedRuns, r.allowedInKernel, denied.name, r.deniedThrough, r.deniedRuns, r.deniedInKernel)
	if r.deniedThrough != 0 {
		t.Errorf("%d of %d connections of %s got through; the rules deny them", r.deniedThrough, r.deniedRuns, denied.name)
	}
	if r.allowedOK != r.allowedRuns {
		t.Errorf("%d of %d connections of %s got through; the rules allow them all", r.allowedOK, r.allowedRuns, allowed.name)
	}
	return r
}

// requireKernelPath makes two connections with run and fails t unless the
// second is decided in the kernel with want: the kernel path is active for
// that program and destination, so that a test of what the kernel must not
// do is not vacuous.
func requireKernelPath(t *testing.T, log *decisionLog, want agentv1.Action, run func(t *testing.T) (bool, int)) {
	t.Helper()
	run(t)
	ok, pid := run(t)
	d := log.first(t, pid)
	if !byKernel(d) || d.GetAction() != want || ok != (want == allow) {
		t.Fatalf("control: the second connection was %v by %q, identified by %q (through: %v); want %v decided in the kernel",
			d.GetAction(), d.GetDecidedBy(), d.GetProcess().GetIdentifiedBy(), ok, want)
	}
}

// TestKernelDecisionsFromRules: a rule's decision is made in userspace for
// the first connection and in the kernel for the next ones, with the same
// action and rule in the record; a remembered deny fails connect() at once.
func TestKernelDecisionsFromRules(t *testing.T) {
	ns := testenv.NewNetNS(t)
	allowedL := ns.Listen(t, "tcp4", "127.0.0.1:0")
	deniedL := ns.Listen(t, "tcp4", "127.0.0.1:0")
	allowed, denied := allowedL.Addr().String(), deniedL.Addr().String()
	a := startPolicyAgent(t, ns, kernelPolicy)
	ctx := testCtx(t, 3*time.Minute)
	setRules(t, a, attackerUID,
		portRule("allow-dialer", rAllow, bins(t).dialer, portOf(allowedL.Addr())),
		portRule("deny-dialer", rDeny, bins(t).dialer, portOf(deniedL.Addr())))
	for i := range 3 {
		r, pid := dialInCgroup(t, ctx, ns, a, attackerUID, "-net", "tcp4", "-addr", allowed)
		if !r.OK {
			t.Fatalf("connection %d to the allowed port: %+v", i, r)
		}
		d := waitDecision(t, ctx, a, pid)
		want := "netfilter-link"
		if i > 0 {
			want = kdecide.Source
		}
		t.Logf("connection %d: %v by %s, identified by %s", i, d.GetAction(), d.GetDecidedBy(), d.GetProcess().GetIdentifiedBy())
		if d.GetDecidedBy() != "rule:allow-dialer" || d.GetAction() != agentv1.Action_ACTION_ALLOW {
			t.Errorf("connection %d: %v by %s", i, d.GetAction(), d.GetDecidedBy())
		}
		if i > 0 && d.GetProcess().GetIdentifiedBy() != want {
			t.Errorf("connection %d decided by %q, want %q", i, d.GetProcess().GetIdentifiedBy(), want)
		}
	}
	for i := range 3 {
		r, _ := dialInCgroup(t, ctx, ns, a, attackerUID, "-net", "tcp4", "-addr", denied, "-timeout", "3s")
		t.Logf("denied connection %d: %+v", i, r)
		if r.OK {
			t.Fatalf("denied connection %d got through", i)
		}
	}
}

// zoneNamed and zonePlain are two names of one address (dnsAddr) in
// TestKernelNeverAllowsPastAMoreSpecificRule's DNS zone.
const (
	zoneNamed = "www.example.test"
	zonePlain = "plain.example.net"
)

// TestKernelNeverAllowsPastAMoreSpecificRule: the one exception. For every
// operand the kernel cannot evaluate — the command line, the executable's
// SHA-256, the host name and a glob — a rule on it that denies one process
// beats a rule the kernel could apply that allows another process of the
// same program (or any program), whoever decides: 20 connections
// alternate between the two, the allowed one first (so that its allow,
// were it remembered, would be there for the denied one), and none of the
// denied gets through while all the allowed do. Each case first shows that
// the kernel path is taken for that program (a control destination, or the
// case itself for globs). Last, a rule made after a cache-derived kernel
// decision wins at once.
func TestKernelNeverAllowsPastAMoreSpecificRule(t *testing.T) {
	b := bins(t)
	client := dnsClient(t)
	ns := testenv.NewNetNS(t)
	startZoneDNS(t, ns, "127.0.0.1:53", map[string]string{zoneNamed: dnsAddr, zonePlain: dnsAddr})
	listen := func(addr string) (string, int) {
		l := ns.Listen(t, "tcp4", addr+":0")
		return l.Addr().String(), portOf(l.Addr())
	}
	a := startPolicyAgent(t, ns, kernelPolicy)
	log := recordDecisions(t, a)
	ctx := testCtx(t, 8*time.Minute)
	const n = 20
	dial := func(exe string, args ...string) func(t *testing.T) (bool, int) {
		return func(t *testing.T) (bool, int) {
			r, pid := runInCgroup(t, ctx, ns, a, attackerUID, exe, args...)
			return r.OK, pid
		}
	}

	t.Run("cmdline", func(t *testing.T) {
		addr, port := listen("127.0.0.1")
		ctlAddr, ctlPort := listen("127.0.0.1")
		setRules(t, a, attackerUID,
			portRule("allow-exe", rAllow, b.dialer, port),
			&rulesv1.Rule{Id: "deny-evil-argv", Enabled: true, Action: rDeny, Exe: b.dialer, Cmdline: ".* -payload evil",
				DstPortMin: uint32(port), DstPortMax: uint32(port), Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER},
			portRule("allow-control", rAllow, b.dialer, ctlPort))
		requireKernelPath(t, log, allow, dial(b.dialer, "-net", "tcp4", "-addr", ctlAddr))
		alternate(t, log, n,
			dialCase{"dialer -payload good", dial(b.dialer, "-net", "tcp4", "-addr", addr, "-timeout", "5s", "-payload", "good")},
			dialCase{"dialer -payload evil", dial(b.dialer, "-net", "tcp4", "-addr", addr, "-timeout", "500ms", "-payload", "evil")},
			"rule:allow-exe", "rule:deny-evil-argv")
	})

	t.Run("sha256", func(t *testing.T) {
		// One file, rewritten in place between runs: its device and
		// inode, which the kernel knows it by, stay the same, while its
		// content alternates between the allowed program and one that
		// a rule denies by its hash. (Its ctime changes with each
		// write, which the kernel also compares; runs of the same
		// content in a row leave the file as it is.)
		addr, port := listen("127.0.0.1")
		ctlAddr, ctlPort := listen("127.0.0.1")
		exe := filepath.Join(testenv.TempDir(t), "tool")
		testenv.CopyExecutable(t, b.dialer, exe)
		good, err := os.ReadFile(exe)
		if err != nil {
			t.Fatal(err)
		}
		bad := append(append([]byte(nil), good...), "not the program the user allowed"...)
		sum := sha256.Sum256(bad)
		setRules(t, a, attackerUID,
			portRule("allow-exe", rAllow, exe, port),
			&rulesv1.Rule{Id: "deny-hash", Enabled: true, Action: rDeny, Exe: exe, ExeSha256: hex.EncodeToString(sum[:]),
				DstPortMin: uint32(port), DstPortMax: uint32(port), Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER},
			portRule("allow-control", rAllow, exe, ctlPort))
		current := good
		rewrite := func(t *testing.T, content []byte) {
			t.Helper()
			if bytes.Equal(content, current) {
				return
			}
			// O_TRUNC keeps the inode; no process runs the file now.
			if err := os.WriteFile(exe, content, 0o755); err != nil {
				t.Fatalf("rewrite %s: %v", exe, err)
			}
			current = content
		}
		as := func(content []byte, args ...string) func(t *testing.T) (bool, int) {
			return func(t *testing.T) (bool, int) {
				rewrite(t, content)
				return dial(exe, args...)(t)
			}
		}
		requireKernelPath(t, log, allow, as(good, "-net", "tcp4", "-addr", ctlAddr))
		alternate(t, log, n,
			dialCase{"the allowed content", as(good, "-net", "tcp4", "-addr", addr, "-timeout", "5s")},
			dialCase{"content denied by hash", as(bad, "-net", "tcp4", "-addr", addr, "-timeout", "1s")},
			"rule:allow-exe", "rule:deny-hash")
	})

	t.Run("host", func(t *testing.T) {
		// Names of dnsAddr: any program may connect to the port, but
		// not to the address named zoneNamed. The dialer connects to
		// the address without asking (as a program with its own DNS
		// cache does) after dnsclient asked for one of its names, and
		// is told the name its UID last asked for. While every process
		// of the UID is told the same name, the dialer's decision is
		// remembered in the kernel; an answer that names the address
		// otherwise must forget it before anyone connects.
		_, port := listen(dnsAddr)
		addr := fmt.Sprintf("%s:%d", dnsAddr, port)
		setRules(t, a, attackerUID,
			&rulesv1.Rule{Id: "allow-dns", Enabled: true, Action: rAllow, Exe: client, Protocol: rulesv1.Protocol_PROTOCOL_UDP,
				DstPortMin: 53, DstPortMax: 53, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER},
			portRule("allow-any", rAllow, "", port),
			&rulesv1.Rule{Id: "deny-host", Enabled: true, Action: rDeny, Host: zoneNamed, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER})
		lookup := func(t *testing.T, name string, connect bool, timeout string) (bool, int) {
			t.Helper()
			args := []string{"-server", "127.0.0.1:53", "-name", name + ".", "-timeout", timeout}
			if connect {
				args = append(args, "-port", strconv.Itoa(port))
			} else {
				args = append(args, "-resolve-only")
			}
			p := start(t, ns.CommandInCgroup(ctx, a.Cgroup, attackerUID, attackerUID, client, args...))
			r := p.dnsResult(t, 20*time.Second)
			if len(r.Addrs) == 0 || r.Addrs[0] != dnsAddr {
				t.Fatalf("dnsclient %s: %+v, want it to resolve to %s", name, r, dnsAddr)
			}
			return r.OK, p.Pid()
		}
		after := func(name, timeout string) func(t *testing.T) (bool, int) {
			return func(t *testing.T) (bool, int) {
				lookup(t, name, false, "5s")
				return dial(b.dialer, "-net", "tcp4", "-addr", addr, "-timeout", timeout)(t)
			}
		}
		resolveAndConnect := func(name, timeout string) func(t *testing.T) (bool, int) {
			return func(t *testing.T) (bool, int) { return lookup(t, name, true, timeout) }
		}
		lookup(t, zonePlain, false, "5s")
		requireKernelPath(t, log, allow, dial(b.dialer, "-net", "tcp4", "-addr", addr, "-timeout", "5s"))
		alternate(t, log, n,
			dialCase{"dialer after " + zonePlain, after(zonePlain, "5s")},
			dialCase{"dialer after " + zoneNamed, after(zoneNamed, "1s")},
			"rule:allow-any", "rule:deny-host")
		alternate(t, log, n,
			dialCase{"dnsclient " + zonePlain, resolveAndConnect(zonePlain, "5s")},
			dialCase{"dnsclient " + zoneNamed, resolveAndConnect(zoneNamed, "1s")},
			"rule:allow-any", "rule:deny-host")
	})
	t.Run("glob", func(t *testing.T) {
		// Globs are matched in userspace; the kernel remembers the
		// decision for each file a glob matched. Both the glob's deny
		// and the any-program allow are remembered, each for its file.
		addr, port := listen("127.0.0.1")
		dir := testenv.TempDir(t)
		goodExe, badExe := filepath.Join(dir, "good-tool"), filepath.Join(dir, "bad-tool")
		testenv.CopyExecutable(t, b.dialer, goodExe)
		testenv.CopyExecutable(t, b.dialer, badExe)
		setRules(t, a, attackerUID,
			portRule("allow-any", rAllow, "", port),
			portRule("deny-glob", rDeny, filepath.Join(dir, "bad-*"), port))
		r := alternate(t, log, n,
			dialCase{"good-tool", dial(goodExe, "-net", "tcp4", "-addr", addr, "-timeout", "5s")},
			dialCase{"bad-tool", dial(badExe, "-net", "tcp4", "-addr", addr, "-timeout", "1s")},
			"rule:allow-any", "rule:deny-glob")
		// Each file's first connection is decided in userspace, every
		// later one in the kernel.
		if r.allowedInKernel != r.allowedRuns-1 || r.deniedInKernel != r.deniedRuns-1 {
			t.Errorf("decided in the kernel: %d of %d allowed and %d of %d denied connections, want all but each file's first",
				r.allowedInKernel, r.allowedRuns, r.deniedInKernel, r.deniedRuns)
		}
	})

	t.Run("glob-hard-link", func(t *testing.T) {
		// One file under two names, only one of which the glob
		// matches: the kernel knows the file, not the name it was run
		// by, so the allow remembered for the first name must not let
		// the second through.
		addr, port := listen("127.0.0.1")
		dir := testenv.TempDir(t)
		goodExe, badExe := filepath.Join(dir, "good-tool"), filepath.Join(dir, "bad-tool")
		testenv.CopyExecutable(t, b.dialer, goodExe)
		if err := os.Link(goodExe, badExe); err != nil {
			t.Fatal(err)
		}
		setRules(t, a, attackerUID,
			portRule("allow-any", rAllow, "", port),
			portRule("deny-glob", rDeny, filepath.Join(dir, "bad-*"), port))
		alternate(t, log, n,
			dialCase{"good-tool", dial(goodExe, "-net", "tcp4", "-addr", addr, "-timeout", "5s")},
			dialCase{"bad-tool, a hard link to good-tool", dial(badExe, "-net", "tcp4", "-addr", addr, "-timeout", "1s")},
			"rule:allow-any", "rule:deny-glob")
	})

	t.Run("rule-after-cache", func(t *testing.T) {
		// A cached allow (an answer for this destination and port) is
		// remembered in the kernel; a deny rule made afterwards wins
		// from the first connection after SetRules returns.
		addr, port := listen("127.0.0.1")
		setRules(t, a, attackerUID)
		wctx, stopWatch := context.WithCancel(ctx)
		conn, err := testenv.ClientAs(a.Socket, attackerUID, attackerUID)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		stream, err := agentv1.NewAgentServiceClient(conn).WatchPending(wctx, &agentv1.WatchPendingRequest{})
		if err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 10*time.Second, "uid 1001 watched", func() bool { return watches(a.Status(t), attackerUID) })
		p := start(t, ns.CommandInCgroup(ctx, a.Cgroup, attackerUID, attackerUID, b.dialer, "-net", "tcp4", "-addr", addr, "-timeout", "20s"))
		var id string
		for id == "" {
			ev, err := stream.Recv()
			if err != nil {
				t.Fatalf("pending: %v", err)
			}
			if c := ev.GetConnection(); ev.GetKind() == agentv1.PendingEvent_KIND_ADDED && int(c.GetFlow().GetDstPort()) == port {
				id = c.GetId()
			}
		}
		a.Decide(t, id, allow, agentv1.Scope_SCOPE_DESTINATION_PORT)
		if r := p.DialResult(t, 20*time.Second); !r.OK {
			t.Fatalf("answered connection: %+v", r)
		}
		stopWatch()
		testenv.WaitFor(t, 10*time.Second, "uid 1001 no longer watched", func() bool { return !watches(a.Status(t), attackerUID) })
		requireKernelPath(t, log, allow, dial(b.dialer, "-net", "tcp4", "-addr", addr))
		if d := log.first(t, p.Pid()); !strings.HasPrefix(d.GetDecidedBy(), "api:") {
			t.Errorf("the answered connection was decided by %q", d.GetDecidedBy())
		}

		setRules(t, a, attackerUID, portRule("deny-after-cache", rDeny, b.dialer, port))
		ok, pid := dial(b.dialer, "-net", "tcp4", "-addr", addr, "-timeout", "1s")(t)
		d := log.first(t, pid)
		t.Logf("first connection after the deny rule: through %v, %v by %q, identified by %q", ok, d.GetAction(), d.GetDecidedBy(), d.GetProcess().GetIdentifiedBy())
		if ok || d.GetDecidedBy() != "rule:deny-after-cache" {
			t.Errorf("first connection after the deny rule: through %v, decided by %q; want denied by rule:deny-after-cache", ok, d.GetDecidedBy())
		}
		requireKernelPath(t, log, deny, dial(b.dialer, "-net", "tcp4", "-addr", addr, "-timeout", "1s"))
	})
}

// watches reports whether the status counts a watcher of uid.
func watches(st *agentv1.GetStatusResponse, uid uint32) bool {
	for _, u := range st.GetWatchedUids() {
		if u == uid {
			return true
		}
	}
	return false
}

// loopDialerBin builds internal/e2e/loopdialer once.
var loopDialerBin = helperBin("loopdialer", "github.com/bastion-fw/bastion/internal/e2e/loopdialer")

// attempt is one connection of the loop dialer.
type attempt struct {
	StartNS int64  `json:"start_ns"` // wall clock
	MonoNS  int64  `json:"mono_ns"`  // CLOCK_MONOTONIC
	US      int64  `json:"us"`
	OK      bool   `json:"ok"`
	Kind    string `json:"kind"`
	Local   string `json:"local"`

	// at is when it started, as a time of this process with a monotonic
	// reading (set by Attempts).
	at time.Time
}

// start is when the attempt started, on the monotonic clock: compared with
// this process's time.Now() readings, it is unmoved by a step of the wall
// clock (CI machines have had their clock stepped mid-test).
func (a attempt) start() time.Time { return a.at }

// wallStart is when the attempt started on the wall clock, the clock a
// rule's lifetime is measured on.
func (a attempt) wallStart() time.Time { return time.Unix(0, a.StartNS) }

// monoAnchor converts CLOCK_MONOTONIC readings of another process into
// times of this one.
type monoAnchor struct {
	now  time.Time
	mono int64
}

func newMonoAnchor() monoAnchor {
	var ts unix.Timespec
	now := time.Now()
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return monoAnchor{now: now, mono: ts.Nano()}
}

func (m monoAnchor) time(mono int64) time.Time { return m.now.Add(time.Duration(mono - m.mono)) }

// loop is a running loop dialer: one process connecting again and again.
type loop struct {
	*Proc
	stdin io.WriteCloser
}

// startLoop starts the loop dialer as uid in the agent's cgroup (cg),
// connecting to addr until Stop.
func startLoop(t *testing.T, ctx context.Context, ns *testenv.NS, cg *testenv.Cgroup, uid uint32, addr string, args ...string) *loop {
	t.Helper()
	cmd := ns.CommandInCgroup(ctx, cg, uid, uid, loopDialerBin(t), append([]string{"-addr", addr}, args...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	l := &loop{Proc: start(t, cmd), stdin: stdin}
	t.Cleanup(func() { stdin.Close() })
	return l
}

// Attempts parses the attempts reported so far.
func (l *loop) Attempts(t *testing.T) []attempt {
	t.Helper()
	out := l.Stdout()
	// A line still being written is left for later.
	out = out[:strings.LastIndexByte(out, '\n')+1]
	var as []attempt
	anchor := newMonoAnchor()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var a attempt
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("loop dialer: %q: %v", line, err)
		}
		a.at = anchor.time(a.MonoNS)
		as = append(as, a)
	}
	return as
}

// WaitFor waits until the attempts satisfy cond.
func (l *loop) WaitFor(t *testing.T, timeout time.Duration, what string, cond func([]attempt) bool) []attempt {
	t.Helper()
	var as []attempt
	if !testenv.Poll(timeout, func() bool {
		as = l.Attempts(t)
		return cond(as) || l.Exited()
	}) || !cond(as) {
		t.Fatalf("loop dialer: %s: not within %v (%d attempts, exited %v; stderr %q)", what, timeout, len(as), l.Exited(), l.Stderr())
	}
	return as
}

// Stop ends the loop and returns every attempt.
func (l *loop) Stop(t *testing.T) []attempt {
	t.Helper()
	l.stdin.Close()
	if err := l.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("loop dialer: %v; stderr %q", err, l.Stderr())
	}
	return l.Attempts(t)
}

// since returns the attempts that started at or after from and before to
// (zero: no end).
func since(as []attempt, from, to time.Time) []attempt {
	var out []attempt
	for _, a := range as {
		if a.start().Before(from) || (!to.IsZero() && !a.start().Before(to)) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// tally counts attempts by outcome: "ok" or the failure's kind.
func tally(as []attempt) map[string]int {
	m := make(map[string]int)
	for _, a := range as {
		if a.OK {
			m["ok"]++
		} else {
			m[a.Kind]++
		}
	}
	return m
}
