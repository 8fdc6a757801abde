package agent

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
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/peercred"
	"github.com/bastion-fw/bastion/internal/rules"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// Version is the agent's version as GetStatus reports it.
const Version = "0.1.0"

// staticStatus is the part of the status fixed at start-up.
type staticStatus struct {
	Mechanism string
	Features  []string
	Backend   string
	QueueNum  uint16
	FailOpen  bool
	NetNS     string
	Started   time.Time
	// DNSQueueNum is the DNS answers' queue; 0 when names are not learnt.
	DNSQueueNum uint16
	// Kernel says whether decisions are made in the kernel.
	Kernel KernelStatus
}

// apiServer serves bastion.agent.v1.AgentService. Every handler reads the
// caller's credentials first; the engine applies them.
type apiServer struct {
	agentv1.UnimplementedAgentServiceServer
	engine *Engine
	status staticStatus
	guard  *udpReuseGuard // nil when unavailable
	reuse  *udpReuseState
	names  *nameBook // nil when names are not learnt
	// kern makes decisions in the kernel; nil when it does not.
	kern kernelCounts
	// traffic is the traffic accounting (traffic.go).
	traffic *trafficAccounting
}

// kernelCounts is what GetStatus reads of internal/kdecide.Kernel.
type kernelCounts interface {
	Stats() (kdecide.Stats, error)
	EntriesFor(uid uint32) (int, error)
}

// newGRPCServer returns a server with the agent service, health and
// reflection, authenticating callers with SO_PEERCRED and bounding what
// each non-root UID may have in flight (apilimits.go). guard and names may
// be nil.
func newGRPCServer(e *Engine, st staticStatus, guard *udpReuseGuard, reuse *udpReuseState, names *nameBook, kern *kdecide.Kernel,
	traffic *trafficAccounting) *grpc.Server {
	lim := newCallLimits(e.log.With("component", "api"))
	s := grpc.NewServer(append(lim.serverOptions(), grpc.Creds(peercred.TransportCredentials()))...)
	api := &apiServer{engine: e, status: st, guard: guard, reuse: reuse, names: names, traffic: traffic}
	if kern != nil { // a nil *Kernel would make a non-nil interface
		api.kern = kern
	}
	agentv1.RegisterAgentServiceServer(s, api)
	hs := health.NewServer()
	hs.SetServingStatus(agentv1.AgentService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	lim.setServices(s.GetServiceInfo())
	return s
}

func caller(ctx context.Context) (peercred.Cred, error) {
	c, err := peercred.FromContext(ctx)
	if err != nil {
		return peercred.Cred{}, status.Error(codes.Unauthenticated, err.Error())
	}
	return c, nil
}

// toStatus maps engine errors to gRPC status codes, in one place.
func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errPermissionDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, errInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errFellBehind):
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func (s *apiServer) WatchPending(_ *agentv1.WatchPendingRequest, stream grpc.ServerStreamingServer[agentv1.PendingEvent]) error {
	c, err := caller(stream.Context())
	if err != nil {
		return err
	}
	feed := s.engine.WatchPending(c)
	defer feed.Cancel()
	return pump(stream, feed, pendingEventToProto)
}

func (s *apiServer) ListPending(ctx context.Context, _ *agentv1.ListPendingRequest) (*agentv1.ListPendingResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	resp := &agentv1.ListPendingResponse{}
	for _, p := range s.engine.ListPending(c) {
		resp.Connections = append(resp.Connections, pendingToProto(p))
	}
	return resp, nil
}

func (s *apiServer) Decide(ctx context.Context, req *agentv1.DecideRequest) (*agentv1.DecideResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	dr, err := decideFromProto(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	n, cacheID, err := s.engine.Decide(c, dr)
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.DecideResponse{Packets: uint32(n), CacheId: cacheID}, nil
}

func (s *apiServer) GetStatus(ctx context.Context, _ *agentv1.GetStatusRequest) (*agentv1.GetStatusResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	uses, limits := s.engine.Shares(c)
	shareUses := make([]*agentv1.ShareUse, 0, len(uses))
	var ownShed uint64
	for _, u := range uses {
		shareUses = append(shareUses, &agentv1.ShareUse{Uid: u.UID, HeldPackets: uint32(u.Held), Pending: uint32(u.Pending), Shed: u.Shed})
		if u.UID == c.UID {
			ownShed = u.Shed
		}
	}
	resp := &agentv1.GetStatusResponse{
		Version:            Version,
		Mechanism:          s.status.Mechanism,
		Features:           s.status.Features,
		FirewallBackend:    s.status.Backend,
		QueueNum:           uint32(s.status.QueueNum),
		FailOpen:           s.status.FailOpen,
		Netns:              s.status.NetNS,
		Started:            timestamppb.New(s.status.Started),
		CallerUid:          c.UID,
		WatchedUids:        s.engine.WatchedUIDs(c),
		UdpReuseProtection: s.reuse.get(),
		DnsQueueNum:        uint32(s.status.DNSQueueNum),
		ShareLimits:        shareLimitsToProto(limits),
		Shares:             shareUses,
		KernelDecisions:    s.kernelDecisions(c),
		TrafficAccounting:  s.trafficAccounting(c),
	}
	// SECURITY: a non-root caller sees the counts of its own UID only;
	// what belongs to no UID (DNS answers, malformed packets, UDP flows)
	// is root's to see.
	if !c.IsRoot() {
		st := s.engine.StatsFor(c)
		k := &st.Counters
		resp.Pending, resp.CacheEntries = uint32(st.Pending), uint32(st.Cache)
		resp.Counters = &agentv1.Counters{
			Packets: k.Packets, Allowed: k.Allowed, Denied: k.Denied, Rejected: k.Rejected,
			CacheHits: k.CacheHits, PolicyDecisions: k.PolicyDecisions, ApiDecisions: k.APIDecisions,
			DeadlineDecisions: k.DeadlineDecisions, Identified: k.Identified, Unidentified: k.Unidentified,
			Shed: ownShed, RuleDecisions: k.RuleDecisions, KernelDecisions: k.KernelDecisions,
			SilentDecisions: k.SilentDecisions, RetransmitDecisions: k.Retransmits, OtherDecisions: k.OtherDecisions,
			HeldPackets: uint64(st.Held),
		}
		return resp, nil
	}
	pendingN, cacheN := s.engine.Stats()
	dnsAnswers, dnsMalformed, dnsNames := s.names.counts()
	k := &s.engine.Counters
	var released, races uint64
	if s.guard != nil {
		released, races = s.guard.Released.Load(), s.guard.Races.Load()
	}
	resp.Pending, resp.CacheEntries, resp.DnsNames = uint32(pendingN), uint32(cacheN), uint32(dnsNames)
	resp.Counters = &agentv1.Counters{
		Packets: k.Packets.Load(), Allowed: k.Allowed.Load(), Denied: k.Denied.Load(), Rejected: k.Rejected.Load(),
		CacheHits: k.CacheHits.Load(), PolicyDecisions: k.PolicyDecisions.Load(), ApiDecisions: k.APIDecisions.Load(),
		DeadlineDecisions: k.DeadlineDecisions.Load(), Identified: k.Identified.Load(), Unidentified: k.Unidentified.Load(),
		Malformed: k.Malformed.Load(), UdpFlowsReleased: released, UdpReuseRaces: races,
		DnsAnswers: dnsAnswers, DnsMalformed: dnsMalformed, Shed: k.Shed.Load(),
		RuleDecisions: k.RuleDecisions.Load(), KernelDecisions: k.KernelDecisions.Load(),
		SilentDecisions: k.SilentDecisions.Load(), RetransmitDecisions: k.Retransmits.Load(), OtherDecisions: k.OtherDecisions.Load(),
		HeldPackets: uint64(s.engine.HeldPackets()),
	}
	return resp, nil
}

// kernelDecisions reports the decisions made in the kernel as c may see
// them.
//
// SECURITY: a non-root caller learns its own UID's remembered decisions
// and last-minute split only; the kernel's counters, which add up every
// UID's, are root's.
func (s *apiServer) kernelDecisions(c peercred.Cred) *agentv1.KernelDecisions {
	kd := &agentv1.KernelDecisions{Mechanism: s.status.Kernel.Mechanism, Reason: s.status.Kernel.Reason}
	kd.LastMinuteKernel, kd.LastMinuteUserspace = s.engine.DecisionSplit(c)
	if s.kern == nil {
		return kd
	}
	if !c.IsRoot() {
		n, err := s.kern.EntriesFor(c.UID)
		if err != nil {
			kd.Reason = err.Error()
		}
		kd.Entries = uint32(n)
		return kd
	}
	st, err := s.kern.Stats()
	if err != nil {
		kd.Reason = err.Error()
	}
	kd.Entries = uint32(st.Entries)
	kd.Allowed, kd.Denied, kd.Rejected, kd.Lost, kd.Packets = st.Allowed, st.Denied, st.Rejected, st.Lost, st.Packets
	return kd
}

// trafficAccounting reports the traffic accounting as c may see it: the
// counts of its own UID's connections unless root.
func (s *apiServer) trafficAccounting(c peercred.Cred) *agentv1.TrafficAccounting {
	if s.traffic == nil {
		return nil
	}
	st := s.traffic.table.stats(c)
	return &agentv1.TrafficAccounting{
		State: s.traffic.State(), Tracked: uint32(st.Tracked), MemoryBytes: st.MemoryBytes,
		Interval: durationpb.New(s.traffic.interval), SamplesSent: st.Sent, SamplesDropped: st.Dropped, Lost: st.Lost,
	}
}

// WatchTraffic streams the traffic samples the caller may see, in batches.
// A caller that falls behind loses samples, counted in the next batch's
// dropped, rather than its stream.
func (s *apiServer) WatchTraffic(_ *agentv1.WatchTrafficRequest, stream grpc.ServerStreamingServer[agentv1.TrafficBatch]) error {
	c, err := caller(stream.Context())
	if err != nil {
		return err
	}
	if s.traffic == nil {
		return status.Error(codes.Unavailable, "traffic accounting is not running in this agent")
	}
	if st := s.traffic.State(); st != trafficActive {
		return status.Errorf(codes.Unavailable, "traffic accounting is %s; see the agent's log", st)
	}
	tt := s.traffic.table
	sub := tt.subscribe(c)
	defer tt.unsubscribe(sub)
	buf := make([]trafficSample, 0, trafficBatchLen)
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-sub.ready:
		}
		var dropped uint64
		buf, dropped = sub.take(buf[:0], trafficBatchLen)
		if len(buf) == 0 && dropped == 0 {
			continue
		}
		batch := &agentv1.TrafficBatch{Samples: make([]*agentv1.TrafficSample, len(buf)), Dropped: dropped}
		for i := range buf {
			batch.Samples[i] = trafficSampleToProto(&buf[i])
		}
		clear(buf)
		if err := stream.Send(batch); err != nil {
			return err
		}
		tt.countSent(sub, len(batch.Samples))
	}
}

func trafficSampleToProto(s *trafficSample) *agentv1.TrafficSample {
	a := s.attr
	return &agentv1.TrafficSample{
		ConnectionId: a.id, FirstSeen: timestamppb.New(a.first), Time: timestamppb.New(s.time),
		Process: apiconv.ProcessProto(a.proc), Flow: apiconv.FlowProto(a.tuple), Host: a.host,
		DecidedBy: a.by, RuleId: a.ruleID,
		BytesSent: s.sentBytes, BytesReceived: s.recvBytes, PacketsSent: s.sentPkts, PacketsReceived: s.recvPkts,
		TotalBytesSent: s.totalSent, TotalBytesReceived: s.totalRecv, Ended: s.ended,
	}
}

func (s *apiServer) WatchDecisions(_ *agentv1.WatchDecisionsRequest, stream grpc.ServerStreamingServer[agentv1.DecisionEvent]) error {
	c, err := caller(stream.Context())
	if err != nil {
		return err
	}
	feed := s.engine.WatchDecisions(c)
	defer feed.Cancel()
	return pump(stream, feed, decisionToProto)
}

// pump sends the engine's events to a stream until the client leaves, or
// the engine drops the subscriber (it fell behind, or the agent stops).
func pump[T any, M any](stream grpc.ServerStreamingServer[M], feed *Feed[T], conv func(T) *M) error {
	// A few events at a time: a client that stops reading blocks Send,
	// and what pump holds then is outside the queue's bounds.
	const batch = 64
	buf := make([]T, 0, batch)
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-feed.Gone():
			return status.Error(codes.ResourceExhausted, "this stream's client fell too far behind (or the agent is stopping); "+
				"its queued events were dropped: reconnect to resume")
		case <-feed.Ready():
			buf = feed.Take(buf[:0], batch)
			for _, ev := range buf {
				if err := stream.Send(conv(ev)); err != nil {
					return err
				}
			}
			clear(buf)
		}
	}
}

func (s *apiServer) ListCache(ctx context.Context, _ *agentv1.ListCacheRequest) (*agentv1.ListCacheResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	resp := &agentv1.ListCacheResponse{}
	for _, ce := range s.engine.ListCache(c) {
		pe := &agentv1.CacheEntry{
			Id: ce.ID, Uid: ce.UID, Exe: ce.Exe, Scope: agentv1.Scope(ce.Scope + 1),
			DstPort: uint32(ce.Port), Action: apiconv.ActionProto(ce.Action), Hits: ce.Hits,
		}
		pe.Protocol, pe.ProtocolNumber = apiconv.ProtoProto(ce.Proto)
		if ce.Dst.IsValid() {
			pe.DstIp = ce.Dst.String()
		}
		if !ce.Expires.IsZero() {
			pe.Expires = timestamppb.New(ce.Expires)
		}
		resp.Entries = append(resp.Entries, pe)
	}
	return resp, nil
}

func (s *apiServer) ForgetCache(ctx context.Context, req *agentv1.ForgetCacheRequest) (*agentv1.ForgetCacheResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	n, err := s.engine.ForgetCache(c, req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.ForgetCacheResponse{Removed: uint32(n)}, nil
}

func (s *apiServer) SetRules(ctx context.Context, req *agentv1.SetRulesRequest) (*agentv1.SetRulesResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	// Authorise before parsing anything the caller sent.
	if _, err := rulesTarget(c, req.Uid); err != nil {
		return nil, toStatus(err)
	}
	sr, err := setRulesFromProto(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	n, err := s.engine.SetRules(c, sr)
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.SetRulesResponse{Active: uint32(n)}, nil
}

// Conversions between the API's types and the engine's, at the boundary.

func decideFromProto(req *agentv1.DecideRequest) (DecideRequest, error) {
	if req.GetId() == "" {
		return DecideRequest{}, errors.New("id is required")
	}
	a := apiconv.Action(req.GetAction())
	if a == flow.ActionNone {
		return DecideRequest{}, errors.New("action must be ACTION_ALLOW, ACTION_DENY or ACTION_REJECT")
	}
	scope := ScopeConnection
	switch sc := req.GetScope(); sc {
	case agentv1.Scope_SCOPE_UNSPECIFIED, agentv1.Scope_SCOPE_CONNECTION:
	case agentv1.Scope_SCOPE_DESTINATION_PORT, agentv1.Scope_SCOPE_DESTINATION, agentv1.Scope_SCOPE_PORT, agentv1.Scope_SCOPE_ANY:
		scope = Scope(sc - 1)
	default:
		return DecideRequest{}, fmt.Errorf("unknown scope %d", sc)
	}
	var life time.Duration
	if d := req.GetLifetime(); d != nil {
		if err := d.CheckValid(); err != nil {
			return DecideRequest{}, fmt.Errorf("lifetime: %w", err)
		}
		if life = d.AsDuration(); life < 0 {
			return DecideRequest{}, errors.New("lifetime must not be negative")
		}
	}
	var reason DecideReason
	switch r := req.GetReason(); r {
	case agentv1.DecideReason_DECIDE_REASON_UNSPECIFIED:
	case agentv1.DecideReason_DECIDE_REASON_DEADLINE:
		reason = ReasonDeadline
	case agentv1.DecideReason_DECIDE_REASON_SILENT:
		reason = ReasonSilent
	default:
		return DecideRequest{}, fmt.Errorf("unknown reason %d", r)
	}
	return DecideRequest{ID: req.GetId(), Action: a, Scope: scope, Lifetime: life, Reason: reason}, nil
}

func setRulesFromProto(req *agentv1.SetRulesRequest) (SetRulesRequest, error) {
	if n := len(req.GetRules()); n > maxRulesPerUID {
		return SetRulesRequest{}, fmt.Errorf("%d rules, at most %d", n, maxRulesPerUID)
	}
	out := SetRulesRequest{UID: req.Uid, Rules: make([]rules.Rule, 0, len(req.GetRules()))}
	// SECURITY: the set's cost is added up as it is read, so that a set
	// over the per-user bounds is refused at the rule that takes it over.
	var budget rules.Budget
	for i, p := range req.GetRules() {
		r, err := rules.FromProto(p)
		if err == nil {
			err = budget.Add(r)
		}
		if err != nil {
			return SetRulesRequest{}, fmt.Errorf("rule %d (id %q): %w", i, p.GetId(), err)
		}
		// Decisions name the rule that made them; the rules service
		// counts hits by that ID.
		if r.ID == "" {
			return SetRulesRequest{}, fmt.Errorf("rule %d: id is required", i)
		}
		out.Rules = append(out.Rules, r)
	}
	return out, nil
}

func pendingToProto(p Pending) *agentv1.PendingConnection {
	out := &agentv1.PendingConnection{
		Id:             p.ID,
		Process:        apiconv.ProcessProto(p.Process),
		Flow:           apiconv.FlowProto(p.Tuple),
		FirstSeen:      timestamppb.New(p.FirstSeen),
		Deadline:       timestamppb.New(p.Deadline),
		DeadlineAction: apiconv.ActionProto(p.DeadlineAction),
		Packets:        uint32(p.Packets),
		Host:           p.Host,
		MoreProcesses:  uint32(p.MoreProcesses),
	}
	for _, q := range p.Processes {
		out.Processes = append(out.Processes, apiconv.ProcessProto(q))
	}
	return out
}

func pendingEventToProto(ev PendingEvent) *agentv1.PendingEvent {
	out := &agentv1.PendingEvent{Connection: pendingToProto(ev.Pending)}
	switch ev.Kind {
	case PendingAdded:
		out.Kind = agentv1.PendingEvent_KIND_ADDED
	case PendingUpdated:
		out.Kind = agentv1.PendingEvent_KIND_UPDATED
	case PendingResolved:
		out.Kind = agentv1.PendingEvent_KIND_RESOLVED
		out.Action = apiconv.ActionProto(ev.Action)
		out.DecidedBy = ev.DecidedBy
	}
	return out
}

func decisionToProto(d Decision) *agentv1.DecisionEvent {
	return &agentv1.DecisionEvent{
		Time:      timestamppb.New(d.Time),
		Process:   apiconv.ProcessProto(d.Process),
		Flow:      apiconv.FlowProto(d.Tuple),
		Action:    apiconv.ActionProto(d.Action),
		DecidedBy: d.DecidedBy,
		RuleId:    d.RuleID,
		Host:      d.Host,
	}
}
