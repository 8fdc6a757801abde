package uiserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/feed"
	"github.com/bastion-fw/bastion/internal/peercred"
	"github.com/bastion-fw/bastion/internal/rules"
	"github.com/bastion-fw/bastion/internal/store"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Version is the service's version as GetStatus reports it.
const Version = "0.1.0"

// Limits on what a client may send.
const (
	// MaxImportBytes caps the data of one ImportRules call.
	MaxImportBytes = 16 << 20
	maxMsgBytes    = MaxImportBytes + 1<<20
	maxStringLen   = 4096
	maxIDLen       = 64
	// agentStatusTimeout bounds the agent call inside GetStatus.
	agentStatusTimeout = 2 * time.Second
)

// apiServer serves bastion.ui.v1.UIService. The interceptors have checked
// the caller before any handler runs.
type apiServer struct {
	uiv1.UnimplementedUIServiceServer
	svc *Service
}

// newGRPCServer returns a server with the UI service, health and
// reflection, open only to the user owner.
func newGRPCServer(svc *Service, owner uint32) *grpc.Server {
	s := grpc.NewServer(
		grpc.Creds(peercred.TransportCredentials()),
		grpc.MaxRecvMsgSize(maxMsgBytes),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := authorizeContext(ctx, owner); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := authorizeContext(ss.Context(), owner); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	uiv1.RegisterUIServiceServer(s, &apiServer{svc: svc})
	hs := health.NewServer()
	hs.SetServingStatus(uiv1.UIService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s
}

// authorize decides whether caller may use the service of user owner.
//
// SECURITY: the rules service acts for one user only. Its rules decide that
// user's connections and its prompts show what that user's programs do, so
// only that user's processes may call it — not other users, and not root
// either (root has the agent's API). The caller's UID comes from
// SO_PEERCRED, read by the kernel when the connection was made.
func authorize(caller peercred.Cred, owner uint32) error {
	if caller.UID != owner {
		return status.Errorf(codes.PermissionDenied, "uid %d may not use the rules service of uid %d", caller.UID, owner)
	}
	return nil
}

func authorizeContext(ctx context.Context, owner uint32) error {
	c, err := peercred.FromContext(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return authorize(c, owner)
}

// toStatus maps the service's errors to gRPC status codes, in one place.
func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errNotFound), errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// checkID rejects empty and oversized identifiers.
func checkID(what, id string) error {
	if id == "" {
		return invalidf("%s is required", what)
	}
	if len(id) > maxIDLen {
		return invalidf("%s is longer than %d bytes", what, maxIDLen)
	}
	return nil
}

// ruleFromAPI converts a client's rule, refusing hostile sizes before any
// parsing (an RE2 expression or glob of megabytes costs memory to compile).
func ruleFromAPI(p *rulesv1.Rule) (rules.Rule, error) {
	if p == nil {
		return rules.Rule{}, invalidf("rule is required")
	}
	for _, f := range []struct{ name, v string }{
		{"id", p.GetId()}, {"exe", p.GetExe()}, {"cmdline", p.GetCmdline()}, {"exe_sha256", p.GetExeSha256()},
		{"dst", p.GetDst()}, {"host", p.GetHost()}, {"note", p.GetNote()},
	} {
		if len(f.v) > maxStringLen {
			return rules.Rule{}, invalidf("rule %s is longer than %d bytes", f.name, maxStringLen)
		}
	}
	r, err := rules.FromProto(p)
	if err != nil {
		return rules.Rule{}, fmt.Errorf("%w: %w", errInvalid, err)
	}
	return r, nil
}

func (a *apiServer) GetStatus(ctx context.Context, _ *uiv1.GetStatusRequest) (*uiv1.GetStatusResponse, error) {
	s := a.svc
	n := s.counts()
	resp := &uiv1.GetStatusResponse{
		Version:        Version,
		Uid:            s.uid,
		AgentConnected: n.agent != nil,
		PromptClients:  uint32(n.promptClients),
		PendingPrompts: uint32(n.prompts),
		Rules:          uint32(n.rules),
		SilentAction:   rules.ActionProto(s.config().SilentAction),
		PromptTimeout:  durationpb.New(s.config().PromptTimeout),
		TimeoutAction:  rules.ActionProto(s.config().TimeoutAction),
		StorePath:      s.store.Path(),
		PausedUntil:    s.pausedUntilProto(),
	}
	if later, err := s.DecideLater(ctx); err == nil {
		resp.DecideLater = uint32(len(later))
	}
	if n.agent != nil {
		actx, cancel := context.WithTimeout(ctx, agentStatusTimeout)
		defer cancel()
		if st, err := n.agent.GetStatus(actx, &agentv1.GetStatusRequest{}); err == nil {
			resp.Agent = st
		} else {
			s.log.Debug("agent status", "err", err)
		}
	}
	return resp, nil
}

func rulesToProto(rs []rules.Rule) []*rulesv1.Rule {
	out := make([]*rulesv1.Rule, len(rs))
	for i, r := range rs {
		out[i] = rules.ToProto(r)
	}
	return out
}

func (a *apiServer) ListRules(ctx context.Context, _ *uiv1.ListRulesRequest) (*uiv1.ListRulesResponse, error) {
	rs, err := a.svc.Rules(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &uiv1.ListRulesResponse{Rules: rulesToProto(rs)}, nil
}

func (a *apiServer) AddRule(ctx context.Context, req *uiv1.AddRuleRequest) (*uiv1.AddRuleResponse, error) {
	r, err := ruleFromAPI(req.GetRule())
	if err != nil {
		return nil, toStatus(err)
	}
	if r, err = a.svc.AddRule(ctx, r); err != nil {
		return nil, toStatus(err)
	}
	return &uiv1.AddRuleResponse{Rule: rules.ToProto(r)}, nil
}

func (a *apiServer) UpdateRule(ctx context.Context, req *uiv1.UpdateRuleRequest) (*uiv1.UpdateRuleResponse, error) {
	r, err := ruleFromAPI(req.GetRule())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := checkID("rule id", r.ID); err != nil {
		return nil, toStatus(err)
	}
	if r, err = a.svc.UpdateRule(ctx, r); err != nil {
		return nil, toStatus(err)
	}
	return &uiv1.UpdateRuleResponse{Rule: rules.ToProto(r)}, nil
}

func (a *apiServer) DeleteRule(ctx context.Context, req *uiv1.DeleteRuleRequest) (*uiv1.DeleteRuleResponse, error) {
	if err := checkID("id", req.GetId()); err != nil {
		return nil, toStatus(err)
	}
	if err := a.svc.DeleteRule(ctx, req.GetId()); err != nil {
		return nil, toStatus(err)
	}
	return &uiv1.DeleteRuleResponse{}, nil
}

func (a *apiServer) SetRuleEnabled(ctx context.Context, req *uiv1.SetRuleEnabledRequest) (*uiv1.SetRuleEnabledResponse, error) {
	if err := checkID("id", req.GetId()); err != nil {
		return nil, toStatus(err)
	}
	r, err := a.svc.SetRuleEnabled(ctx, req.GetId(), req.GetEnabled())
	if err != nil {
		return nil, toStatus(err)
	}
	return &uiv1.SetRuleEnabledResponse{Rule: rules.ToProto(r)}, nil
}

func (a *apiServer) ExportRules(ctx context.Context, req *uiv1.ExportRulesRequest) (*uiv1.ExportRulesResponse, error) {
	var f rules.Format
	switch req.GetFormat() {
	case uiv1.Format_FORMAT_JSON:
		f = rules.FormatJSON
	case uiv1.Format_FORMAT_TOML:
		f = rules.FormatTOML
	default:
		return nil, toStatus(invalidf("export format must be FORMAT_JSON or FORMAT_TOML"))
	}
	data, err := a.svc.Export(ctx, f)
	if err != nil {
		return nil, toStatus(err)
	}
	return &uiv1.ExportRulesResponse{Data: data}, nil
}

func (a *apiServer) ImportRules(ctx context.Context, req *uiv1.ImportRulesRequest) (*uiv1.ImportRulesResponse, error) {
	if len(req.GetData()) > MaxImportBytes {
		return nil, toStatus(invalidf("import data is %d bytes; at most %d are accepted", len(req.GetData()), MaxImportBytes))
	}
	var f importFormat
	switch req.GetFormat() {
	case uiv1.Format_FORMAT_JSON:
		f = importJSON
	case uiv1.Format_FORMAT_TOML:
		f = importTOML
	case uiv1.Format_FORMAT_OPENSNITCH:
		f = importOpenSnitch
	default:
		return nil, toStatus(invalidf("import format must be FORMAT_JSON, FORMAT_TOML or FORMAT_OPENSNITCH"))
	}
	res, err := a.svc.Import(ctx, f, req.GetData())
	if err != nil {
		return nil, toStatus(err)
	}
	return &uiv1.ImportRulesResponse{Imported: rulesToProto(append(res.Added, res.Changed...)), Problems: res.Problems,
		Added: uint32(len(res.Added)), Changed: uint32(len(res.Changed)), Unchanged: uint32(res.Unchanged)}, nil
}

func (a *apiServer) WatchPrompts(_ *uiv1.WatchPromptsRequest, stream grpc.ServerStreamingServer[uiv1.PromptEvent]) error {
	sub := a.svc.subscribePrompts()
	defer a.svc.unsubscribePrompts(sub)
	for {
		ev, err := sub.Next(stream.Context())
		switch {
		case errors.Is(err, feed.ErrClosed):
			return status.Error(codes.ResourceExhausted, "prompt client fell behind; reconnect")
		case err != nil:
			return nil // the client left
		}
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
}

func (a *apiServer) AnswerPrompt(ctx context.Context, req *uiv1.AnswerPromptRequest) (*uiv1.AnswerPromptResponse, error) {
	if err := checkID("prompt_id", req.GetPromptId()); err != nil {
		return nil, toStatus(err)
	}
	r, err := ruleFromAPI(req.GetRule())
	if err != nil {
		return nil, toStatus(err)
	}
	if r, err = a.svc.AnswerPrompt(ctx, req.GetPromptId(), r); err != nil {
		return nil, toStatus(err)
	}
	return &uiv1.AnswerPromptResponse{Rule: rules.ToProto(r)}, nil
}

func (a *apiServer) ListDecideLater(ctx context.Context, _ *uiv1.ListDecideLaterRequest) (*uiv1.ListDecideLaterResponse, error) {
	es, err := a.svc.DecideLater(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &uiv1.ListDecideLaterResponse{}
	for _, e := range es {
		resp.Entries = append(resp.Entries, &uiv1.DecideLaterEntry{
			Id:      e.ID,
			Time:    timestamppb.New(e.Time),
			Process: apiconv.ProcessProto(e.Process),
			Flow:    apiconv.FlowProto(e.Tuple),
			Host:    e.Host,
			Applied: rules.ActionProto(e.Applied),
		})
	}
	return resp, nil
}

func (a *apiServer) ResolveDecideLater(ctx context.Context, req *uiv1.ResolveDecideLaterRequest) (*uiv1.ResolveDecideLaterResponse, error) {
	if err := checkID("id", req.GetId()); err != nil {
		return nil, toStatus(err)
	}
	var rp *rules.Rule
	if pr := req.GetRule(); pr != nil && proto.Size(pr) > 0 {
		r, err := ruleFromAPI(pr)
		if err != nil {
			return nil, toStatus(err)
		}
		rp = &r
	}
	r, err := a.svc.ResolveDecideLater(ctx, req.GetId(), rp)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &uiv1.ResolveDecideLaterResponse{}
	if rp != nil {
		resp.Rule = rules.ToProto(r)
	}
	return resp, nil
}

func (a *apiServer) WatchHistory(_ *uiv1.WatchHistoryRequest, stream grpc.ServerStreamingServer[uiv1.HistoryEntry]) error {
	past, sub, err := a.svc.subscribeHistory(stream.Context())
	if err != nil {
		return toStatus(err)
	}
	defer a.svc.unsubscribeHistory(sub)
	for _, e := range past {
		if err := stream.Send(historyProto(e)); err != nil {
			return err
		}
	}
	for {
		e, err := sub.Next(stream.Context())
		switch {
		case errors.Is(err, feed.ErrClosed):
			return status.Error(codes.ResourceExhausted, "history client fell behind; reconnect")
		case err != nil:
			return nil // the client left
		}
		if err := stream.Send(e); err != nil {
			return err
		}
	}
}
