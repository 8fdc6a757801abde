package ctl

import (
	"bytes"
	"cmp"
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
	"testing"
	"testing/fstest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/desktopentry"
	"github.com/bastion-fw/bastion/internal/procinfo"
	"github.com/bastion-fw/bastion/internal/testenv/fakeui"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// testNow is the fixed time of every test; outputs are printed in UTC.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

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
		Counters: &agentv1.Counters{Packets: 1000, Allowed: 80, Denied: 10, Rejected: 9, CacheHits: 20, PolicyDecisions: 10,
			ApiDecisions: 12, DeadlineDecisions: 8, Identified: 999, Unidentified: 1, UdpFlowsReleased: 5, UdpReuseRaces: 1,
			DnsAnswers: 12, DnsMalformed: 1, Shed: 900, RuleDecisions: 40, KernelDecisions: 5,
			SilentDecisions: 4, RetransmitDecisions: 3, OtherDecisions: 2, HeldPackets: 1},
		ShareLimits: &agentv1.ShareLimits{HeldPacketsPerUid: 1024, PendingPerUid: 128, HeldPacketsTotal: 4096, PendingTotal: 1024,
			ReservedHeldPacketsPerUid: 64, ReservedPendingPerUid: 16, QueueMaxLen: 16384},
		Shares: []*agentv1.ShareUse{{Uid: 1000, HeldPackets: 1024, Pending: 1, Shed: 900}},
		KernelDecisions: &agentv1.KernelDecisions{Mechanism: "cgroup-sock-addr+xt-bpf", Entries: 4,
			LastMinuteKernel: 30, LastMinuteUserspace: 10},
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
	ui                *fakeui.Service
	uiSock, agentSock string
	dir               string
	ids               int // rule ids bastionctl made
	// apps names programs (default: none); width is the terminal's.
	apps  *desktopentry.Index
	width int
}

// newFakeUI is the shared in-memory rules service with these tests' fixed
// figures: its rules were created an hour before testNow, its status names
// version "test" with one prompt client and two pending prompts, and rule
// "forbidden" is another user's.
func newFakeUI() *fakeui.Service {
	f := fakeui.New()
	f.SetClock(func() time.Time { return testNow.Add(-time.Hour) })
	f.SetStatusEdit(func(st *uiv1.GetStatusResponse) {
		st.Version, st.PromptClients, st.PendingPrompts = "test", 1, 2
	})
	f.SetRuleError("forbidden", status.Error(codes.PermissionDenied, "not your rule"))
	return f
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
		now: clock, ruleNow: clock, loc: time.UTC, quiet: 200 * time.Millisecond, promptSys: testPromptSystem(t),
		ruleID: func() string { h.ids++; return fmt.Sprintf("r%015d", h.ids) }, retryWait: 2 * time.Second,
		apps: cmp.Or(h.apps, desktopentry.New()), width: cmp.Or(h.width, 100)}
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

// ListCache answers one decision remembered for a destination and port.
func (fakeAgent) ListCache(context.Context, *agentv1.ListCacheRequest) (*agentv1.ListCacheResponse, error) {
	return &agentv1.ListCacheResponse{Entries: []*agentv1.CacheEntry{{Id: "k1", Uid: 1000, Exe: "/usr/bin/curl",
		Action: agentv1.Action_ACTION_ALLOW, Scope: agentv1.Scope_SCOPE_DESTINATION_PORT, DstIp: "192.0.2.1", DstPort: 443, Hits: 2}}}, nil
}

// ListPending answers that nothing waits.
func (fakeAgent) ListPending(context.Context, *agentv1.ListPendingRequest) (*agentv1.ListPendingResponse, error) {
	return &agentv1.ListPendingResponse{}, nil
}
