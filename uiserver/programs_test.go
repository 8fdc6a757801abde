package uiserver

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/apiconv"
	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/store"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

const (
	browser = "/usr/lib/browser/browser"
	fetcher = "/usr/bin/fetcher"
)

func agentProc(uid uint32, exe string, tgid uint32) *agentv1.Process {
	return &agentv1.Process{Pid: tgid, Tgid: tgid, Uid: uid, Comm: filepath.Base(exe), Exe: exe, Args: []string{exe, "--go"}}
}

func agentFlow(proto agentv1.Protocol, dst string, dport, sport uint32) *agentv1.Flow {
	return &agentv1.Flow{Protocol: proto, IpVersion: 4, SrcIp: "10.0.0.1", SrcPort: sport, DstIp: dst, DstPort: dport}
}

// decide emits a decision of the fake agent's WatchDecisions stream.
func (h *harness) decide(at time.Time, uid uint32, exe string, tgid uint32, f *agentv1.Flow, host string, a agentv1.Action, ruleID string) {
	by := "prompt"
	if ruleID != "" {
		by = "rule:" + ruleID
	}
	h.agent.emitDecision(&agentv1.DecisionEvent{Time: timestamppb.New(at), Process: agentProc(uid, exe, tgid), Flow: f, Host: host,
		Action: a, DecidedBy: by, RuleId: ruleID})
}

func sample(at time.Time, uid uint32, exe string, f *agentv1.Flow, host string, sent, recv uint64) *agentv1.TrafficSample {
	return &agentv1.TrafficSample{ConnectionId: "c", Time: timestamppb.New(at), FirstSeen: timestamppb.New(at.Add(-time.Second)),
		Process: agentProc(uid, exe, 1), Flow: f, Host: host, BytesSent: sent, BytesReceived: recv, PacketsSent: 1, PacketsReceived: 1}
}

func (h *harness) waitTrafficWatched(calls int) {
	h.t.Helper()
	waitFor(h.t, "the service to watch traffic", func() bool {
		open, n := h.agent.trafficWatching()
		return open > 0 && n >= calls
	})
}

// waitAllowedDenied waits until ListPrograms counts allowed and denied
// connections of exe since since, and returns its summary.
func (h *harness) waitAllowedDenied(since time.Time, exe string, allowed, denied uint64) *uiv1.ProgramSummary {
	h.t.Helper()
	var got *uiv1.ProgramSummary
	waitFor(h.t, "the decisions of "+exe+" to be counted", func() bool {
		resp, err := h.ui.ListPrograms(context.Background(), &uiv1.ListProgramsRequest{Since: timestamppb.New(since)})
		if err != nil {
			h.t.Fatal(err)
		}
		for _, p := range resp.GetPrograms() {
			if p.GetExe() == exe {
				got = p
				return p.GetAllowed() == allowed && p.GetDenied() == denied
			}
		}
		return false
	})
	return got
}

// TestProgramsViewCountsBytesAndCharts drives decisions and traffic
// through the fake agent, and checks the programs view: counts, bytes per
// program and destination, rules, and charts with their empty buckets.
// Another user's decisions and samples are not counted.
func TestProgramsViewCountsBytesAndCharts(t *testing.T) {
	h := newHarness(t, nil)
	h.waitTrafficWatched(1)
	ctx := context.Background()
	now := time.Now()
	since := now.Add(-time.Hour)
	web := agentFlow(agentv1.Protocol_PROTOCOL_TCP, "192.0.2.10", 443, 40001)
	dns := agentFlow(agentv1.Protocol_PROTOCOL_UDP, "192.0.2.53", 53, 40002)
	other := agentFlow(agentv1.Protocol_PROTOCOL_TCP, "198.51.100.7", 80, 40003)

	// Rules: one names the browser, a glob names both, one names any
	// program (it names neither).
	for _, r := range []*rulesv1.Rule{
		forever(rulesv1.Action_ACTION_ALLOW, browser),
		forever(rulesv1.Action_ACTION_DENY, "/usr/**"),
		{Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Host: "example.com", Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER},
	} {
		if _, err := h.ui.AddRule(ctx, &uiv1.AddRuleRequest{Rule: r}); err != nil {
			t.Fatal(err)
		}
	}

	h.decide(now.Add(-20*time.Minute), h.uid, browser, 11, web, "example.com", agentv1.Action_ACTION_ALLOW, "")
	h.decide(now.Add(-10*time.Minute), h.uid, browser, 12, web, "example.com", agentv1.Action_ACTION_ALLOW, "")
	h.decide(now.Add(-5*time.Minute), h.uid, browser, 13, dns, "", agentv1.Action_ACTION_DENY, "")
	h.decide(now.Add(-2*time.Minute), h.uid, fetcher, 14, other, "", agentv1.Action_ACTION_REJECT, "")
	h.decide(now.Add(-2*time.Minute), h.uid+1, browser, 15, web, "example.com", agentv1.Action_ACTION_ALLOW, "") // not ours
	h.agent.emitTraffic(
		sample(now.Add(-10*time.Minute), h.uid, browser, web, "example.com", 1500, 2_000_000),
		sample(now.Add(-time.Minute), h.uid, browser, web, "example.com", 500, 1_000_000),
		sample(now.Add(-time.Minute), h.uid+1, browser, web, "example.com", 1<<30, 1<<30), // not ours
	)
	h.waitAllowedDenied(since, browser, 2, 1)
	waitFor(t, "the browser's bytes", func() bool {
		resp, err := h.ui.GetProgram(ctx, &uiv1.GetProgramRequest{Program: browser, Since: timestamppb.New(since)})
		return err == nil && resp.GetProgram().GetBytesReceived() == 3_000_000
	})
	p := h.waitAllowedDenied(since, browser, 2, 1)
	if p.GetDestinations() != 2 || p.GetRules() != 2 || p.GetComm() != "browser" || p.GetBytesSent() != 2000 ||
		!p.GetLastActivity().AsTime().Equal(now.Add(-time.Minute).UTC()) {
		t.Errorf("browser summary = %v", p)
	}
	if f := h.waitAllowedDenied(since, fetcher, 0, 1); f.GetRules() != 1 || f.GetBytesSent() != 0 || f.GetDestinations() != 1 {
		t.Errorf("fetcher summary = %v", f)
	}

	// The detail, by name.
	resp, err := h.ui.GetProgram(ctx, &uiv1.GetProgramRequest{Program: "browser", Range: uiv1.ChartRange_CHART_RANGE_HOUR, Since: timestamppb.New(since)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetRules()) != 2 || resp.GetRules()[0].GetExe() != browser || resp.GetRules()[1].GetExe() != "/usr/**" {
		t.Errorf("rules = %v, want the browser's and the glob", resp.GetRules())
	}
	ds := resp.GetDestinations()
	if len(ds) != 2 {
		t.Fatalf("destinations = %v", ds)
	}
	if d := ds[0]; d.GetHost() != "example.com" || d.GetAddress() != "192.0.2.10" || d.GetPort() != 443 ||
		d.GetProtocol() != agentv1.Protocol_PROTOCOL_TCP || d.GetAllowed() != 2 || d.GetBytesSent() != 2000 || d.GetBytesReceived() != 3_000_000 ||
		d.GetLastAction() != rulesv1.Action_ACTION_ALLOW || d.GetDecidedBy() != "prompt" {
		t.Errorf("example.com = %v", d)
	}
	if d := ds[1]; d.GetHost() != "" || d.GetAddress() != "192.0.2.53" || d.GetProtocol() != agentv1.Protocol_PROTOCOL_UDP ||
		d.GetDenied() != 1 || d.GetBytesSent() != 0 || d.GetLastAction() != rulesv1.Action_ACTION_DENY {
		t.Errorf("the DNS server = %v", d)
	}
	// The hour chart: 60 minutes, every one present, the bytes in theirs.
	chart := resp.GetChart()
	if len(chart) != 60 || resp.GetBucket().AsDuration() != time.Minute {
		t.Fatalf("hour chart: %d buckets of %s", len(chart), resp.GetBucket().AsDuration())
	}
	var empty int
	var recv uint64
	for i, b := range chart {
		if i > 0 && b.GetStart().AsTime().Sub(chart[i-1].GetStart().AsTime()) != time.Minute {
			t.Fatalf("bucket %d starts at %s, after %s", i, b.GetStart().AsTime(), chart[i-1].GetStart().AsTime())
		}
		if b.GetBytesReceived() == 0 && b.GetAllowed() == 0 && b.GetDenied() == 0 {
			empty++
		}
		recv += b.GetBytesReceived()
		if start := b.GetStart().AsTime(); !now.Add(-10*time.Minute).Before(start) && now.Add(-10*time.Minute).Before(start.Add(time.Minute)) &&
			(b.GetBytesReceived() != 2_000_000 || b.GetAllowed() != 1) {
			t.Errorf("the bucket of ten minutes ago = %v", b)
		}
	}
	if recv != 3_000_000 || empty < 55 {
		t.Errorf("hour chart: %d bytes received, %d empty buckets", recv, empty)
	}
	for rng, n := range map[uiv1.ChartRange]int{uiv1.ChartRange_CHART_RANGE_UNSPECIFIED: 96, uiv1.ChartRange_CHART_RANGE_DAY: 96, uiv1.ChartRange_CHART_RANGE_WEEK: 168} {
		resp, err := h.ui.GetProgram(ctx, &uiv1.GetProgramRequest{Program: browser, Range: rng})
		if err != nil {
			t.Fatal(err)
		}
		var recv uint64
		for _, b := range resp.GetChart() {
			recv += b.GetBytesReceived()
		}
		if len(resp.GetChart()) != n || recv != 3_000_000 {
			t.Errorf("range %v: %d buckets with %d bytes, want %d buckets with 3000000", rng, len(resp.GetChart()), recv, n)
		}
	}
}

// TestQueryConnections filters the stored history, and refuses hostile
// requests with messages that say what was wrong.
func TestQueryConnections(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	now := time.Now()
	web := agentFlow(agentv1.Protocol_PROTOCOL_TCP, "192.0.2.10", 443, 40001)
	h.decide(now.Add(-3*time.Hour), h.uid, browser, 11, web, "example.com", agentv1.Action_ACTION_ALLOW, "")
	h.decide(now.Add(-2*time.Hour), h.uid, browser, 12, web, "tracker.example", agentv1.Action_ACTION_REJECT, "r9")
	h.decide(now.Add(-time.Hour), h.uid, fetcher, 13, agentFlow(agentv1.Protocol_PROTOCOL_TCP, "198.51.100.7", 80, 40003), "", agentv1.Action_ACTION_DENY, "")
	h.decide(now.Add(-time.Hour), h.uid, "/opt/other/fetcher", 14, web, "", agentv1.Action_ACTION_ALLOW, "")
	waitFor(t, "the decisions to be recorded", func() bool {
		resp, err := h.ui.QueryConnections(ctx, &uiv1.QueryConnectionsRequest{})
		return err == nil && len(resp.GetEntries()) == 4
	})
	hosts := func(f *uiv1.ConnectionFilter, limit uint32) ([]string, bool) {
		t.Helper()
		resp, err := h.ui.QueryConnections(ctx, &uiv1.QueryConnectionsRequest{Filter: f, Limit: limit})
		if err != nil {
			t.Fatalf("filter %v: %v", f, err)
		}
		var out []string
		for _, e := range resp.GetEntries() {
			out = append(out, e.GetHost()+"@"+e.GetFlow().GetDstIp())
		}
		return out, resp.GetTruncated()
	}
	for _, tc := range []struct {
		f    *uiv1.ConnectionFilter
		want []string
	}{
		{&uiv1.ConnectionFilter{Program: "browser"}, []string{"tracker.example@192.0.2.10", "example.com@192.0.2.10"}},
		{&uiv1.ConnectionFilter{Program: "/usr/bin/fetcher"}, []string{"@198.51.100.7"}},
		{&uiv1.ConnectionFilter{Host: "example"}, []string{"tracker.example@192.0.2.10", "example.com@192.0.2.10"}},
		{&uiv1.ConnectionFilter{Action: rulesv1.Action_ACTION_DENY}, []string{"@198.51.100.7", "tracker.example@192.0.2.10"}},
		{&uiv1.ConnectionFilter{Action: rulesv1.Action_ACTION_REJECT}, []string{"tracker.example@192.0.2.10"}},
		{&uiv1.ConnectionFilter{Since: timestamppb.New(now.Add(-150 * time.Minute)), Until: timestamppb.New(now.Add(-90 * time.Minute))}, []string{"tracker.example@192.0.2.10"}},
		{&uiv1.ConnectionFilter{RuleId: "r9"}, []string{"tracker.example@192.0.2.10"}},
		{&uiv1.ConnectionFilter{Text: "/opt/other"}, []string{"@192.0.2.10"}},
	} {
		if got, truncated := hosts(tc.f, 0); !slices.Equal(got, tc.want) || truncated {
			t.Errorf("filter %v: %q (truncated %v), want %q", tc.f, got, truncated, tc.want)
		}
	}
	if got, truncated := hosts(nil, 2); len(got) != 2 || !truncated {
		t.Errorf("limit 2: %q, truncated %v", got, truncated)
	}

	long := strings.Repeat("x", maxStringLen+1)
	for _, tc := range []struct {
		req  *uiv1.QueryConnectionsRequest
		code codes.Code
		msg  string
	}{
		{&uiv1.QueryConnectionsRequest{Limit: maxQueryLimit + 1}, codes.InvalidArgument, "at most 100000"},
		{&uiv1.QueryConnectionsRequest{Limit: 1<<32 - 1}, codes.InvalidArgument, "too large"},
		{&uiv1.QueryConnectionsRequest{Filter: &uiv1.ConnectionFilter{Since: timestamppb.New(now), Until: timestamppb.New(now.Add(-time.Hour))}}, codes.InvalidArgument, "ends"},
		{&uiv1.QueryConnectionsRequest{Filter: &uiv1.ConnectionFilter{Since: &timestamppb.Timestamp{Seconds: 1, Nanos: -5}}}, codes.InvalidArgument, "not a valid time"},
		{&uiv1.QueryConnectionsRequest{Filter: &uiv1.ConnectionFilter{Until: timestamppb.New(time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC))}}, codes.InvalidArgument, "out of range"},
		{&uiv1.QueryConnectionsRequest{Filter: &uiv1.ConnectionFilter{Since: timestamppb.New(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC))}}, codes.InvalidArgument, "out of range"},
		{&uiv1.QueryConnectionsRequest{Filter: &uiv1.ConnectionFilter{Program: "nosuchprogram"}}, codes.NotFound, "no program"},
		{&uiv1.QueryConnectionsRequest{Filter: &uiv1.ConnectionFilter{Program: "fetcher"}}, codes.InvalidArgument, "/opt/other/fetcher"},
		{&uiv1.QueryConnectionsRequest{Filter: &uiv1.ConnectionFilter{Program: long}}, codes.InvalidArgument, "longer"},
		{&uiv1.QueryConnectionsRequest{Filter: &uiv1.ConnectionFilter{Text: long}}, codes.InvalidArgument, "longer"},
		{&uiv1.QueryConnectionsRequest{Filter: &uiv1.ConnectionFilter{Action: 77}}, codes.InvalidArgument, "unknown action"},
	} {
		_, err := h.ui.QueryConnections(ctx, tc.req)
		if code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("QueryConnections(%v) = %v, want %v with %q", tc.req, err, tc.code, tc.msg)
		}
	}
	for _, tc := range []struct {
		req  *uiv1.GetProgramRequest
		code codes.Code
		msg  string
	}{
		{&uiv1.GetProgramRequest{}, codes.InvalidArgument, "no program given"},
		{&uiv1.GetProgramRequest{Program: "fetcher"}, codes.InvalidArgument, "names 2 programs"},
		{&uiv1.GetProgramRequest{Program: "/usr/bin/nothing"}, codes.NotFound, "no program"},
		{&uiv1.GetProgramRequest{Program: browser, Range: 42}, codes.InvalidArgument, "chart range"},
		{&uiv1.GetProgramRequest{Program: browser, Since: &timestamppb.Timestamp{Seconds: -1 << 40}}, codes.InvalidArgument, "since"},
	} {
		_, err := h.ui.GetProgram(ctx, tc.req)
		if code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("GetProgram(%v) = %v, want %v with %q", tc.req, err, tc.code, tc.msg)
		}
	}
	if _, err := h.ui.ListPrograms(ctx, &uiv1.ListProgramsRequest{Since: &timestamppb.Timestamp{Seconds: 1 << 40}}); code(err) != codes.InvalidArgument {
		t.Errorf("ListPrograms in the year 30000: %v", err)
	}
	// A since in the future is no error: nothing happened since then.
	if resp, err := h.ui.ListPrograms(ctx, &uiv1.ListProgramsRequest{Since: timestamppb.New(now.Add(time.Hour))}); err != nil || len(resp.GetPrograms()) != 0 {
		t.Errorf("ListPrograms since an hour ahead: %v, %v", resp, err)
	}
}

// TestTrafficStreamFailsAndComesBack: when the agent's traffic stream
// fails, the service watches it again without dropping the link (the
// decisions stream stays), and counts the bytes that follow.
func TestTrafficStreamFailsAndComesBack(t *testing.T) {
	h := newHarness(t, nil)
	h.waitTrafficWatched(1)
	ctx := context.Background()
	now := time.Now()
	web := agentFlow(agentv1.Protocol_PROTOCOL_TCP, "192.0.2.10", 443, 40001)
	h.agent.emitTraffic(sample(now, h.uid, browser, web, "example.com", 100, 1000))
	bytes := func() uint64 {
		resp, err := h.ui.GetProgram(ctx, &uiv1.GetProgramRequest{Program: browser})
		if code(err) == codes.NotFound {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetProgram().GetBytesReceived()
	}
	waitFor(t, "the first sample's bytes", func() bool { return bytes() == 1000 })

	h.agent.failTraffic(status.Error(codes.Internal, "conntrack went away"))
	h.waitTrafficWatched(2)
	h.agent.emitTraffic(sample(now, h.uid, browser, web, "example.com", 100, 234))
	waitFor(t, "the bytes after the stream came back", func() bool { return bytes() == 1234 })
	h.agent.mu.Lock()
	decisionWatches := h.agent.decisionWatches
	h.agent.mu.Unlock()
	if decisionWatches != 1 {
		t.Errorf("the decisions were watched %d times: the traffic stream's failure reset the link", decisionWatches)
	}
	// Once more: it comes back every time.
	h.agent.failTraffic(status.Error(codes.Unavailable, "again"))
	h.waitTrafficWatched(3)
}

// TestAgentWithoutWatchTraffic: an agent that does not implement
// WatchTraffic leaves the link up, with decisions counted and no bytes,
// and is not asked again and again.
func TestAgentWithoutWatchTraffic(t *testing.T) {
	h := newHarnessWith(t, nil, harnessOptions{agent: func(fa *fakeAgent) { fa.noTraffic = true }})
	waitFor(t, "the service to ask for traffic", func() bool { _, n := h.agent.trafficWatching(); return n >= 1 })
	now := time.Now()
	web := agentFlow(agentv1.Protocol_PROTOCOL_TCP, "192.0.2.10", 443, 40001)
	h.decide(now, h.uid, browser, 11, web, "example.com", agentv1.Action_ACTION_ALLOW, "")
	p := h.waitAllowedDenied(now.Add(-time.Minute), browser, 1, 0)
	if p.GetBytesSent() != 0 || p.GetDestinations() != 1 {
		t.Errorf("browser = %v", p)
	}
	// A prompt round trip: the link is up and well.
	h.agent.hold("c1", h.uid, curl, 40000, "192.0.2.1", 443, 30*time.Second)
	waitFor(t, "c1 decided silently", func() bool { return h.agent.decision("c1") == agentv1.Action_ACTION_ALLOW })
	if _, n := h.agent.trafficWatching(); n != 1 {
		t.Errorf("WatchTraffic was called %d times on an agent without it", n)
	}
	if st := h.status(); !st.GetAgentConnected() {
		t.Error("the link is down")
	}
}

// TestHistoryRetentionSetting: GetConfig reports the retention, SetConfig
// checks it, saves it and prunes at once.
func TestHistoryRetentionSetting(t *testing.T) {
	var path string
	h := newHarness(t, func(c *Config) {
		path = filepath.Join(filepath.Dir(c.DataDir), "config.toml")
		c.ConfigPath = path
	})
	ctx := context.Background()
	got, err := h.ui.GetConfig(ctx, &uiv1.GetConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := got.GetConfig()
	if cfg.GetHistoryRetention().AsDuration() != 30*24*time.Hour {
		t.Fatalf("retention = %s, want 30 days", cfg.GetHistoryRetention().AsDuration())
	}
	now := time.Now()
	web := agentFlow(agentv1.Protocol_PROTOCOL_TCP, "192.0.2.10", 443, 40001)
	h.decide(now.Add(-3*24*time.Hour), h.uid, fetcher, 11, web, "", agentv1.Action_ACTION_ALLOW, "")
	h.decide(now.Add(-time.Hour), h.uid, browser, 12, web, "", agentv1.Action_ACTION_ALLOW, "")
	count := func() int {
		resp, err := h.ui.QueryConnections(ctx, &uiv1.QueryConnectionsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.GetEntries())
	}
	waitFor(t, "both decisions", func() bool { return count() == 2 })

	for _, bad := range []time.Duration{23 * time.Hour, 367 * 24 * time.Hour, -time.Hour} {
		cfg.HistoryRetention = durationpb.New(bad)
		_, err := h.ui.SetConfig(ctx, &uiv1.SetConfigRequest{Config: cfg})
		if code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "history retention") {
			t.Errorf("retention %s: %v", bad, err)
		}
	}
	if count() != 2 {
		t.Fatal("a refused setting pruned the history")
	}
	cfg.HistoryRetention = durationpb.New(2 * 24 * time.Hour)
	if _, err := h.ui.SetConfig(ctx, &uiv1.SetConfigRequest{Config: cfg}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Errorf("%d decisions after the retention became 2 days, want 1", n)
	}
	if _, err := h.ui.GetProgram(ctx, &uiv1.GetProgramRequest{Program: fetcher}); code(err) != codes.NotFound {
		t.Errorf("the pruned program: %v, want NotFound", err)
	}
	data, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(data), `history_retention = "2d"`+"\n") {
		t.Errorf("config file: %q, %v", data, err)
	}
	// A client that does not know the setting leaves it as it is.
	cfg.HistoryRetention = nil
	set, err := h.ui.SetConfig(ctx, &uiv1.SetConfigRequest{Config: cfg})
	if err != nil || set.GetConfig().GetHistoryRetention().AsDuration() != 2*24*time.Hour {
		t.Errorf("SetConfig without a retention: %v, %v", set, err)
	}
}

// TestStatisticsSurviveAStop: what waits in memory is written when the
// service stops.
func TestStatisticsSurviveAStop(t *testing.T) {
	// No periodic flush: only the stop writes them.
	h := newHarnessWith(t, nil, harnessOptions{flushPeriod: time.Hour})
	h.waitTrafficWatched(1)
	now := time.Now()
	web := agentFlow(agentv1.Protocol_PROTOCOL_TCP, "192.0.2.10", 443, 40001)
	h.decide(now, h.uid, browser, 11, web, "example.com", agentv1.Action_ACTION_ALLOW, "")
	h.agent.emitTraffic(sample(now, h.uid, browser, web, "example.com", 5, 4321))
	svc := h.service()
	waitFor(t, "the decision and the sample to reach the service", func() bool {
		svc.histMu.Lock()
		defer svc.histMu.Unlock()
		return svc.stats.batch.Len() == 2
	})
	h.stop()
	st, err := store.Open(filepath.Join(h.cfg.DataDir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	progs, err := st.Programs(context.Background(), now.Add(-time.Minute), now)
	if err != nil || len(progs) != 1 || progs[0].Allowed != 1 || progs[0].BytesReceived != 4321 {
		t.Errorf("after the stop: %+v, %v", progs, err)
	}
}

// TestGetProgramBoundsDestinations: a program with more destinations than
// one answer holds gets the most recent ones, and the summary counts all.
func TestGetProgramBoundsDestinations(t *testing.T) {
	h := newHarness(t, nil)
	now := time.Now()
	b := store.NewBatch()
	for i := range maxProgramDestinations + 1 {
		e := store.HistoryEntry{Time: now.Add(time.Duration(i-maxProgramDestinations) * time.Millisecond), Action: flow.ActionAllow, DecidedBy: "prompt",
			Process: apiconvProcess(h.uid, browser), Tuple: apiconvTuple(uint16(1 + i))}
		if err := b.AddDecision(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.service().store.Record(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	resp, err := h.ui.GetProgram(context.Background(), &uiv1.GetProgramRequest{Program: browser, Since: timestamppb.New(now.Add(-time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	ds := resp.GetDestinations()
	if len(ds) != maxProgramDestinations || resp.GetProgram().GetDestinations() != maxProgramDestinations+1 ||
		ds[0].GetPort() != maxProgramDestinations+1 || ds[len(ds)-1].GetPort() != 2 {
		t.Errorf("%d destinations (summary: %d), ports %d to %d; want the newest %d of %d",
			len(ds), resp.GetProgram().GetDestinations(), ds[0].GetPort(), ds[len(ds)-1].GetPort(), maxProgramDestinations, maxProgramDestinations+1)
	}
}

func apiconvProcess(uid uint32, exe string) flow.Process {
	return apiconv.Process(agentProc(uid, exe, 1))
}

func apiconvTuple(port uint16) flow.Tuple {
	return apiconv.Tuple(agentFlow(agentv1.Protocol_PROTOCOL_TCP, "192.0.2.10", uint32(port), 40000))
}

// TestQueryConnectionsFitsAClient: a large answer is cut to what a client
// accepts by default (4 MiB), marked truncated, rather than failing there.
func TestQueryConnectionsFitsAClient(t *testing.T) {
	h := newHarness(t, nil)
	now := time.Now()
	b := store.NewBatch()
	const n = 20_000
	long := strings.Repeat("a", 300)
	for i := range n {
		p := apiconvProcess(h.uid, browser)
		p.Args = []string{browser, long}
		e := store.HistoryEntry{Time: now.Add(time.Duration(i-n) * time.Millisecond), Action: flow.ActionAllow, DecidedBy: "prompt",
			Process: p, Tuple: apiconvTuple(uint16(1 + i))}
		if err := b.AddDecision(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.service().store.Record(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	resp, err := h.ui.QueryConnections(context.Background(), &uiv1.QueryConnectionsRequest{Limit: maxQueryLimit})
	if err != nil {
		t.Fatal(err)
	}
	got := len(resp.GetEntries())
	if !resp.GetTruncated() || got < n/4 || got >= n || resp.GetEntries()[0].GetFlow().GetDstPort() != n {
		t.Errorf("%d entries (truncated %v), the newest to port %d; want the newest ones up to 4 MiB, truncated",
			got, resp.GetTruncated(), resp.GetEntries()[0].GetFlow().GetDstPort())
	}
}
