package agent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// serveAPI serves e's API on a Unix socket in a temporary directory, so that
// peercred authenticates the client as this test's own UID, and returns a
// client.
func serveAPI(t *testing.T, e *Engine) agentv1.AgentServiceClient {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := newGRPCServer(e, staticStatus{Started: time.Now()}, nil, &udpReuseState{}, nil, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentv1.NewAgentServiceClient(conn)
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
