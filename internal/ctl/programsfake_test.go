package ctl

import (
	"context"
	"path"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/desktopentry"
	"github.com/bastion-fw/bastion/internal/testenv/fakeui"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// programsUI is the fake rules service with the programs view: its
// programs, destinations, charts and stored connections are fixed, and it
// records the requests it gets.
type programsUI struct {
	*fakeui.Service

	mu            sync.Mutex
	programs      []*uiv1.ProgramSummary
	dests         map[string][]*uiv1.Destination
	rules         map[string][]*rulesv1.Rule
	entries       []*uiv1.HistoryEntry
	unimplemented bool
	listReqs      []*uiv1.ListProgramsRequest
	getReqs       []*uiv1.GetProgramRequest
	queryReqs     []*uiv1.QueryConnectionsRequest
	// now and loc are the service's clock and time zone ("today").
	now time.Time
	loc *time.Location
}

func before(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(testNow.Add(-d)) }

// shifted is ts moved by d.
func shifted(ts *timestamppb.Timestamp, d time.Duration) *timestamppb.Timestamp {
	return timestamppb.New(ts.AsTime().Add(d))
}

// moveTo moves every time of p's data so that testNow becomes now, in
// loc.
func (p *programsUI) moveTo(now time.Time, loc *time.Location) {
	d := now.Sub(testNow)
	p.now, p.loc = now, loc
	for _, s := range p.programs {
		s.LastActivity = shifted(s.LastActivity, d)
	}
	for _, ds := range p.dests {
		for _, x := range ds {
			x.FirstSeen, x.LastSeen = shifted(x.FirstSeen, d), shifted(x.LastSeen, d)
		}
	}
	for _, rs := range p.rules {
		for _, r := range rs {
			r.LastHit = shifted(r.LastHit, d)
		}
	}
}

// testPrograms: Firefox (with a desktop entry), two curls, and nc known
// only by its comm; the second curl was last active yesterday.
func testPrograms() []*uiv1.ProgramSummary {
	return []*uiv1.ProgramSummary{
		{Exe: "/usr/lib/firefox-esr/firefox-esr", Comm: "firefox-esr", Allowed: 120, Denied: 3, Destinations: 14,
			BytesSent: 1_234_000, BytesReceived: 45_300_000, LastActivity: before(2 * time.Minute), Rules: 2},
		{Exe: "/usr/bin/curl", Comm: "curl", Allowed: 5, Destinations: 2, BytesSent: 3400, BytesReceived: 2_100_000_000,
			LastActivity: before(3 * time.Hour), Rules: 1},
		{Exe: "/opt/tools/curl", Comm: "curl", Allowed: 1, Denied: 4, Destinations: 1, LastActivity: before(26 * time.Hour)},
		{Comm: "nc", Denied: 2, Destinations: 1, LastActivity: before(10 * time.Minute)},
	}
}

// testApps has Firefox's desktop entry.
func testApps() *desktopentry.Index {
	idx := desktopentry.New()
	idx.AddDir(fstest.MapFS{"firefox-esr.desktop": {Data: []byte("[Desktop Entry]\nType=Application\nName=Firefox ESR\n" +
		"Icon=firefox-esr\nExec=/usr/lib/firefox-esr/firefox-esr %u\n")}})
	return idx
}

func newProgramsUI() *programsUI {
	return &programsUI{
		now:      testNow,
		loc:      time.UTC,
		Service:  newFakeUI(),
		programs: testPrograms(),
		dests: map[string][]*uiv1.Destination{
			"/usr/lib/firefox-esr/firefox-esr": {
				{Host: "example.com", Address: "93.184.216.34", Protocol: agentv1.Protocol_PROTOCOL_TCP, Port: 443, Allowed: 80,
					BytesSent: 1_000_000, BytesReceived: 40_000_000, FirstSeen: before(50 * time.Hour), LastSeen: before(2 * time.Minute),
					DecidedBy: "rule:00000000000000aa", RuleId: "00000000000000aa", LastAction: rulesv1.Action_ACTION_ALLOW},
				{Address: "192.0.2.9", Protocol: agentv1.Protocol_PROTOCOL_UDP, Port: 53, Allowed: 30, BytesSent: 4000, BytesReceived: 9000,
					FirstSeen: before(5 * time.Hour), LastSeen: before(20 * time.Minute), DecidedBy: "prompt", LastAction: rulesv1.Action_ACTION_ALLOW},
				{Host: "example.com", Address: "93.184.216.34", Protocol: agentv1.Protocol_PROTOCOL_UDP, Port: 443, Allowed: 10,
					BytesSent: 230_000, BytesReceived: 5_300_000, FirstSeen: before(3 * time.Hour), LastSeen: before(time.Hour),
					DecidedBy: "rule:00000000000000aa", RuleId: "00000000000000aa", LastAction: rulesv1.Action_ACTION_ALLOW},
				{Host: "tracker.example", Address: "198.51.100.7", Protocol: agentv1.Protocol_PROTOCOL_TCP, Port: 443, Denied: 3,
					FirstSeen: before(4 * time.Hour), LastSeen: before(90 * time.Minute), DecidedBy: "rule:00000000000000bb",
					RuleId: "00000000000000bb", LastAction: rulesv1.Action_ACTION_REJECT},
			},
		},
		rules: map[string][]*rulesv1.Rule{
			"/usr/lib/firefox-esr/firefox-esr": {
				{Id: "00000000000000aa", Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: "/usr/lib/firefox-esr/firefox-esr",
					Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER, Hits: 90, LastHit: before(2 * time.Minute)},
				{Id: "00000000000000bb", Enabled: true, Action: rulesv1.Action_ACTION_REJECT, Exe: "/usr/lib/firefox-esr/firefox-esr",
					Host: "tracker.example", Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER, Hits: 3, LastHit: before(90 * time.Minute)},
			},
		},
	}
}

// serveProgramsUI serves p as h's rules service.
func serveProgramsUI(t *testing.T, h *harness, p *programsUI) {
	t.Helper()
	h.ui = p.Service
	h.uiSock = serve(t, h.dir, "programs-ui.sock", func(s *grpc.Server) { uiv1.RegisterUIServiceServer(s, p) })
	h.apps = testApps()
}

func (p *programsUI) ListPrograms(_ context.Context, req *uiv1.ListProgramsRequest) (*uiv1.ListProgramsResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.listReqs = append(p.listReqs, proto.Clone(req).(*uiv1.ListProgramsRequest))
	if p.unimplemented {
		return nil, status.Error(codes.Unimplemented, "unknown method ListPrograms for service bastion.ui.v1.UIService")
	}
	now := p.now.In(p.loc)
	since := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, p.loc)
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	}
	resp := &uiv1.ListProgramsResponse{Since: timestamppb.New(since)}
	for _, s := range p.programs {
		if !s.GetLastActivity().AsTime().Before(since) {
			resp.Programs = append(resp.Programs, s)
		}
	}
	return resp, nil
}

// find resolves a program as the API says: a path, or a name (comm or
// the path's last element) that names exactly one program.
func (p *programsUI) find(name string) (*uiv1.ProgramSummary, error) {
	var found []*uiv1.ProgramSummary
	for _, s := range p.programs {
		if s.GetExe() == name || (s.GetExe() != "" && path.Base(s.GetExe()) == name) || (s.GetExe() == "" && s.GetComm() == name) {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return nil, status.Errorf(codes.NotFound, "no program %q", name)
	case 1:
		return found[0], nil
	}
	return nil, status.Errorf(codes.FailedPrecondition, "%q names %d programs", name, len(found))
}

// testChart is every bucket of r ending at testNow, with traffic in a few:
// the last bucket holds the peak, the one 10 buckets back half of it.
func testChart(r uiv1.ChartRange, now time.Time) ([]*uiv1.TrafficBucket, time.Duration) {
	n, d := 96, 15*time.Minute
	switch r {
	case uiv1.ChartRange_CHART_RANGE_HOUR:
		n, d = 60, time.Minute
	case uiv1.ChartRange_CHART_RANGE_WEEK:
		n, d = 168, time.Hour
	}
	end := now.Truncate(d).Add(d)
	out := make([]*uiv1.TrafficBucket, n)
	for i := range out {
		out[i] = &uiv1.TrafficBucket{Start: timestamppb.New(end.Add(-time.Duration(n-i) * d))}
	}
	out[n-1].BytesSent, out[n-1].BytesReceived, out[n-1].Allowed = 1_000_000, 9_000_000, 8
	out[n-11].BytesReceived, out[n-11].Allowed, out[n-11].Denied = 5_000_000, 4, 2
	out[n/2].BytesSent, out[n/2].Allowed = 1, 1 // a single byte still shows
	out[3].Denied = 1
	return out, d
}

func (p *programsUI) GetProgram(_ context.Context, req *uiv1.GetProgramRequest) (*uiv1.GetProgramResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.getReqs = append(p.getReqs, proto.Clone(req).(*uiv1.GetProgramRequest))
	if p.unimplemented {
		return nil, status.Error(codes.Unimplemented, "unknown method GetProgram for service bastion.ui.v1.UIService")
	}
	s, err := p.find(req.GetProgram())
	if err != nil {
		return nil, err
	}
	r := req.GetRange()
	if r == uiv1.ChartRange_CHART_RANGE_UNSPECIFIED {
		r = uiv1.ChartRange_CHART_RANGE_DAY
	}
	chart, d := testChart(r, p.now)
	return &uiv1.GetProgramResponse{Program: s, Rules: p.rules[s.GetExe()], Destinations: p.dests[s.GetExe()],
		Chart: chart, Bucket: durationpb.New(d)}, nil
}

func (p *programsUI) QueryConnections(_ context.Context, req *uiv1.QueryConnectionsRequest) (*uiv1.QueryConnectionsResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queryReqs = append(p.queryReqs, proto.Clone(req).(*uiv1.QueryConnectionsRequest))
	if p.unimplemented {
		return nil, status.Error(codes.Unimplemented, "unknown method QueryConnections for service bastion.ui.v1.UIService")
	}
	if name := req.GetFilter().GetProgram(); name != "" {
		if _, err := p.find(name); err != nil {
			return nil, err
		}
	}
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = 1000
	}
	resp := &uiv1.QueryConnectionsResponse{Entries: p.entries}
	if len(p.entries) > limit {
		resp.Entries, resp.Truncated = p.entries[:limit], true
	}
	return resp, nil
}

func (p *programsUI) lastList() *uiv1.ListProgramsRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.listReqs[len(p.listReqs)-1]
}

func (p *programsUI) lastGet() *uiv1.GetProgramRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.getReqs) == 0 {
		return nil
	}
	return p.getReqs[len(p.getReqs)-1]
}

func (p *programsUI) lastQuery() *uiv1.QueryConnectionsRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queryReqs) == 0 {
		return nil
	}
	return p.queryReqs[len(p.queryReqs)-1]
}
