package uiserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/peercred"
	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// waitFor polls cond until it holds, for at most 15s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, 15*time.Second, what, cond)
}

// ---- fake clock ----

type fakeTimer struct {
	at            time.Time
	f             func()
	stopped, done bool
}

type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

func newFakeClock() *fakeClock {
	// An hour behind the real clock: the (fake) agent stamps decisions
	// with real time, which must come after anything this clock stamped.
	return &fakeClock{now: time.Now().Add(-time.Hour).Round(0)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	if d <= 0 {
		t.done = true
		go f()
	}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped && !t.done
		t.stopped = true
		return was
	}
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	for _, t := range c.timers {
		if !t.stopped && !t.done && !t.at.After(c.now) {
			t.done = true
			due = append(due, t.f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		go f()
	}
}

// ---- fake agent ----

// fakeAgent is the agent's API with a pending table driven by the test.
type fakeAgent struct {
	agentv1.UnimplementedAgentServiceServer
	clock *fakeClock

	mu       sync.Mutex
	pending  map[string]*agentv1.PendingConnection
	decided  map[string]agentv1.Action
	reasons  map[string]agentv1.DecideReason
	by       map[string]string // decided_by of each decided entry
	setRules [][]*rulesv1.Rule
	watchers map[chan *agentv1.PendingEvent]bool
	decSubs  map[chan *agentv1.DecisionEvent]bool
	srv      *grpc.Server
	// refuseRules makes SetRules fail as an agent that rejects them.
	refuseRules bool
	// trafSubs are the WatchTraffic streams; trafficWatches counts the
	// calls, decisionWatches those of WatchDecisions. noTraffic makes
	// WatchTraffic Unimplemented, as in an agent older than it.
	trafSubs                        map[*trafficSub]bool
	trafficWatches, decisionWatches int
	noTraffic                       bool
}

// trafficSub is one WatchTraffic stream of the fake agent.
type trafficSub struct {
	ch   chan *agentv1.TrafficBatch
	fail chan error
}

func startFakeAgent(t *testing.T, path string, clock *fakeClock) *fakeAgent {
	t.Helper()
	fa := &fakeAgent{
		clock: clock, pending: map[string]*agentv1.PendingConnection{}, decided: map[string]agentv1.Action{}, reasons: map[string]agentv1.DecideReason{},
		by:       map[string]string{},
		watchers: map[chan *agentv1.PendingEvent]bool{}, decSubs: map[chan *agentv1.DecisionEvent]bool{},
		trafSubs: map[*trafficSub]bool{},
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	fa.srv = grpc.NewServer(grpc.Creds(peercred.TransportCredentials()))
	agentv1.RegisterAgentServiceServer(fa.srv, fa)
	go fa.srv.Serve(l) //nolint:errcheck // ends with Stop
	t.Cleanup(fa.srv.Stop)
	return fa
}

func (fa *fakeAgent) stop() { fa.srv.Stop() }

func (fa *fakeAgent) WatchPending(_ *agentv1.WatchPendingRequest, stream grpc.ServerStreamingServer[agentv1.PendingEvent]) error {
	ch := make(chan *agentv1.PendingEvent, 4096)
	fa.mu.Lock()
	for _, p := range fa.pending {
		ch <- &agentv1.PendingEvent{Kind: agentv1.PendingEvent_KIND_ADDED, Connection: p}
	}
	fa.watchers[ch] = true
	fa.mu.Unlock()
	defer func() {
		fa.mu.Lock()
		delete(fa.watchers, ch)
		fa.mu.Unlock()
	}()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case ev := <-ch:
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

func (fa *fakeAgent) WatchDecisions(_ *agentv1.WatchDecisionsRequest, stream grpc.ServerStreamingServer[agentv1.DecisionEvent]) error {
	ch := make(chan *agentv1.DecisionEvent, 4096)
	fa.mu.Lock()
	fa.decisionWatches++
	fa.decSubs[ch] = true
	fa.mu.Unlock()
	defer func() {
		fa.mu.Lock()
		delete(fa.decSubs, ch)
		fa.mu.Unlock()
	}()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case ev := <-ch:
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

func (fa *fakeAgent) watching() bool {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	return len(fa.watchers) > 0 && len(fa.decSubs) > 0
}

func (fa *fakeAgent) broadcastLocked(ev *agentv1.PendingEvent) {
	for ch := range fa.watchers {
		ch <- ev
	}
}

func (fa *fakeAgent) emitDecision(ev *agentv1.DecisionEvent) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	for ch := range fa.decSubs {
		ch <- ev
	}
}

// hold adds a pending connection of uid's exe to dst:port.
func (fa *fakeAgent) hold(id string, uid uint32, exe string, srcPort uint32, dst string, dport uint32, deadline time.Duration) *agentv1.PendingConnection {
	return fa.holdNamed(id, uid, exe, srcPort, dst, dport, deadline, "")
}

// holdNamed is hold for a destination the agent knows the name of.
func (fa *fakeAgent) holdNamed(id string, uid uint32, exe string, srcPort uint32, dst string, dport uint32, deadline time.Duration, host string) *agentv1.PendingConnection {
	now := fa.clock.Now()
	pc := &agentv1.PendingConnection{
		Id:      id,
		Process: &agentv1.Process{Pid: 100, Tgid: 100, Uid: uid, Comm: filepath.Base(exe), Exe: exe, Args: []string{exe, "https://example.com"}},
		Flow: &agentv1.Flow{Protocol: agentv1.Protocol_PROTOCOL_TCP, IpVersion: 4, SrcIp: "10.0.0.1", SrcPort: srcPort,
			DstIp: dst, DstPort: dport},
		FirstSeen: timestamppb.New(now), Deadline: timestamppb.New(now.Add(deadline)),
		DeadlineAction: agentv1.Action_ACTION_DENY, Packets: 1, Host: host,
	}
	fa.mu.Lock()
	fa.pending[id] = pc
	fa.broadcastLocked(&agentv1.PendingEvent{Kind: agentv1.PendingEvent_KIND_ADDED, Connection: pc})
	fa.mu.Unlock()
	return pc
}

// resolveElsewhere decides an entry as if root had answered it.
func (fa *fakeAgent) resolveElsewhere(id string, a agentv1.Action) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	pc := fa.pending[id]
	delete(fa.pending, id)
	fa.broadcastLocked(&agentv1.PendingEvent{Kind: agentv1.PendingEvent_KIND_RESOLVED, Connection: pc, Action: a, DecidedBy: "api:uid=0"})
}

func (fa *fakeAgent) Decide(ctx context.Context, req *agentv1.DecideRequest) (*agentv1.DecideResponse, error) {
	c, err := peercred.FromContext(ctx)
	if err != nil {
		return nil, err
	}
	fa.mu.Lock()
	pc := fa.pending[req.GetId()]
	if pc == nil {
		fa.mu.Unlock()
		return nil, status.Error(codes.NotFound, "no such pending connection")
	}
	delete(fa.pending, req.GetId())
	fa.decided[req.GetId()] = req.GetAction()
	fa.reasons[req.GetId()] = req.GetReason()
	// The agent's names for the reasons.
	by := map[agentv1.DecideReason]string{
		agentv1.DecideReason_DECIDE_REASON_DEADLINE: "deadline", agentv1.DecideReason_DECIDE_REASON_SILENT: "default",
	}[req.GetReason()]
	if by == "" {
		by = "api"
	}
	by += fmt.Sprintf(":uid=%d", c.UID)
	fa.by[req.GetId()] = by
	fa.broadcastLocked(&agentv1.PendingEvent{Kind: agentv1.PendingEvent_KIND_RESOLVED, Connection: pc, Action: req.GetAction(), DecidedBy: by})
	for ch := range fa.decSubs {
		ch <- &agentv1.DecisionEvent{Time: timestamppb.Now(), Process: pc.Process, Flow: pc.Flow, Action: req.GetAction(), DecidedBy: by}
	}
	fa.mu.Unlock()
	return &agentv1.DecideResponse{Packets: pc.GetPackets()}, nil
}

func (fa *fakeAgent) decision(id string) agentv1.Action {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	return fa.decided[id]
}

func (fa *fakeAgent) reason(id string) agentv1.DecideReason {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	return fa.reasons[id]
}

func (fa *fakeAgent) decidedBy(id string) string {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	return fa.by[id]
}

func (fa *fakeAgent) decidedCount() int {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	return len(fa.decided)
}

func (fa *fakeAgent) SetRules(_ context.Context, req *agentv1.SetRulesRequest) (*agentv1.SetRulesResponse, error) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if fa.refuseRules {
		return nil, status.Error(codes.InvalidArgument, "too many rules")
	}
	fa.setRules = append(fa.setRules, req.GetRules())
	// As the real agent does, decide the pending connections a new rule
	// covers (here: a rule naming their exe), recording "rule:ID".
	for id, pc := range fa.pending {
		for _, r := range req.GetRules() {
			if r.GetExe() == "" || r.GetExe() != pc.GetProcess().GetExe() || !r.GetEnabled() {
				continue
			}
			delete(fa.pending, id)
			fa.decided[id] = agentv1.Action(r.GetAction())
			by := "rule:" + r.GetId()
			fa.by[id] = by
			fa.broadcastLocked(&agentv1.PendingEvent{Kind: agentv1.PendingEvent_KIND_RESOLVED, Connection: pc, Action: agentv1.Action(r.GetAction()), DecidedBy: by})
			for ch := range fa.decSubs {
				ch <- &agentv1.DecisionEvent{Time: timestamppb.Now(), Process: pc.Process, Flow: pc.Flow, Action: agentv1.Action(r.GetAction()), DecidedBy: by}
			}
			break
		}
	}
	return &agentv1.SetRulesResponse{Active: uint32(len(req.GetRules()))}, nil
}

// lastRuleIDs returns the IDs of the rules last pushed, and whether any
// push happened.
func (fa *fakeAgent) lastRuleIDs() (map[string]bool, bool) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if len(fa.setRules) == 0 {
		return nil, false
	}
	ids := map[string]bool{}
	for _, r := range fa.setRules[len(fa.setRules)-1] {
		ids[r.GetId()] = true
	}
	return ids, true
}

func (fa *fakeAgent) GetStatus(ctx context.Context, _ *agentv1.GetStatusRequest) (*agentv1.GetStatusResponse, error) {
	c, _ := peercred.FromContext(ctx)
	return &agentv1.GetStatusResponse{Version: "fake", CallerUid: c.UID}, nil
}

// ---- the service under test ----

type harness struct {
	t     *testing.T
	dir   string
	clock *fakeClock
	agent *fakeAgent
	cfg   Config
	uid   uint32

	cancel context.CancelFunc
	done   chan error
	conn   *grpc.ClientConn
	ui     uiv1.UIServiceClient

	svcMu sync.Mutex
	svc   *Service

	flushPeriod time.Duration
}

func (h *harness) service() *Service {
	h.svcMu.Lock()
	defer h.svcMu.Unlock()
	return h.svc
}

func newHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	return newHarnessWith(t, mod, harnessOptions{})
}

// harnessOptions change the harness: the agent before the service connects
// to it, and the service's options.
type harnessOptions struct {
	agent func(*fakeAgent)
	// flushPeriod replaces statsFlushPeriod.
	flushPeriod time.Duration
}

// newHarnessWith is newHarness with harnessOptions.
func newHarnessWith(t *testing.T, mod func(*Config), ho harnessOptions) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, dir: dir, clock: newFakeClock(), uid: uint32(os.Getuid())}
	h.cfg = Config{
		AgentSocket:      filepath.Join(dir, "agent.sock"),
		Socket:           filepath.Join(dir, "bastion", "ui.sock"),
		DataDir:          filepath.Join(dir, "data"),
		PromptTimeout:    25 * time.Second,
		TimeoutAction:    flow.ActionDeny,
		SilentAction:     flow.ActionAllow,
		HistorySize:      100,
		HistoryRetention: DefaultHistoryRetention,
		LogLevel:         slog.LevelDebug,
	}
	if mod != nil {
		mod(&h.cfg)
	}
	h.agent = startFakeAgent(t, h.cfg.AgentSocket, h.clock)
	if ho.agent != nil {
		ho.agent(h.agent)
	}
	h.flushPeriod = ho.flushPeriod
	h.start()
	return h
}

func (h *harness) start() {
	t := h.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() {
		h.done <- run(ctx, h.cfg, log, options{
			clock: h.clock, ruleNow: h.clock.Now, flushPeriod: h.flushPeriod,
			started: func(s *Service) { h.svcMu.Lock(); h.svc = s; h.svcMu.Unlock() },
		})
	}()
	// The server may not listen yet: retry quickly rather than after
	// gRPC's default one-second backoff.
	conn, err := grpc.NewClient("unix://"+h.cfg.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 5 * time.Millisecond, Multiplier: 1.5, MaxDelay: 50 * time.Millisecond}}))
	if err != nil {
		t.Fatal(err)
	}
	h.conn, h.ui = conn, uiv1.NewUIServiceClient(conn)
	t.Cleanup(h.stop)
	waitFor(t, "the service to serve and reach the agent", func() bool {
		st, err := h.ui.GetStatus(ctx, &uiv1.GetStatusRequest{})
		return err == nil && st.GetAgentConnected() && h.agent.watching()
	})
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	h.conn.Close()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("run: %v", err)
		}
	case <-time.After(15 * time.Second):
		h.t.Error("run did not return after its context ended")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// promptClient is one WatchPrompts stream whose events are collected.
type promptClient struct {
	mu     sync.Mutex
	events []*uiv1.PromptEvent
	cancel context.CancelFunc
	ended  chan error
}

func (h *harness) watchPrompts() *promptClient {
	h.t.Helper()
	before := h.status().GetPromptClients()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := h.ui.WatchPrompts(ctx, &uiv1.WatchPromptsRequest{})
	if err != nil {
		h.t.Fatal(err)
	}
	pc := &promptClient{cancel: cancel, ended: make(chan error, 1)}
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				pc.ended <- err
				return
			}
			pc.mu.Lock()
			pc.events = append(pc.events, ev)
			pc.mu.Unlock()
		}
	}()
	h.t.Cleanup(cancel)
	waitFor(h.t, "the prompt client to register", func() bool { return h.status().GetPromptClients() > before })
	return pc
}

func (pc *promptClient) snapshot() []*uiv1.PromptEvent {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return append([]*uiv1.PromptEvent(nil), pc.events...)
}

func (pc *promptClient) count(kind uiv1.PromptEvent_Kind) int {
	n := 0
	for _, ev := range pc.snapshot() {
		if ev.GetKind() == kind {
			n++
		}
	}
	return n
}

// find returns the first event of kind, or nil.
func (pc *promptClient) find(kind uiv1.PromptEvent_Kind) *uiv1.PromptEvent {
	for _, ev := range pc.snapshot() {
		if ev.GetKind() == kind {
			return ev
		}
	}
	return nil
}

func (h *harness) status() *uiv1.GetStatusResponse {
	h.t.Helper()
	st, err := h.ui.GetStatus(context.Background(), &uiv1.GetStatusRequest{})
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// waitHistory watches the history until the entries seen satisfy cond.
func (h *harness) waitHistory(what string, cond func([]*uiv1.HistoryEntry) bool) []*uiv1.HistoryEntry {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	stream, err := h.ui.WatchHistory(ctx, &uiv1.WatchHistoryRequest{})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*uiv1.HistoryEntry
	for !cond(out) {
		e, err := stream.Recv()
		if err != nil {
			h.t.Fatalf("waiting for history %s: %v (have %d entries)", what, err, len(out))
		}
		out = append(out, e)
	}
	return out
}

func forever(action rulesv1.Action, exe string) *rulesv1.Rule {
	return &rulesv1.Rule{Enabled: true, Action: action, Exe: exe, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER}
}

func code(err error) codes.Code { return status.Code(err) }

// grow announces that more packets joined an agent entry, as the agent's
// KIND_UPDATED does.
func (fa *fakeAgent) grow(id string, packets uint32) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	pc := fa.pending[id]
	pc.Packets = packets
	fa.broadcastLocked(&agentv1.PendingEvent{Kind: agentv1.PendingEvent_KIND_UPDATED, Connection: pc})
}

func (fa *fakeAgent) WatchTraffic(_ *agentv1.WatchTrafficRequest, stream grpc.ServerStreamingServer[agentv1.TrafficBatch]) error {
	fa.mu.Lock()
	fa.trafficWatches++
	if fa.noTraffic {
		fa.mu.Unlock()
		return status.Error(codes.Unimplemented, "unknown method WatchTraffic for service bastion.agent.v1.AgentService")
	}
	sub := &trafficSub{ch: make(chan *agentv1.TrafficBatch, 4096), fail: make(chan error, 1)}
	fa.trafSubs[sub] = true
	fa.mu.Unlock()
	defer func() {
		fa.mu.Lock()
		delete(fa.trafSubs, sub)
		fa.mu.Unlock()
	}()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case err := <-sub.fail:
			return err
		case b := <-sub.ch:
			if err := stream.Send(b); err != nil {
				return err
			}
		}
	}
}

// trafficWatching reports how many WatchTraffic streams are open and how
// many were opened in all.
func (fa *fakeAgent) trafficWatching() (open, calls int) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	return len(fa.trafSubs), fa.trafficWatches
}

// emitTraffic sends samples to every WatchTraffic stream.
func (fa *fakeAgent) emitTraffic(samples ...*agentv1.TrafficSample) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	for sub := range fa.trafSubs {
		sub.ch <- &agentv1.TrafficBatch{Samples: samples}
	}
}

// failTraffic ends every WatchTraffic stream with err.
func (fa *fakeAgent) failTraffic(err error) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	for sub := range fa.trafSubs {
		sub.fail <- err
		delete(fa.trafSubs, sub)
	}
}
