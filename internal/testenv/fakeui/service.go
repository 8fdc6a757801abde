package fakeui

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/rules"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Call is one request that reached the service.
type Call struct {
	Method string
	Req    proto.Message
}

// Service implements uiv1.UIServiceServer in memory. Its state outlives
// the gRPC servers that serve it, so a test can stop serving and serve
// again to look like a restarted rules service.
type Service struct {
	uiv1.UnimplementedUIServiceServer

	mu       sync.Mutex
	calls    []Call
	rules    []*rulesv1.Rule
	prompts  []*uiv1.Prompt
	history  []*uiv1.HistoryEntry
	later    []*uiv1.DecideLaterEntry
	watchers map[chan *uiv1.PromptEvent]bool
	hwatch   map[chan *uiv1.HistoryEntry]bool
	nextID   int
	agentUp  bool
	now      func() time.Time
	// editStatus edits every GetStatus answer (SetStatusEdit).
	editStatus func(*uiv1.GetStatusResponse)
	// ruleErrs are the errors of calls naming a rule (SetRuleError).
	ruleErrs map[string]error
	// pausedUntil is the end of a pause of protection (protection.go).
	pausedUntil time.Time
	// config is what GetConfig answers and SetConfig changes; GetStatus
	// reports it too.
	config *uiv1.UserConfig
	// connErr is what QueryConnections fails with (connections.go).
	connErr error

	// programs are what ListPrograms and GetProgram report (programs.go).
	programs []*Program
}

// ConfigPath is where the fake service says it saves the settings.
const ConfigPath = "/home/alice/.config/bastion/config.toml"

// New returns an empty service whose agent is connected.
func New() *Service {
	return &Service{
		watchers: map[chan *uiv1.PromptEvent]bool{},
		hwatch:   map[chan *uiv1.HistoryEntry]bool{},
		agentUp:  true,
		now:      rules.Now,
		ruleErrs: map[string]error{},
		config: &uiv1.UserConfig{SilentAction: rulesv1.Action_ACTION_DENY, PromptTimeout: durationpb.New(30 * time.Second),
			TimeoutAction: rulesv1.Action_ACTION_REJECT, HistorySize: 1000, HistoryRetention: durationpb.New(30 * 24 * time.Hour)},
	}
}

// Serve serves s on a Unix socket at path until ctx ends. It returns once
// the socket listens; stop waits until the server has stopped.
func (s *Service) Serve(ctx context.Context, path string) (stop func(), err error) {
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	srv := grpc.NewServer()
	uiv1.RegisterUIServiceServer(srv, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	return func() { cancel(); <-done }, nil
}

func (s *Service) record(method string, req proto.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, Call{method, proto.Clone(req)})
}

// Calls returns the requests received so far, oldest first.
func (s *Service) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// CallsTo returns the requests to one method.
func (s *Service) CallsTo(method string) []proto.Message {
	var out []proto.Message
	for _, c := range s.Calls() {
		if c.Method == method {
			out = append(out, c.Req)
		}
	}
	return out
}

// SetAgentConnected sets what GetStatus says about the agent.
func (s *Service) SetAgentConnected(up bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.agentUp = up
}

// SetStatusEdit makes edit change every GetStatus answer after the
// service filled it in, for a test that wants fixed figures.
func (s *Service) SetStatusEdit(edit func(*uiv1.GetStatusResponse)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.editStatus = edit
}

// SetRuleError makes every call naming rule id fail with err, as for a rule
// the caller may not touch.
func (s *Service) SetRuleError(id string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ruleErrs[id] = err
}

// SetClock replaces the clock rules' creation and entry times are read
// from.
func (s *Service) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// newIDLocked returns prefix and 16 hex digits, like the real service's
// IDs, counting up from 1.
func (s *Service) newIDLocked(prefix string) string {
	s.nextID++
	return fmt.Sprintf("%s%016x", prefix, s.nextID)
}

// GetStatus implements uiv1.UIServiceServer.
func (s *Service) GetStatus(context.Context, *uiv1.GetStatusRequest) (*uiv1.GetStatusResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &uiv1.GetStatusResponse{
		Version:        "demo",
		Uid:            1000,
		AgentConnected: s.agentUp,
		PromptClients:  uint32(len(s.watchers)),
		PendingPrompts: uint32(len(s.prompts)),
		Rules:          uint32(len(s.rules)),
		DecideLater:    uint32(len(s.later)),
		SilentAction:   s.config.GetSilentAction(),
		PromptTimeout:  proto.Clone(s.config.GetPromptTimeout()).(*durationpb.Duration),
		TimeoutAction:  s.config.GetTimeoutAction(),
		StorePath:      "/home/alice/.local/share/bastion/rules.db",
	}
	if s.agentUp {
		resp.Agent = &agentv1.GetStatusResponse{
			Version:            "demo",
			Mechanism:          "netfilter-link",
			Features:           []string{"netfilter-link=yes", "sockops=yes"},
			FirewallBackend:    "iptables-nft",
			QueueNum:           4242,
			Started:            timestamppb.New(s.now().Add(-3 * time.Hour)),
			CallerUid:          1000,
			UdpReuseProtection: "active",
			DnsQueueNum:        4243,
			DnsNames:           57,
			KernelDecisions: &agentv1.KernelDecisions{Mechanism: "cgroup-sock-addr+xt-bpf", Entries: 12,
				LastMinuteKernel: 90, LastMinuteUserspace: 10},
		}
	}
	if s.now().Before(s.pausedUntil) {
		resp.PausedUntil = timestamppb.New(s.pausedUntil)
	}
	if s.editStatus != nil {
		s.editStatus(resp)
	}
	return resp, nil
}

// AddRules stores rules as they are, assigning IDs and creation times to
// those without.
func (s *Service) AddRules(rs ...*rulesv1.Rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rs {
		s.addRuleLocked(r)
	}
}

func (s *Service) addRuleLocked(r *rulesv1.Rule) *rulesv1.Rule {
	r = proto.Clone(r).(*rulesv1.Rule)
	if r.GetId() == "" {
		r.Id = s.newIDLocked("")
	}
	if r.GetCreated() == nil {
		r.Created = timestamppb.New(s.now())
	}
	s.rules = append(s.rules, r)
	return r
}

// SetRules replaces the stored rules with rs, exactly as given.
func (s *Service) SetRules(rs ...*rulesv1.Rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules = nil
	for _, r := range rs {
		s.rules = append(s.rules, proto.Clone(r).(*rulesv1.Rule))
	}
}

// Rules returns the stored rules.
func (s *Service) Rules() []*rulesv1.Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*rulesv1.Rule, len(s.rules))
	for i, r := range s.rules {
		out[i] = proto.Clone(r).(*rulesv1.Rule)
	}
	return out
}

// ListRules implements uiv1.UIServiceServer.
func (s *Service) ListRules(_ context.Context, req *uiv1.ListRulesRequest) (*uiv1.ListRulesResponse, error) {
	s.record("ListRules", req)
	return &uiv1.ListRulesResponse{Rules: s.Rules()}, nil
}

func validRule(p *rulesv1.Rule) error {
	if _, err := rules.FromProto(p); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

// addNewLocked stores a rule from a client like the real service: valid,
// not LIFETIME_ONCE, in its wire form read back, with a new ID and the
// clock's time as created.
func (s *Service) addNewLocked(p *rulesv1.Rule) (*rulesv1.Rule, error) {
	r, err := rules.FromProto(p)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if r.Lifetime == rules.Once {
		return nil, status.Error(codes.InvalidArgument, "a once rule cannot be stored")
	}
	p = rules.ToProto(r)
	p.Id, p.Created = "", nil
	return proto.Clone(s.addRuleLocked(p)).(*rulesv1.Rule), nil
}

// AddRule implements uiv1.UIServiceServer.
func (s *Service) AddRule(_ context.Context, req *uiv1.AddRuleRequest) (*uiv1.AddRuleResponse, error) {
	s.record("AddRule", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	// A client-chosen id makes the add idempotent, as in the real service
	// (without its check that the retry says the same).
	if id := req.GetRule().GetId(); id != "" {
		if i := slices.IndexFunc(s.rules, func(r *rulesv1.Rule) bool { return r.GetId() == id }); i >= 0 {
			return &uiv1.AddRuleResponse{Rule: proto.Clone(s.rules[i]).(*rulesv1.Rule)}, nil
		}
	}
	r, err := s.addNewLocked(req.GetRule())
	if err != nil {
		return nil, err
	}
	if id := req.GetRule().GetId(); id != "" {
		s.rules[len(s.rules)-1].Id = id
		r.Id = id
	}
	return &uiv1.AddRuleResponse{Rule: r}, nil
}

func (s *Service) ruleIndexLocked(id string) (int, error) {
	if err := s.ruleErrs[id]; err != nil {
		return 0, err
	}
	i := slices.IndexFunc(s.rules, func(r *rulesv1.Rule) bool { return r.GetId() == id })
	if i < 0 {
		return 0, status.Errorf(codes.NotFound, "no rule %s", id)
	}
	return i, nil
}

// UpdateRule implements uiv1.UIServiceServer.
func (s *Service) UpdateRule(_ context.Context, req *uiv1.UpdateRuleRequest) (*uiv1.UpdateRuleResponse, error) {
	s.record("UpdateRule", req)
	if err := validRule(req.GetRule()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i, err := s.ruleIndexLocked(req.GetRule().GetId())
	if err != nil {
		return nil, err
	}
	old := s.rules[i]
	r := proto.Clone(req.GetRule()).(*rulesv1.Rule)
	r.Created, r.Hits, r.LastHit = old.GetCreated(), old.GetHits(), old.GetLastHit()
	s.rules[i] = r
	return &uiv1.UpdateRuleResponse{Rule: r}, nil
}

// DeleteRule implements uiv1.UIServiceServer.
func (s *Service) DeleteRule(_ context.Context, req *uiv1.DeleteRuleRequest) (*uiv1.DeleteRuleResponse, error) {
	s.record("DeleteRule", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, err := s.ruleIndexLocked(req.GetId())
	if err != nil {
		return nil, err
	}
	s.rules = slices.Delete(s.rules, i, i+1)
	return &uiv1.DeleteRuleResponse{}, nil
}

// SetRuleEnabled implements uiv1.UIServiceServer.
func (s *Service) SetRuleEnabled(_ context.Context, req *uiv1.SetRuleEnabledRequest) (*uiv1.SetRuleEnabledResponse, error) {
	s.record("SetRuleEnabled", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, err := s.ruleIndexLocked(req.GetId())
	if err != nil {
		return nil, err
	}
	s.rules[i].Enabled = req.GetEnabled()
	return &uiv1.SetRuleEnabledResponse{Rule: proto.Clone(s.rules[i]).(*rulesv1.Rule)}, nil
}

func fileFormat(f uiv1.Format) (rules.Format, error) {
	switch f {
	case uiv1.Format_FORMAT_JSON:
		return rules.FormatJSON, nil
	case uiv1.Format_FORMAT_TOML:
		return rules.FormatTOML, nil
	}
	return 0, status.Errorf(codes.InvalidArgument, "format %s not supported", f)
}

// ExportRules implements uiv1.UIServiceServer.
func (s *Service) ExportRules(_ context.Context, req *uiv1.ExportRulesRequest) (*uiv1.ExportRulesResponse, error) {
	s.record("ExportRules", req)
	f, err := fileFormat(req.GetFormat())
	if err != nil {
		return nil, err
	}
	var rs []rules.Rule
	for _, p := range s.Rules() {
		r, err := rules.FromProto(p)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		rs = append(rs, r)
	}
	data, err := rules.Export(rs, f)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &uiv1.ExportRulesResponse{Data: data}, nil
}

// ImportRules implements uiv1.UIServiceServer.
func (s *Service) ImportRules(_ context.Context, req *uiv1.ImportRulesRequest) (*uiv1.ImportRulesResponse, error) {
	s.record("ImportRules", req)
	var (
		rs       []rules.Rule
		problems []string
		err      error
	)
	if req.GetFormat() == uiv1.Format_FORMAT_OPENSNITCH {
		rs, problems, err = rules.ImportOpenSnitch(req.GetData())
	} else {
		var f rules.Format
		if f, err = fileFormat(req.GetFormat()); err != nil {
			return nil, err
		}
		rs, err = rules.Import(req.GetData(), f)
	}
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &uiv1.ImportRulesResponse{Problems: problems}
	for _, r := range rs {
		p, err := s.addNewLocked(rules.ToProto(r))
		if err != nil {
			resp.Problems = append(resp.Problems, status.Convert(err).Message())
			continue
		}
		resp.Imported = append(resp.Imported, p)
		resp.Added++
	}
	return resp, nil
}

// AddPrompt makes p waiting and tells the prompt clients; it assigns an
// ID when p has none and returns it.
func (s *Service) AddPrompt(p *uiv1.Prompt) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p = proto.Clone(p).(*uiv1.Prompt)
	if p.GetId() == "" {
		p.Id = s.newIDLocked("p")
	}
	kind := uiv1.PromptEvent_KIND_ADDED
	if i := slices.IndexFunc(s.prompts, func(q *uiv1.Prompt) bool { return q.GetId() == p.GetId() }); i >= 0 {
		s.prompts[i] = p
		kind = uiv1.PromptEvent_KIND_UPDATED
	} else {
		s.prompts = append(s.prompts, p)
	}
	s.broadcastLocked(&uiv1.PromptEvent{Kind: kind, Prompt: p})
	return p.GetId()
}

// Withdraw removes a waiting prompt, as when it was answered elsewhere
// ("answered") or timed out ("deadline"). It reports whether it was waiting.
func (s *Service) Withdraw(id, reason string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.withdrawLocked(id, reason)
}

func (s *Service) withdrawLocked(id, reason string) bool {
	i := slices.IndexFunc(s.prompts, func(q *uiv1.Prompt) bool { return q.GetId() == id })
	if i < 0 {
		return false
	}
	p := s.prompts[i]
	s.prompts = slices.Delete(s.prompts, i, i+1)
	s.broadcastLocked(&uiv1.PromptEvent{Kind: uiv1.PromptEvent_KIND_WITHDRAWN, Prompt: p, Reason: reason})
	return true
}

// DropPrompt removes a waiting prompt without telling the prompt clients,
// as when another client answered it and the withdrawal is still on its
// way: answering it fails with NotFound. It reports whether it was waiting.
func (s *Service) DropPrompt(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.prompts, func(q *uiv1.Prompt) bool { return q.GetId() == id })
	if i < 0 {
		return false
	}
	s.prompts = slices.Delete(s.prompts, i, i+1)
	return true
}

// Prompts returns the waiting prompts.
func (s *Service) Prompts() []*uiv1.Prompt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.prompts)
}

// PromptClients is the number of connected WatchPrompts streams.
func (s *Service) PromptClients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.watchers)
}

func (s *Service) broadcastLocked(ev *uiv1.PromptEvent) {
	for ch := range s.watchers {
		select {
		case ch <- ev:
		default: // a stuck client misses events rather than blocking the service
		}
	}
}

// WatchPrompts implements uiv1.UIServiceServer.
func (s *Service) WatchPrompts(req *uiv1.WatchPromptsRequest, stream uiv1.UIService_WatchPromptsServer) error {
	s.record("WatchPrompts", req)
	ch := make(chan *uiv1.PromptEvent, 1024)
	s.mu.Lock()
	for _, p := range s.prompts {
		ch <- &uiv1.PromptEvent{Kind: uiv1.PromptEvent_KIND_ADDED, Prompt: p}
	}
	s.watchers[ch] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watchers, ch)
		s.mu.Unlock()
	}()
	for {
		select {
		case ev := <-ch:
			if err := stream.Send(ev); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// AnswerPrompt implements uiv1.UIServiceServer: like the real service, it
// checks that the rule is valid and covers the prompt's connection, and
// stores it unless it is LIFETIME_ONCE.
func (s *Service) AnswerPrompt(_ context.Context, req *uiv1.AnswerPromptRequest) (*uiv1.AnswerPromptResponse, error) {
	s.record("AnswerPrompt", req)
	r, err := rules.FromProto(req.GetRule())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.prompts, func(q *uiv1.Prompt) bool { return q.GetId() == req.GetPromptId() })
	if i < 0 {
		return nil, status.Errorf(codes.NotFound, "prompt %q is not waiting", req.GetPromptId())
	}
	p := s.prompts[i]
	c := rules.Conn{UID: p.GetProcess().GetUid(), Exe: p.GetProcess().GetExe(), Args: p.GetProcess().GetArgs(),
		Tuple: apiconv.Tuple(p.GetFlow()), Host: p.GetHost()}
	if !rules.Covers(r, c) {
		return nil, status.Errorf(codes.InvalidArgument, "the rule does not cover the prompt's connection")
	}
	out := proto.Clone(req.GetRule()).(*rulesv1.Rule)
	if out.GetLifetime() != rulesv1.Lifetime_LIFETIME_ONCE {
		if out, err = s.addNewLocked(out); err != nil {
			return nil, err
		}
	}
	s.history = append(s.history, &uiv1.HistoryEntry{Time: timestamppb.New(s.now()), Process: p.GetProcess(),
		Flow: p.GetFlow(), Host: p.GetHost(), Action: out.GetAction(), DecidedBy: "prompt", RuleId: out.GetId()})
	s.withdrawLocked(p.GetId(), "answered")
	return &uiv1.AnswerPromptResponse{Rule: out}, nil
}

// AddDecideLater adds entries to the decide-later list.
func (s *Service) AddDecideLater(es ...*uiv1.DecideLaterEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range es {
		e = proto.Clone(e).(*uiv1.DecideLaterEntry)
		if e.GetId() == "" {
			e.Id = s.newIDLocked("l")
		}
		s.later = append(s.later, e)
	}
}

// ListDecideLater implements uiv1.UIServiceServer.
func (s *Service) ListDecideLater(_ context.Context, req *uiv1.ListDecideLaterRequest) (*uiv1.ListDecideLaterResponse, error) {
	s.record("ListDecideLater", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	return &uiv1.ListDecideLaterResponse{Entries: slices.Clone(s.later)}, nil
}

// ResolveDecideLater implements uiv1.UIServiceServer.
func (s *Service) ResolveDecideLater(_ context.Context, req *uiv1.ResolveDecideLaterRequest) (*uiv1.ResolveDecideLaterResponse, error) {
	s.record("ResolveDecideLater", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.later, func(e *uiv1.DecideLaterEntry) bool { return e.GetId() == req.GetId() })
	if i < 0 {
		return nil, status.Errorf(codes.NotFound, "no decide-later entry %s", req.GetId())
	}
	resp := &uiv1.ResolveDecideLaterResponse{}
	if req.GetRule() != nil {
		r, err := s.addNewLocked(req.GetRule())
		if err != nil {
			return nil, err
		}
		resp.Rule = r
	}
	s.later = slices.Delete(s.later, i, i+1)
	return resp, nil
}

// AddHistory appends entries to the history and streams them to watchers.
func (s *Service) AddHistory(es ...*uiv1.HistoryEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range es {
		s.history = append(s.history, e)
		for ch := range s.hwatch {
			select {
			case ch <- e:
			default:
			}
		}
	}
}

// WatchHistory implements uiv1.UIServiceServer.
func (s *Service) WatchHistory(req *uiv1.WatchHistoryRequest, stream uiv1.UIService_WatchHistoryServer) error {
	s.record("WatchHistory", req)
	ch := make(chan *uiv1.HistoryEntry, 4096)
	s.mu.Lock()
	// Like the real service, only the config's history_size newest are
	// sent first; QueryConnections finds the older ones.
	for _, e := range s.history[max(0, len(s.history)-int(s.config.GetHistorySize())):] {
		select {
		case ch <- e:
		default:
		}
	}
	s.hwatch[ch] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.hwatch, ch)
		s.mu.Unlock()
	}()
	for {
		select {
		case e := <-ch:
			if err := stream.Send(e); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// GetConfig implements uiv1.UIServiceServer.
func (s *Service) GetConfig(_ context.Context, req *uiv1.GetConfigRequest) (*uiv1.GetConfigResponse, error) {
	s.record("GetConfig", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	return &uiv1.GetConfigResponse{Config: proto.Clone(s.config).(*uiv1.UserConfig), Path: ConfigPath}, nil
}

// SetConfig implements uiv1.UIServiceServer, with the real service's
// range checks.
func (s *Service) SetConfig(_ context.Context, req *uiv1.SetConfigRequest) (*uiv1.SetConfigResponse, error) {
	s.record("SetConfig", req)
	c := req.GetConfig()
	d := c.GetPromptTimeout().AsDuration()
	valid := func(a rulesv1.Action) bool {
		return a >= rulesv1.Action_ACTION_ALLOW && a <= rulesv1.Action_ACTION_REJECT
	}
	if !valid(c.GetSilentAction()) || !valid(c.GetTimeoutAction()) || d < time.Second || d > 24*time.Hour || c.GetHistorySize() > 10000 {
		return nil, status.Error(codes.InvalidArgument, "settings out of range")
	}
	if r := c.GetHistoryRetention(); r != nil && (r.CheckValid() != nil || r.AsDuration() < 24*time.Hour || r.AsDuration() > 366*24*time.Hour) {
		return nil, status.Error(codes.InvalidArgument, "the history retention is out of range: choose from 1 to 366 days")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := s.config.GetHistoryRetention()
	s.config = proto.Clone(c).(*uiv1.UserConfig)
	// A client that does not know the retention leaves it as it is.
	if c.GetHistoryRetention() == nil {
		s.config.HistoryRetention = keep
	}
	return &uiv1.SetConfigResponse{Config: proto.Clone(s.config).(*uiv1.UserConfig), Path: ConfigPath}, nil
}

// ReplaceConfig sets the settings GetConfig answers as they are, as an
// older service's that lacks some.
func (s *Service) ReplaceConfig(c *uiv1.UserConfig) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.config = proto.Clone(c).(*uiv1.UserConfig)
}
