package e2e

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/bastion-fw/bastion/internal/ctl"
	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// run runs cmd and returns its combined output and exit code (-1 when it
// could not run or was killed).
func run(t *testing.T, cmd *exec.Cmd) (string, int) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return string(out), ee.ExitCode()
	}
	t.Fatalf("%v: %v: %s", cmd.Args, err, out)
	return "", -1
}

// pendingIDs parses `bastionctl --json pending`.
func pendingIDs(t *testing.T, out string) []string {
	t.Helper()
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var c agentv1.PendingConnection
		if err := protojson.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("bastionctl --json pending: line %q: %v", line, err)
		}
		ids = append(ids, c.GetId())
	}
	return ids
}

// TestNonRootSeesAndDecidesOnlyOwnConnections holds a UID 1000 connection
// and checks, with bastionctl and grpcurl run as UIDs 1001 and 1000, that
// only its owner sees and decides it.
func TestNonRootSeesAndDecidesOnlyOwnConnections(t *testing.T) {
	b := bins(t)
	ns := testenv.NewNetNS(t)
	s := startServers(t, ns)
	a := startAgent(t, ns)
	ctx := testCtx(t, 2*time.Minute)
	p := start(t, dialer(ctx, ns, 1000, "-net", "tcp4", "-addr", hostPort(false, s.tcp4), "-reply", "-timeout", "60s"))
	conn := a.WaitPending(t, 10*time.Second, flowTo(tcp, 4, s.tcp4))
	id := conn.GetId()
	bastionctl := func(uid uint32, args ...string) (string, int) {
		return run(t, ns.Command(ctx, uid, uid, b.ctl, append([]string{"--agent-socket", a.Socket}, args...)...))
	}
	stillPending := func(who string) {
		t.Helper()
		found := false
		for _, c := range a.ListPending(t) {
			found = found || c.GetId() == id
		}
		if !found || p.Exited() {
			t.Fatalf("after %s, %s is no longer pending (client exited: %v, stdout %q)", who, id, p.Exited(), p.Stdout())
		}
	}

	out, code := bastionctl(1001, "--json", "pending")
	if code != 0 || len(pendingIDs(t, out)) != 0 {
		t.Errorf("bastionctl pending as uid 1001: exit %d, output %q; want no connections", code, out)
	}
	out, code = bastionctl(1000, "--json", "pending")
	if ids := pendingIDs(t, out); code != 0 || len(ids) != 1 || ids[0] != id {
		t.Errorf("bastionctl pending as uid 1000: exit %d, output %q; want %s", code, out, id)
	}

	// Another user's connection is "not found", as a missing one: the
	// answer does not tell that the ID exists.
	out, code = bastionctl(1001, "decide", id, "allow")
	if code != ctl.ExitNotFound {
		t.Errorf("bastionctl decide as uid 1001: exit %d (%q), want %d (not found)", code, out, ctl.ExitNotFound)
	}
	stillPending("uid 1001's bastionctl decide")

	req, _ := json.Marshal(map[string]string{"id": id, "action": "ACTION_ALLOW"})
	out, code = run(t, ns.Command(ctx, 1001, 1001, "grpcurl", "-plaintext", "-unix", "-d", string(req), a.Socket,
		"bastion.agent.v1.AgentService/Decide"))
	if code == 0 || !strings.Contains(out, "NotFound") {
		t.Errorf("grpcurl Decide as uid 1001: exit %d, output %q; want NotFound", code, out)
	}
	stillPending("uid 1001's grpcurl Decide")

	out, code = bastionctl(1001, "decide", "c999", "allow")
	if code != ctl.ExitNotFound {
		t.Errorf("bastionctl decide of an unknown id: exit %d (%q), want %d", code, out, ctl.ExitNotFound)
	}

	out, code = bastionctl(1000, "decide", id, "allow")
	if code != 0 {
		t.Fatalf("bastionctl decide as uid 1000 (the owner): exit %d: %q", code, out)
	}
	if r := p.DialResult(t, 30*time.Second); !r.OK {
		t.Errorf("allowed by its owner: dialer %+v", r)
	}
}

// TestGrpcurlAsAdministrator uses grpcurl on the socket as an
// administrator would: reflection lists the services, describe works, the
// health check says SERVING and GetStatus names the mechanism.
func TestGrpcurlAsAdministrator(t *testing.T) {
	bins(t)
	ns := testenv.NewNetNS(t)
	a := startAgent(t, ns)
	ctx := testCtx(t, time.Minute)
	// grpcurl runs grpcurl with flags, the socket, then rest (flags go
	// before the socket path).
	grpcurl := func(flags []string, rest ...string) string {
		t.Helper()
		argv := append(append(append([]string{"-plaintext", "-unix"}, flags...), a.Socket), rest...)
		out, err := exec.CommandContext(ctx, "grpcurl", argv...).CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %v: %v: %s", argv, err, out)
		}
		return string(out)
	}

	list := grpcurl(nil, "list")
	for _, svc := range []string{"bastion.agent.v1.AgentService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(list, svc+"\n") {
			t.Errorf("grpcurl list does not show %s:\n%s", svc, list)
		}
	}
	desc := grpcurl(nil, "describe", "bastion.agent.v1.AgentService")
	for _, rpc := range []string{"rpc WatchPending", "rpc Decide", "rpc GetStatus", "rpc ListCache"} {
		if !strings.Contains(desc, rpc) {
			t.Errorf("grpcurl describe lacks %q:\n%s", rpc, desc)
		}
	}
	if health := grpcurl(nil, "grpc.health.v1.Health/Check"); !strings.Contains(health, `"status": "SERVING"`) {
		t.Errorf("health check: %s", health)
	}
	if health := grpcurl([]string{"-d", `{"service":"bastion.agent.v1.AgentService"}`}, "grpc.health.v1.Health/Check"); !strings.Contains(health, `"status": "SERVING"`) {
		t.Errorf("health check of the agent service: %s", health)
	}
	var st struct {
		Mechanism string `json:"mechanism"`
		Netns     string `json:"netns"`
		QueueNum  int    `json:"queueNum"`
	}
	out := grpcurl(nil, "bastion.agent.v1.AgentService/GetStatus")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("GetStatus output %q: %v", out, err)
	}
	// The run's mechanism: netfilter-link in the auto run on a kernel that
	// offers it, else the one BASTION_E2E_MECHANISM forces.
	if want := mechanism(); st.Mechanism != want || st.Netns != ns.Name || st.QueueNum == 0 {
		t.Errorf("GetStatus via grpcurl = %+v, want mechanism %s in %s:\n%s", st, want, ns.Name, out)
	}
}
