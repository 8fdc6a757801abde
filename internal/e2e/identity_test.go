package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// masqueradePolicy rejects UID 1001's connections unless one of its rules
// allows them, so a masquerader's connection that got through can only have
// been let out by the curl rule.
const masqueradePolicy = `[policy]
prompt_timeout = "30s"
timeout_action = "deny"
default_action = "allow"

[[policy.users]]
uids = "1001"
action = "reject"
`

// attackerUID is user B, who runs the malware.
const attackerUID = 1001

// containerRootfs builds, as root, a tiny image root file system: the static
// dialer at usr/bin/curl and an empty directory for pivot_root's old root.
func containerRootfs(t *testing.T) string {
	t.Helper()
	root := filepath.Join(testenv.TempDir(t), "rootfs")
	for _, d := range []string{"usr/bin", "old"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testenv.CopyExecutable(t, builtBins.dialer, filepath.Join(root, "usr/bin/curl"))
	return root
}

// TestAttackMasqueradeThroughMountNamespace: user B has an allow rule for
// /usr/bin/curl. B's malware runs another program under that path — a bind
// mount over /usr/bin/curl in its own mount namespace (`unshare -Urm`), a
// chroot whose /usr/bin/curl is its own file, and a container image root
// (pivot_root into a directory holding a static binary at /usr/bin/curl) —
// and connects. None of those connections may be allowed by the curl rule,
// while the real curl still is.
func TestAttackMasqueradeThroughMountNamespace(t *testing.T) {
	testenv.RequireTools(t, "unshare", "chroot", "pivot_root", "sh", "curl")
	b := bins(t)
	ns := testenv.NewNetNS(t)
	addr := ns.Listen(t, "tcp4", "127.0.0.1:0").Addr().String()
	a := startPolicyAgent(t, ns, masqueradePolicy)
	ctx := testCtx(t, 3*time.Minute)

	curl := realExe(t, "curl")
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := a.Client.SetRules(rctx, &agentv1.SetRulesRequest{Uid: proto.Uint32(attackerUID), Rules: []*rulesv1.Rule{{
		Id: "curl", Enabled: true, Action: rulesv1.Action_ACTION_ALLOW, Exe: curl, Lifetime: rulesv1.Lifetime_LIFETIME_FOREVER,
	}}}); err != nil {
		t.Fatalf("set B's curl rule: %v", err)
	}

	// The rule works: the real curl gets out.
	real := start(t, ns.Command(ctx, attackerUID, attackerUID, curl, "-s", "-m", "5", "-o", "/dev/null", "telnet://"+addr))
	real.Wait(t, 20*time.Second)
	if d := waitDecision(t, ctx, a, real.Pid()); d.GetAction() != agentv1.Action_ACTION_ALLOW || d.GetDecidedBy() != "rule:curl" {
		t.Fatalf("the real curl: decision %v, want allow by rule:curl", d)
	}

	rootfs := containerRootfs(t)
	dial := []string{"-net", "tcp4", "-addr", addr, "-timeout", "5s"}
	cases := []struct {
		name string
		cmd  func() []string // argv run in the namespace
		uid  uint32          // who starts it (chroot needs root, then drops to B)
	}{
		{"bind mount over /usr/bin/curl", func() []string {
			return append([]string{"unshare", "-Urm", "sh", "-c", `mount --bind "$0" ` + curl + ` && exec ` + curl + ` "$@"`, b.dialer}, dial...)
		}, attackerUID},
		{"chroot with its own /usr/bin/curl", func() []string {
			return append([]string{"chroot", "--userspec=" + strconv.Itoa(attackerUID) + ":" + strconv.Itoa(attackerUID), rootfs, "/usr/bin/curl"}, dial...)
		}, 0},
		{"container image root (pivot_root)", func() []string {
			return append([]string{"unshare", "-Urm", "sh", "-c", `mount --bind "$0" "$0" && cd "$0" && pivot_root . old && exec /usr/bin/curl "$@"`, rootfs}, dial...)
		}, attackerUID},
	}
	const triesPerCase = 3
	tries, through := 0, 0
	for _, c := range cases {
		for i := 0; i < triesPerCase; i++ {
			argv := c.cmd()
			p := start(t, ns.Command(ctx, c.uid, c.uid, argv[0], argv[1:]...))
			r := p.DialResult(t, 30*time.Second)
			tries++
			d := waitDecision(t, ctx, a, r.PID)
			t.Logf("%s: dial ok=%v kind=%s; decision %s by %q, process %v", c.name, r.OK, r.Kind, d.GetAction(), d.GetDecidedBy(), d.GetProcess())
			if d.GetProcess().GetUid() != attackerUID {
				t.Fatalf("%s: the connection is UID %d's, want %d", c.name, d.GetProcess().GetUid(), attackerUID)
			}
			// Honest names only: the chroot's file may be shown as the
			// host's file at its real path, never as the host's curl.
			if d.GetProcess().GetExe() == curl && d.GetProcess().GetExeIdentity() == agentv1.ExeIdentity_EXE_IDENTITY_HOST {
				t.Errorf("%s: the masquerader is shown as the host's %s", c.name, d.GetProcess().GetExe())
			}
			if r.OK || d.GetAction() == agentv1.Action_ACTION_ALLOW {
				through++
			}
		}
	}
	reportAttack(t, "masquerade as /usr/bin/curl through a mount namespace, chroot or container root", tries, through, 0)
}

// waitDecision returns the first decision the agent logged for a connection
// of process tgid.
func waitDecision(t *testing.T, ctx context.Context, a *Agent, tgid int) *agentv1.DecisionEvent {
	t.Helper()
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	stream, err := a.Client.WatchDecisions(dctx, &agentv1.WatchDecisionsRequest{})
	if err != nil {
		t.Fatalf("watch decisions: %v", err)
	}
	for {
		d, err := stream.Recv()
		if err != nil {
			t.Fatalf("no decision for PID %d: %v", tgid, err)
		}
		if int(d.GetProcess().GetTgid()) == tgid {
			return d
		}
	}
}

// TestParallelProcessesKeepTheirIdentity: two processes of one program with
// different argv connect to one destination while the first is held. They
// share one pending entry, which lists both; after one answer, the decision
// log names each connection's own process and argv.
func TestParallelProcessesKeepTheirIdentity(t *testing.T) {
	b := bins(t)
	ns := testenv.NewNetNS(t)
	addr := ns.Listen(t, "tcp4", "127.0.0.1:0").Addr().String()
	a := startPolicyAgent(t, ns, twoUserPolicy)
	w := a.Watch(t)
	ctx := testCtx(t, 2*time.Minute)

	argvs := [][]string{
		{"-net", "tcp4", "-addr", addr, "-timeout", "25s"},
		{"-net", "tcp4", "-addr", addr, "-timeout", "26s"},
	}
	mark := w.Mark()
	first := start(t, dialer(ctx, ns, uidA, argvs[0]...))
	pc := w.WaitAdded(t, mark, 20*time.Second, func(p *agentv1.PendingConnection) bool {
		return int(p.GetProcess().GetTgid()) == first.Pid()
	})
	second := start(t, dialer(ctx, ns, uidA, argvs[1]...))
	procs := []*Proc{first, second}

	var entry *agentv1.PendingConnection
	if !testenv.Poll(20*time.Second, func() bool {
		for _, p := range a.ListPending(t) {
			if p.GetId() == pc.GetId() && len(p.GetProcesses()) == 2 {
				entry = p
				return true
			}
		}
		return false
	}) {
		t.Fatalf("the second process did not join pending entry %s: %v", pc.GetId(), a.ListPending(t))
	}
	for i, p := range procs {
		got := entry.GetProcesses()[i]
		want := append([]string{b.dialer}, argvs[i]...)
		if int(got.GetTgid()) != p.Pid() || !slices.Equal(got.GetArgs(), want) {
			t.Errorf("pending entry process %d: tgid %d args %q, want %d %q", i, got.GetTgid(), got.GetArgs(), p.Pid(), want)
		}
	}
	a.Decide(t, pc.GetId(), agentv1.Action_ACTION_ALLOW, agentv1.Scope_SCOPE_CONNECTION)
	for i, p := range procs {
		if r := p.DialResult(t, 30*time.Second); !r.OK {
			t.Errorf("process %d: dial after allow: %+v", i, r)
		}
		d := waitDecision(t, ctx, a, p.Pid())
		want := append([]string{b.dialer}, argvs[i]...)
		if d.GetAction() != agentv1.Action_ACTION_ALLOW || !slices.Equal(d.GetProcess().GetArgs(), want) {
			t.Errorf("decision for PID %d: %s with args %q, want allow with %q", p.Pid(), d.GetAction(), d.GetProcess().GetArgs(), want)
		}
	}
}
