package ctl

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/procinfo"
	"github.com/bastion-fw/bastion/internal/rules"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// testNow is the fixed time of every test; outputs are printed in UTC.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeUI is a UIService that keeps its rules in memory. Its rules go
// through the real rules package on import and export.
type fakeUI struct {
	uiv1.UnimplementedUIServiceServer

	mu      sync.Mutex
	rules   []*rulesv1.Rule
	nextID  int
	history []*uiv1.HistoryEntry
	later   []*uiv1.DecideLaterEntry
	// resolved records ResolveDecideLater requests.
	resolved []*uiv1.ResolveDecideLaterRequest
	// answered names prompts already answered: AnswerPrompt gets NotFound.
	answered map[string]bool

	// promptEvents is streamed to every WatchPrompts caller.
	promptEvents chan *uiv1.PromptEvent
	// answers receives every AnswerPrompt request.
	answers chan *uiv1.AnswerPromptRequest
}

func newFakeUI() *fakeUI {
	return &fakeUI{
		answered:     map[string]bool{},
		promptEvents: make(chan *uiv1.PromptEvent, 16),
		answers:      make(chan *uiv1.AnswerPromptRequest, 16),
	}
}

// ruleList returns a copy of the stored rules.
func (f *fakeUI) ruleList() []*rulesv1.Rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	var rs []*rulesv1.Rule
	for _, r := range f.rules {
		rs = append(rs, proto.Clone(r).(*rulesv1.Rule))
	}
	return rs
}

func (f *fakeUI) setRules(rs []*rulesv1.Rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = rs
}

func (f *fakeUI) GetStatus(context.Context, *uiv1.GetStatusRequest) (*uiv1.GetStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &uiv1.GetStatusResponse{
		Version: "test", Uid: 1000, AgentConnected: true, PromptClients: 1, PendingPrompts: 2,
		Rules: uint32(len(f.rules)), DecideLater: uint32(len(f.later)), SilentAction: rulesv1.Action_ACTION_DENY,
		PromptTimeout: durationpb.New(30 * time.Second), TimeoutAction: rulesv1.Action_ACTION_DENY,
		StorePath: "/home/alice/.local/share/bastion/rules.db",
	}, nil
}

func (f *fakeUI) ListRules(context.Context, *uiv1.ListRulesRequest) (*uiv1.ListRulesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &uiv1.ListRulesResponse{}
	for _, r := range f.rules {
		resp.Rules = append(resp.Rules, proto.Clone(r).(*rulesv1.Rule))
	}
	return resp, nil
}

// add stores r like the rules service: validated, with an id and created.
func (f *fakeUI) add(r *rulesv1.Rule) (*rulesv1.Rule, error) {
	rr, err := rules.FromProto(r)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := rr.Validate(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if rr.Lifetime == rules.Once {
		return nil, status.Error(codes.InvalidArgument, "a once rule cannot be stored")
	}
	f.nextID++
	p := rules.ToProto(rr)
	p.Id = fmt.Sprintf("%016x", f.nextID)
	p.Created = timestamppb.New(testNow.Add(-time.Hour))
	f.rules = append(f.rules, p)
	return proto.Clone(p).(*rulesv1.Rule), nil
}

func (f *fakeUI) AddRule(_ context.Context, req *uiv1.AddRuleRequest) (*uiv1.AddRuleResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.add(req.GetRule())
	if err != nil {
		return nil, err
	}
	return &uiv1.AddRuleResponse{Rule: r}, nil
}

func (f *fakeUI) find(id string) (int, error) {
	if id == "forbidden" {
		return 0, status.Error(codes.PermissionDenied, "not your rule")
	}
	for i, r := range f.rules {
		if r.GetId() == id {
			return i, nil
		}
	}
	return 0, status.Errorf(codes.NotFound, "no rule %s", id)
}

func (f *fakeUI) DeleteRule(_ context.Context, req *uiv1.DeleteRuleRequest) (*uiv1.DeleteRuleResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.find(req.GetId())
	if err != nil {
		return nil, err
	}
	f.rules = append(f.rules[:i], f.rules[i+1:]...)
	return &uiv1.DeleteRuleResponse{}, nil
}

func (f *fakeUI) SetRuleEnabled(_ context.Context, req *uiv1.SetRuleEnabledRequest) (*uiv1.SetRuleEnabledResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.find(req.GetId())
	if err != nil {
		return nil, err
	}
	f.rules[i].Enabled = req.GetEnabled()
	return &uiv1.SetRuleEnabledResponse{Rule: proto.Clone(f.rules[i]).(*rulesv1.Rule)}, nil
}

func format(f uiv1.Format) rules.Format {
	if f == uiv1.Format_FORMAT_TOML {
		return rules.FormatTOML
	}
	return rules.FormatJSON
}

func (f *fakeUI) ExportRules(_ context.Context, req *uiv1.ExportRulesRequest) (*uiv1.ExportRulesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var rs []rules.Rule
	for _, p := range f.rules {
		r, err := rules.FromProto(p)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		rs = append(rs, r)
	}
	data, err := rules.Export(rs, format(req.GetFormat()))
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &uiv1.ExportRulesResponse{Data: data}, nil
}

func (f *fakeUI) ImportRules(_ context.Context, req *uiv1.ImportRulesRequest) (*uiv1.ImportRulesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var rs []rules.Rule
	var problems []string
	var err error
	if req.GetFormat() == uiv1.Format_FORMAT_OPENSNITCH {
		rs, problems, err = rules.ImportOpenSnitch(req.GetData())
	} else {
		rs, err = rules.Import(req.GetData(), format(req.GetFormat()))
	}
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp := &uiv1.ImportRulesResponse{Problems: problems}
	for _, r := range rs {
		r.ID = "" // the service assigns ids
		p, err := f.add(rules.ToProto(r))
		if err != nil {
			resp.Problems = append(resp.Problems, status.Convert(err).Message())
			continue
		}
		resp.Imported = append(resp.Imported, p)
	}
	return resp, nil
}

// WatchPrompts streams promptEvents until the caller leaves.
func (f *fakeUI) WatchPrompts(_ *uiv1.WatchPromptsRequest, stream grpc.ServerStreamingServer[uiv1.PromptEvent]) error {
	for {
		select {
		case ev := <-f.promptEvents:
			if err := stream.Send(ev); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (f *fakeUI) AnswerPrompt(_ context.Context, req *uiv1.AnswerPromptRequest) (*uiv1.AnswerPromptResponse, error) {
	f.answers <- req
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.answered[req.GetPromptId()] {
		return nil, status.Errorf(codes.NotFound, "no prompt %s", req.GetPromptId())
	}
	f.answered[req.GetPromptId()] = true
	if req.GetRule().GetLifetime() == rulesv1.Lifetime_LIFETIME_ONCE {
		return &uiv1.AnswerPromptResponse{Rule: req.GetRule()}, nil
	}
	r, err := f.add(req.GetRule())
	if err != nil {
		return nil, err
	}
	return &uiv1.AnswerPromptResponse{Rule: r}, nil
}

func (f *fakeUI) ListDecideLater(context.Context, *uiv1.ListDecideLaterRequest) (*uiv1.ListDecideLaterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &uiv1.ListDecideLaterResponse{Entries: f.later}, nil
}

func (f *fakeUI) ResolveDecideLater(_ context.Context, req *uiv1.ResolveDecideLaterRequest) (*uiv1.ResolveDecideLaterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, e := range f.later {
		if e.GetId() != req.GetId() {
			continue
		}
		f.resolved = append(f.resolved, req)
		f.later = append(f.later[:i], f.later[i+1:]...)
		if req.GetRule() == nil {
			return &uiv1.ResolveDecideLaterResponse{}, nil
		}
		r, err := f.add(req.GetRule())
		if err != nil {
			return nil, err
		}
		return &uiv1.ResolveDecideLaterResponse{Rule: r}, nil
	}
	return nil, status.Errorf(codes.NotFound, "no decide-later entry %s", req.GetId())
}

// WatchHistory sends the history, then waits like the real service does
// for live entries.
func (f *fakeUI) WatchHistory(_ *uiv1.WatchHistoryRequest, stream grpc.ServerStreamingServer[uiv1.HistoryEntry]) error {
	f.mu.Lock()
	h := f.history
	f.mu.Unlock()
	for _, e := range h {
		if err := stream.Send(e); err != nil {
			return err
		}
	}
	<-stream.Context().Done()
	return nil
}

// fakeAgent answers GetStatus only.
type fakeAgent struct {
	agentv1.UnimplementedAgentServiceServer
}

func (fakeAgent) GetStatus(context.Context, *agentv1.GetStatusRequest) (*agentv1.GetStatusResponse, error) {
	return &agentv1.GetStatusResponse{
		Version: "test", Mechanism: "netfilter-link", Features: []string{"netfilter-link", "sockops"},
		FirewallBackend: "nft", QueueNum: 7, FailOpen: true, Pending: 1, CacheEntries: 3,
		Started: timestamppb.New(testNow.Add(-2 * time.Hour)), CallerUid: 1000, WatchedUids: []uint32{1000},
		UdpReuseProtection: "active", DnsQueueNum: 8, DnsNames: 5,
		Counters: &agentv1.Counters{Packets: 10, Allowed: 7, Denied: 2, Rejected: 1, CacheHits: 4, PolicyDecisions: 3,
			ApiDecisions: 2, DeadlineDecisions: 1, Identified: 9, Unidentified: 1, UdpFlowsReleased: 5, UdpReuseRaces: 1,
			DnsAnswers: 12, DnsMalformed: 1, Shed: 900},
		ShareLimits: &agentv1.ShareLimits{HeldPacketsPerUid: 1024, PendingPerUid: 128, HeldPacketsTotal: 4096, PendingTotal: 1024,
			ReservedHeldPacketsPerUid: 64, ReservedPendingPerUid: 16, QueueMaxLen: 16384},
		Shares: []*agentv1.ShareUse{{Uid: 1000, HeldPackets: 1024, Pending: 1, Shed: 900}},
	}, nil
}

// serve starts a gRPC server with register on a Unix socket in dir and
// returns the socket's path.
func serve(t *testing.T, dir, name string, register func(*grpc.Server)) string {
	t.Helper()
	sock := filepath.Join(dir, name)
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return sock
}

// harness runs bastionctl against a fake rules service and, optionally,
// a fake agent.
type harness struct {
	ui                *fakeUI
	uiSock, agentSock string
	dir               string
}

func newHarness(t *testing.T, withUI, withAgent bool) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{ui: newFakeUI(), dir: dir,
		uiSock: filepath.Join(dir, "absent-ui.sock"), agentSock: filepath.Join(dir, "absent-agent.sock")}
	if withUI {
		h.uiSock = serve(t, dir, "ui.sock", func(s *grpc.Server) { uiv1.RegisterUIServiceServer(s, h.ui) })
	}
	if withAgent {
		h.agentSock = serve(t, dir, "agent.sock", func(s *grpc.Server) { agentv1.RegisterAgentServiceServer(s, fakeAgent{}) })
	}
	return h
}

type result struct {
	code           int
	stdout, stderr string
}

func (h *harness) run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	env := h.env(t, strings.NewReader(stdin), &out, &errb)
	code := Run(t.Context(), append([]string{"--ui-socket", h.uiSock, "--agent-socket", h.agentSock}, args...), env)
	// Temporary directories vary; golden files do not.
	clean := func(s string) string { return strings.ReplaceAll(s, h.dir, "DIR") }
	return result{code, clean(out.String()), clean(errb.String())}
}

func (h *harness) env(t *testing.T, in io.Reader, out, errb io.Writer) Env {
	clock := func() time.Time { return testNow }
	return Env{Stdin: in, Stdout: out, Stderr: errb, Getenv: func(string) string { return "" }, UID: 1000,
		now: clock, ruleNow: clock, loc: time.UTC, quiet: 200 * time.Millisecond, promptSys: testPromptSystem(t)}
}

// protoDiff is "" when want and got are equal messages, else both.
func protoDiff[M proto.Message](want, got M) string {
	if proto.Equal(want, got) {
		return ""
	}
	o := prototext.MarshalOptions{Multiline: true}
	return "want:\n" + o.Format(want) + "got:\n" + o.Format(got)
}

func readGolden(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run with -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// testPromptSystem has one parent process (PID 4000, bash), one user
// (1000, alice) and testdata/services.
func testPromptSystem(t *testing.T) *promptSystem {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "services"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	svc, err := procinfo.ParseServices(f)
	if err != nil {
		t.Fatal(err)
	}
	return &promptSystem{
		procFS: fstest.MapFS{
			"4000/exe":  {Data: []byte("/usr/bin/bash"), Mode: fs.ModeSymlink},
			"4000/comm": {Data: []byte("bash\n")},
			"4001/comm": {Data: []byte("sshd\n")},
		},
		lookupUser: func(uid uint32) (string, error) {
			if uid == 1000 {
				return "alice", nil
			}
			return "", errors.New("unknown user")
		},
		services: svc,
	}
}
