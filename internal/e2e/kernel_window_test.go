package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// windowTrials is how many times each change is measured.
const windowTrials = 20

// changeWindow is what one change of a remembered allow did to a loop of
// connections. Times are from the moment the change was in force (its API
// call returned, or the rule expired) to the start of a connection:
// negative for connections that started before it.
type changeWindow struct {
	// oldAfter counts the connections that started after the change
	// and still got the old decision.
	oldAfter int
	// lastOld is the last connection that got the old decision.
	lastOld time.Duration
	// firstNew is the first connection that got the new decision.
	firstNew time.Duration
}

// windowCase is one kind of change: setup makes an allow of the loop
// dialer's connections to the case's destination hold (it is remembered
// in the kernel once the loop runs); change replaces it and returns the
// moment the change is in force: a time.Now() reading when its API call
// returned, or, for a change that is a wall-clock time (a lifetime's
// end), that time with no monotonic reading. The connections are placed
// on the same clock: by their monotonic start, which a step of the wall
// clock cannot move, or by their wall-clock start.
type windowCase struct {
	name   string
	setup  func(t *testing.T)
	change func(t *testing.T) time.Time
}

// startOn is when a started, on the clock of t0 (see windowCase).
func startOn(t0 time.Time, a attempt) time.Time {
	if t0 == t0.Round(0) {
		return a.wallStart()
	}
	return a.start()
}

// measureWindow runs c once: a loop dialer connects to addr without pause;
// once its allow is decided in the kernel, the change is made; the loop
// stops after the first connection that started after the change failed.
func measureWindow(t *testing.T, ctx context.Context, ns *testenv.NS, a *Agent, log *decisionLog, addr string, c windowCase) changeWindow {
	t.Helper()
	c.setup(t)
	l := startLoop(t, ctx, ns, a.Cgroup, attackerUID, addr, "-timeout", "200ms")
	testenv.WaitFor(t, 20*time.Second, "the loop's allow decided in the kernel", func() bool {
		return slices.ContainsFunc(log.of(l.Pid()), func(d *agentv1.DecisionEvent) bool { return byKernel(d) && d.GetAction() == allow })
	})
	inKernel := time.Now()
	t0 := c.change(t)
	if t0 == t0.Round(0) {
		inKernel = inKernel.Round(0)
	}
	l.WaitFor(t, 20*time.Second, "a failed connection after the change", func(as []attempt) bool {
		return slices.ContainsFunc(as, func(a attempt) bool { return !a.OK && !startOn(t0, a).Before(t0) })
	})
	w := changeWindow{lastOld: -time.Hour, firstNew: time.Hour}
	for _, at := range l.Stop(t) {
		if startOn(t0, at).Before(inKernel) {
			continue
		}
		d := startOn(t0, at).Sub(t0)
		if at.OK {
			w.lastOld = max(w.lastOld, d)
			if d >= 0 {
				w.oldAfter++
			}
		} else {
			w.firstNew = min(w.firstNew, d)
		}
	}
	return w
}

// reportWindows runs c windowTrials times, logs the figures and fails t if
// any connection that started after a change got the old decision.
func reportWindows(t *testing.T, ctx context.Context, ns *testenv.NS, a *Agent, log *decisionLog, addr string, c windowCase) {
	t.Helper()
	var (
		oldAfter  int
		window    time.Duration // the longest the old decision applied after a change
		lastOld   = -time.Hour
		firstNews []time.Duration
	)
	for range windowTrials {
		w := measureWindow(t, ctx, ns, a, log, addr, c)
		oldAfter += w.oldAfter
		lastOld = max(lastOld, w.lastOld)
		window = max(window, w.lastOld)
		firstNews = append(firstNews, w.firstNew)
	}
	slices.Sort(firstNews)
	t.Logf("%s: %d trials: the old decision applied to %d connections after the change, for %v at most (last one started %v after it); "+
		"the first connection with the new decision started %v after it (median), %v (max; negative: while the API call ran)",
		c.name, windowTrials, oldAfter, window, lastOld, firstNews[len(firstNews)/2], firstNews[len(firstNews)-1])
	if oldAfter != 0 {
		t.Errorf("%s: %d connections that started after the change got the old decision (window up to %v)", c.name, oldAfter, window)
	}
}

// TestKernelChangesTakeEffectAtOnce: a remembered allow, applied in the
// kernel to a loop of connections, is replaced by changing its rule to a
// deny, deleting its rule, forgetting its cache entry, or its rule's
// lifetime ending — through the agent's API, and through the rules
// service as a user changes rules. Each is measured 20 times: no
// connection that started after the API call returned (or the lifetime
// ended) gets the old decision, and the figures say how soon the new one
// applied.
func TestKernelChangesTakeEffectAtOnce(t *testing.T) {
	loopBin := loopDialerBin(t)
	t.Run("agent", func(t *testing.T) {
		ns := testenv.NewNetNS(t)
		l := ns.Listen(t, "tcp4", "127.0.0.1:0")
		addr, port := l.Addr().String(), portOf(l.Addr())
		a := startPolicyAgent(t, ns, kernelPolicy)
		log := recordDecisions(t, a)
		ctx := testCtx(t, 5*time.Minute)
		allowRule := portRule("loop", rAllow, loopBin, port)
		returned := func(f func()) time.Time {
			f()
			return time.Now()
		}
		var cacheID string
		for _, c := range []windowCase{
			{"rule changed from allow to deny",
				func(t *testing.T) { setRules(t, a, attackerUID, allowRule) },
				func(t *testing.T) time.Time {
					return returned(func() { setRules(t, a, attackerUID, portRule("loop", rDeny, loopBin, port)) })
				}},
			{"rule deleted",
				func(t *testing.T) { setRules(t, a, attackerUID, allowRule) },
				func(t *testing.T) time.Time { return returned(func() { setRules(t, a, attackerUID) }) }},
			{"cache entry forgotten",
				func(t *testing.T) { cacheID = cacheAllow(t, ctx, ns, a, addr, port) },
				func(t *testing.T) time.Time {
					return returned(func() {
						fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
						defer cancel()
						if resp, err := a.Client.ForgetCache(fctx, &agentv1.ForgetCacheRequest{Id: cacheID}); err != nil || resp.GetRemoved() != 1 {
							t.Fatalf("forget %s: %v, %d removed", cacheID, err, resp.GetRemoved())
						}
					})
				}},
		} {
			reportWindows(t, ctx, ns, a, log, addr, c)
		}
		// A Duration rule's end is no API call: the window is measured
		// from its expiry, on the wall clock its expiry is a time of.
		var expires time.Time
		reportWindows(t, ctx, ns, a, log, addr, windowCase{"rule's lifetime ended",
			func(t *testing.T) {
				r := portRule("loop", rAllow, loopBin, port)
				expires = time.Now().Add(time.Second)
				r.Lifetime, r.Expires = rulesv1.Lifetime_LIFETIME_DURATION, timestamppb.New(expires)
				setRules(t, a, attackerUID, r)
			},
			func(t *testing.T) time.Time { return expires.Round(0) }})
	})

	t.Run("rules-service", func(t *testing.T) {
		uiBins(t)
		ns := testenv.NewNetNS(t)
		l := ns.Listen(t, "tcp4", "127.0.0.1:0")
		addr, port := l.Addr().String(), portOf(l.Addr())
		a := startPolicyAgent(t, ns, kernelPolicy)
		log := recordDecisions(t, a)
		ctx := testCtx(t, 5*time.Minute)
		// Without a prompt client, what no rule covers is rejected.
		u := newAccount(t, attackerUID, "prompt_timeout = \"25s\"\ntimeout_action = \"deny\"\nsilent_action = \"reject\"\n")
		startUIServer(t, a, u)
		call := func(t *testing.T, what string, f func(ctx context.Context) error) time.Time {
			t.Helper()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := f(cctx); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			return time.Now()
		}
		rule := func(action rulesv1.Action) *rulesv1.Rule {
			r := portRule("", action, loopBin, port)
			r.Lifetime = rulesv1.Lifetime_LIFETIME_FOREVER
			return r
		}
		var id string
		add := func(t *testing.T) {
			if id != "" {
				call(t, "delete the last trial's rule", func(ctx context.Context) error {
					_, err := u.UI.DeleteRule(ctx, &uiv1.DeleteRuleRequest{Id: id})
					return err
				})
				id = ""
			}
			call(t, "add rule", func(ctx context.Context) error {
				resp, err := u.UI.AddRule(ctx, &uiv1.AddRuleRequest{Rule: rule(rAllow)})
				id = resp.GetRule().GetId()
				return err
			})
		}
		for _, c := range []windowCase{
			{"rule changed from allow to deny (UpdateRule)", add,
				func(t *testing.T) time.Time {
					return call(t, "update rule", func(ctx context.Context) error {
						r := rule(rDeny)
						r.Id = id
						_, err := u.UI.UpdateRule(ctx, &uiv1.UpdateRuleRequest{Rule: r})
						return err
					})
				}},
			{"rule deleted (DeleteRule)", add,
				func(t *testing.T) time.Time {
					return call(t, "delete rule", func(ctx context.Context) error {
						_, err := u.UI.DeleteRule(ctx, &uiv1.DeleteRuleRequest{Id: id})
						id = ""
						return err
					})
				}},
		} {
			reportWindows(t, ctx, ns, a, log, addr, c)
		}
	})
}

// cacheAllow makes the agent cache an allow of the loop dialer's
// connections to addr (an answer with SCOPE_DESTINATION_PORT, given while
// UID 1001 watches, which it then stops doing) and returns its ID.
func cacheAllow(t *testing.T, ctx context.Context, ns *testenv.NS, a *Agent, addr string, port int) string {
	t.Helper()
	setRules(t, a, attackerUID)
	conn, err := testenv.ClientAs(a.Socket, attackerUID, attackerUID)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	stream, err := agentv1.NewAgentServiceClient(conn).WatchPending(wctx, &agentv1.WatchPendingRequest{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "uid 1001 watched", func() bool { return watches(a.Status(t), attackerUID) })
	p := startLoop(t, ctx, ns, a.Cgroup, attackerUID, addr, "-n", "1", "-timeout", "20s")
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
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := a.Client.Decide(dctx, &agentv1.DecideRequest{Id: id, Action: allow, Scope: agentv1.Scope_SCOPE_DESTINATION_PORT})
	if err != nil || resp.GetCacheId() == "" {
		t.Fatalf("decide %s: %v (cache id %q)", id, err, resp.GetCacheId())
	}
	if as := p.Stop(t); len(as) != 1 || !as[0].OK {
		t.Fatalf("the answered connection: %+v", as)
	}
	stopWatch()
	testenv.WaitFor(t, 10*time.Second, "uid 1001 no longer watched", func() bool { return !watches(a.Status(t), attackerUID) })
	return resp.GetCacheId()
}
