package agent

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/rules"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// serveAPI serves e's API on a Unix socket in a temporary directory, so that
// peercred authenticates the client as this test's own UID, and returns a
// client.
func serveAPI(t *testing.T, e *Engine) agentv1.AgentServiceClient {
	t.Helper()
	return serveTrafficAPI(t, e, nil)
}

func TestSetRulesOverTheSocket(t *testing.T) {
	e, r, _ := newRuleEngine(t)
	client := serveAPI(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	me := uint32(os.Getuid())
	other := me + 1

	decisions, err := client.WatchDecisions(ctx, &agentv1.WatchDecisionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	good := rules.ToProto(allowRule("web", "/usr/bin/curl", "192.0.2.1/32", 443))
	badRegexp := rules.ToProto(rules.Rule{ID: "bad", Enabled: true, Action: flow.ActionAllow, Cmdline: "(", Lifetime: rules.Forever})
	noID := rules.ToProto(allowRule("", "/usr/bin/curl", "", 0))

	otherCode := codes.PermissionDenied
	if me == 0 {
		otherCode = codes.OK // root may name any UID
	}
	for _, tc := range []struct {
		name       string
		req        *agentv1.SetRulesRequest
		want       codes.Code
		wantActive uint32
		wantMsg    string
	}{
		{"own rules", &agentv1.SetRulesRequest{Rules: []*rulesv1.Rule{good}}, codes.OK, 1, ""},
		{"own uid named", &agentv1.SetRulesRequest{Uid: uidPtr(me), Rules: []*rulesv1.Rule{good}}, codes.OK, 1, ""},
		{"another uid", &agentv1.SetRulesRequest{Uid: uidPtr(other), Rules: []*rulesv1.Rule{good}}, otherCode, 1, ""},
		{"bad rule named by index and id", &agentv1.SetRulesRequest{Rules: []*rulesv1.Rule{good, badRegexp}}, codes.InvalidArgument, 0, `rule 1 (id "bad")`},
		{"rule without id", &agentv1.SetRulesRequest{Rules: []*rulesv1.Rule{noID}}, codes.InvalidArgument, 0, "rule 0: id is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client.SetRules(ctx, tc.req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("SetRules: %v, want %v", err, tc.want)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("error %q does not say %q", err, tc.wantMsg)
				}
				return
			}
			if resp.GetActive() != tc.wantActive {
				t.Fatalf("active %d, want %d", resp.GetActive(), tc.wantActive)
			}
		})
	}
	if e.RuleCount(me) != 1 {
		t.Fatalf("a refused request changed the caller's rules: %d", e.RuleCount(me))
	}

	// A connection of the caller's UID decided by the rule shows its ID.
	p := curl1000
	p.UID = me
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), p)
	if r.verdict(1) != flow.ActionAllow {
		t.Fatalf("verdict %v, want allow", r.verdict(1))
	}
	ev, err := decisions.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetRuleId() != "web" || ev.GetDecidedBy() != "rule:web" {
		t.Fatalf("decision event rule_id %q decided_by %q, want web and rule:web", ev.GetRuleId(), ev.GetDecidedBy())
	}
}

// fakeKernelCounts stands in for kdecide.Kernel in GetStatus.
type fakeKernelCounts struct {
	stats kdecide.Stats
	byUID map[uint32]int
	err   error
}

func (f *fakeKernelCounts) Stats() (kdecide.Stats, error)      { return f.stats, f.err }
func (f *fakeKernelCounts) EntriesFor(uid uint32) (int, error) { return f.byUID[uid], f.err }

// TestGetStatusKernelDecisions: GetStatus says how decisions are made in
// the kernel, how many are remembered and the last minute's split between
// the kernel and userspace; a user sees their own UID's, root everyone's
// and the kernel's counters.
func TestGetStatusKernelDecisions(t *testing.T) {
	e, r, clk := newRuleEngine(t)
	kern := &fakeKernelCounts{
		stats: kdecide.Stats{Entries: 5, Allowed: 7, Denied: 2, Rejected: 1, Lost: 3, Packets: 9},
		byUID: map[uint32]int{1000: 2, 1001: 3},
	}
	s := &apiServer{engine: e, status: staticStatus{Kernel: KernelStatus{Mechanism: KernelMechanism}}, reuse: &udpReuseState{}, kern: kern}
	getStatus := func(uid uint32) *agentv1.GetStatusResponse {
		t.Helper()
		ctx, cancel := callCtx(uid)
		defer cancel()
		st, err := s.GetStatus(ctx, &agentv1.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	// In userspace: alice answers for one connection, the system policy
	// allows root's.
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	pend := e.ListPending(alice)
	if len(pend) != 1 {
		t.Fatalf("%d pending, want 1", len(pend))
	}
	if _, _, err := e.Decide(alice, DecideRequest{ID: pend[0].ID, Action: flow.ActionAllow}); err != nil {
		t.Fatal(err)
	}
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.2", 40001, 443), root)
	if r.verdict(1) != flow.ActionAllow || r.verdict(2) != flow.ActionAllow {
		t.Fatalf("userspace verdicts %v %v, want allow", r.verdict(1), r.verdict(2))
	}
	// In the kernel: two of alice's connections, one of bob's.
	kev := func(p flow.Process, a flow.Action, by string) kdecide.Event {
		p.Exe, p.Source = "", kdecide.Source
		return kdecide.Event{Time: clk.Now(), Process: p, Tuple: tcp("192.0.2.1", 0, 443), Action: a, By: by}
	}
	e.RecordKernel([]kdecide.Event{
		kev(curl1000, flow.ActionAllow, "rule:web"),
		kev(curl1000, flow.ActionDeny, "rule:web"),
		kev(wget1001, flow.ActionReject, "cache:c1"),
	})

	type want struct {
		kd      *agentv1.KernelDecisions
		counted *agentv1.Counters // only the fields below are compared
	}
	for _, tc := range []struct {
		name string
		uid  uint32
		want want
	}{
		{"alice", 1000, want{
			&agentv1.KernelDecisions{Mechanism: KernelMechanism, Entries: 2, LastMinuteKernel: 2, LastMinuteUserspace: 1},
			&agentv1.Counters{Packets: 3, Allowed: 2, Denied: 1, RuleDecisions: 2, KernelDecisions: 2},
		}},
		{"bob", 1001, want{
			&agentv1.KernelDecisions{Mechanism: KernelMechanism, Entries: 3, LastMinuteKernel: 1},
			&agentv1.Counters{Packets: 1, Rejected: 1, CacheHits: 1, KernelDecisions: 1},
		}},
		{"another user", 1002, want{
			&agentv1.KernelDecisions{Mechanism: KernelMechanism},
			&agentv1.Counters{},
		}},
		{"root", 0, want{
			&agentv1.KernelDecisions{Mechanism: KernelMechanism, Entries: 5, LastMinuteKernel: 3, LastMinuteUserspace: 2,
				Allowed: 7, Denied: 2, Rejected: 1, Lost: 3, Packets: 9},
			&agentv1.Counters{Packets: 5, Allowed: 3, Denied: 1, Rejected: 1, CacheHits: 1, RuleDecisions: 2, KernelDecisions: 3},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := getStatus(tc.uid)
			if !proto.Equal(st.GetKernelDecisions(), tc.want.kd) {
				t.Errorf("kernel decisions\n%v\nwant\n%v", st.GetKernelDecisions(), tc.want.kd)
			}
			k, w := st.GetCounters(), tc.want.counted
			got := &agentv1.Counters{Packets: k.GetPackets(), Allowed: k.GetAllowed(), Denied: k.GetDenied(), Rejected: k.GetRejected(),
				CacheHits: k.GetCacheHits(), RuleDecisions: k.GetRuleDecisions(), KernelDecisions: k.GetKernelDecisions()}
			if !proto.Equal(got, w) {
				t.Errorf("counters\n%v\nwant\n%v", got, w)
			}
		})
	}

	// The kernel's maps cannot be read: the status says why.
	kern.err = errors.New("kernel decisions: list: bad file descriptor")
	if st := getStatus(1000).GetKernelDecisions(); st.GetReason() != kern.err.Error() || st.GetMechanism() != KernelMechanism {
		t.Errorf("with an unreadable map: %v", st)
	}
	kern.err = nil

	// A minute later the split is empty; the entries remain.
	clk.Advance(61 * time.Second)
	if st := getStatus(0).GetKernelDecisions(); st.GetLastMinuteKernel() != 0 || st.GetLastMinuteUserspace() != 0 || st.GetEntries() != 5 {
		t.Errorf("a minute later: %v, want no decisions in the last minute and 5 entries", st)
	}

	// Off: the reason, no entries, and every decision in userspace.
	s.kern, s.status.Kernel = nil, KernelStatus{Mechanism: "off", Reason: "kernel_decisions = false"}
	e.Handle(PacketRef{ID: 3}, tcp("192.0.2.1", 40002, 443), root)
	if r.verdict(3) != flow.ActionAllow {
		t.Fatalf("verdict %v, want allow", r.verdict(3))
	}
	off := &agentv1.KernelDecisions{Mechanism: "off", Reason: "kernel_decisions = false", LastMinuteUserspace: 1}
	if st := getStatus(0).GetKernelDecisions(); !proto.Equal(st, off) {
		t.Errorf("off: %v, want %v", st, off)
	}
}
