package deploytest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/kdecide"
	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// unitSandbox is run (as root, before the capabilities are dropped) in the
// agent's new mount namespace: it does what bastion-agent.service's
// sandbox does to the file systems kernel decisions use. systemd gives a
// unit with ProtectSystem= (or any other file-system sandboxing) a mount
// namespace of its own, a copy of the host's with slave propagation;
// ProtectKernelTunables= and ProtectControlGroups= make /sys, cgroupfs
// included, read-only; ReadWritePaths=-/sys/fs/bpf makes the bpf file
// system writable again. The rest of the unit's read-only root
// (ProtectSystem=strict) is left out: the test's agent keeps its socket and
// log in a temporary directory.
const unitSandbox = `set -e
for m in $(awk '$5 == "/sys" || $5 ~ "^/sys/" { print $5 }' /proc/self/mountinfo); do
	[ "$m" = /sys/fs/bpf ] || mount -o remount,bind,ro "$m"
done
mount -o remount,bind,rw /sys/fs/bpf
exec "$@"
`

// TestAgentUnitSandbox runs the agent as bastion-agent.service does: with
// exactly the unit's capabilities and in a mount namespace of its own with
// the unit's read-only /sys (see unitSandbox; systemd is not PID 1 here,
// so the unit itself cannot be started). It checks that kernel decisions
// load, that a process in the host's mount namespace is named by its
// verified executable (path rules match only those), and that a cached
// answer is then applied in the kernel.
func TestAgentUnitSandbox(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nsenter", "iptables", "curl")
	lookPath(t, "setpriv")
	lookPath(t, "unshare")
	root := repoRoot(t)
	caps := unitCaps(t, filepath.Join(root, "deploy", "systemd", "bastion-agent.service"))
	bin := buildBinaries(t)
	uid, gid := testUser(t)
	requireBPFFS(t)

	ns := testenv.NewNetNS(t)
	cg := testenv.NewCgroup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// An HTTP server that answers every request with 204.
	l := ns.Serve(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
				io.WriteString(c, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
			}
		}()
	})
	port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)

	bound := "-all"
	for _, c := range caps {
		bound += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	dir := testenv.TempDir(t)
	conf := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(conf, []byte("[[policy.users]]\nuids = \"1-4294967294\"\naction = \"ask\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := testenv.LaunchAgent(ctx, testenv.Options{
		Wrap: []string{"nsenter", "--net=" + ns.Path, "unshare", "--mount", "--propagation", "slave", "--",
			"sh", "-c", unitSandbox, "sh", "setpriv", "--bounding-set=" + bound, "--inh-caps=-all", "--"},
		Bin: filepath.Join(bin, "bastion-agent"), Socket: filepath.Join(dir, "agent.sock"), Config: conf, InterceptLoopback: true,
		Args: []string{"--cgroup", cg.Path}, Dir: dir, StopTimeout: agentStopTimeout,
	})
	if err != nil {
		t.Fatalf("agent did not start in the unit's sandbox: %v", err)
	}
	t.Cleanup(func() { a.Stop() })
	if st, err := a.Client.GetStatus(ctx, &agentv1.GetStatusRequest{}); err != nil {
		t.Fatal(err)
	} else if k := st.GetKernelDecisions(); k.GetMechanism() != kernelMechanism {
		t.Fatalf("kernel decisions in the unit's sandbox: %q (%s), want %q\n%s", k.GetMechanism(), k.GetReason(), kernelMechanism, a.Log())
	}

	curl := func() (pid int, done <-chan error) {
		c := ns.CommandInCgroup(ctx, cg, uid, gid, "curl", "-sS", "-m", "30", "-o", "/dev/null", "http://127.0.0.1:"+port+"/")
		out := &testenv.SyncBuffer{}
		c.Stderr = out
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		ch := make(chan error, 1)
		go func() {
			err := c.Wait()
			if err != nil {
				err = fmt.Errorf("%w: %s", err, out.String())
			}
			ch <- err
			close(ch)
		}()
		t.Cleanup(func() { c.Process.Kill(); <-ch })
		return c.Process.Pid, ch
	}

	// The first connection is asked about; the answer is cached for the
	// program and the destination port.
	pid, done := curl()
	p, err := pendingWhere(t, a.Client, 15*time.Second, func(p *agentv1.PendingConnection) bool {
		return int(p.GetProcess().GetTgid()) == pid
	})
	if err != nil {
		t.Fatalf("curl's connection not held: %v\n%s", err, a.Log())
	}
	proc := p.GetProcess()
	t.Logf("curl: exe %q, identity %v, mount namespace %d", proc.GetExe(), proc.GetExeIdentity(), proc.GetMntNs())
	if proc.GetExeIdentity() != agentv1.ExeIdentity_EXE_IDENTITY_HOST {
		t.Errorf("curl in the host's mount namespace is %v to an agent in the unit's sandbox, want %v: path rules and kernel decisions never apply to it",
			proc.GetExeIdentity(), agentv1.ExeIdentity_EXE_IDENTITY_HOST)
	}
	if _, err := a.Client.Decide(ctx, &agentv1.DecideRequest{Id: p.GetId(), Action: agentv1.Action_ACTION_ALLOW,
		Scope: agentv1.Scope_SCOPE_DESTINATION_PORT}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("allowed curl: %v", err)
	}

	// The second one is decided from the cache, which remembers the
	// decision in the kernel; the third is decided there.
	wctx, wcancel := context.WithTimeout(ctx, 40*time.Second)
	defer wcancel()
	stream, err := a.Client.WatchDecisions(wctx, &agentv1.WatchDecisionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 3; i++ {
		pid, done := curl()
		var d *agentv1.DecisionEvent
		for d == nil {
			ev, err := stream.Recv()
			if err != nil {
				if held, perr := pendingWhere(t, a.Client, time.Second, func(p *agentv1.PendingConnection) bool {
					return int(p.GetProcess().GetTgid()) == pid
				}); perr == nil {
					t.Fatalf("the cached answer did not cover curl's connection %d; it is held: %v", i, held)
				}
				t.Fatalf("no decision for curl's connection %d: %v\n%s", i, err, a.Log())
			}
			if int(ev.GetProcess().GetTgid()) == pid {
				d = ev
			}
		}
		t.Logf("connection %d: %v by %s, identified by %s", i, d.GetAction(), d.GetDecidedBy(), d.GetProcess().GetIdentifiedBy())
		if err := <-done; err != nil {
			t.Errorf("curl %d: %v", i, err)
		}
		if d.GetAction() != agentv1.Action_ACTION_ALLOW || !strings.HasPrefix(d.GetDecidedBy(), "cache:") {
			t.Errorf("connection %d: %v by %s, want allowed by the cache", i, d.GetAction(), d.GetDecidedBy())
		}
		if i == 3 && d.GetProcess().GetIdentifiedBy() != kdecide.Source {
			t.Errorf("connection 3 identified by %q, want decided in the kernel (%q): the unit's agent decides nothing in the kernel",
				d.GetProcess().GetIdentifiedBy(), kdecide.Source)
		}
	}
	if err := a.Stop(); err != nil {
		t.Errorf("agent exit: %v: %s", err, a.Log())
	}
}

// requireBPFFS mounts a bpf file system at /sys/fs/bpf unless one is there,
// as systemd does at boot on every distribution the unit is for: the
// unit's agent cannot mount it (no CAP_SYS_ADMIN).
func requireBPFFS(t *testing.T) {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &fs); err == nil && fs.Type == unix.BPF_FS_MAGIC {
		return
	}
	if err := unix.Mount("bpf", "/sys/fs/bpf", "bpf", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
		t.Fatalf("mount the bpf file system at /sys/fs/bpf, as systemd does: %v", err)
	}
}
