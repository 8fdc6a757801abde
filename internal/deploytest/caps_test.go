package deploytest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/fw"
	"github.com/bastion-fw/bastion/internal/procid"
	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// unitCaps returns the CapabilityBoundingSet of a unit file.
func unitCaps(t testing.TB, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var caps []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapabilityBoundingSet="); ok {
			caps = append(caps, strings.Fields(v)...)
		}
	}
	if len(caps) == 0 {
		t.Fatalf("%s has no CapabilityBoundingSet", path)
	}
	return caps
}

// kernelMechanism is GetStatus' kernel_decisions.mechanism when remembered
// decisions are applied in the kernel.
const kernelMechanism = "cgroup-sock-addr+xt-bpf"

// capsResult is what one agent run with a given capability set managed.
type capsResult struct {
	started   bool
	mechanism string
	udpReuse  string // GetStatus udp_reuse_protection
	newExe    string // executable named for a process started after the agent
	preExe    string // ... and for one started before it
	kernel    bool   // GetStatus says kernel decisions are active
	log       string
}

// TestAgentCapabilities runs the agent with exactly the capabilities
// bastion-agent.service grants (as root, bounding set limited by setpriv,
// inside a network namespace as the unit runs in the host's) and checks
// that it starts, identifies processes started before and after it, and
// removes its rules; then drops each capability in turn and checks that
// something it is there for breaks. So the unit's set is both sufficient
// and minimal on this kernel, and the comments in the unit say why.
func TestAgentCapabilities(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nsenter", "iptables")
	lookPath(t, "setpriv")
	lookPath(t, "iptables-legacy")
	root := repoRoot(t)
	caps := unitCaps(t, filepath.Join(root, "deploy", "systemd", "bastion-agent.service"))
	bin := buildBinaries(t)
	uid, gid := testUser(t)

	without := func(drop string) []string {
		var out []string
		for _, c := range caps {
			if c != drop {
				out = append(out, c)
			}
		}
		if len(out) == len(caps) {
			t.Fatalf("%s is not in the unit's CapabilityBoundingSet %v", drop, caps)
		}
		return out
	}
	procfs := []string{"--mechanism", "procfs"}
	legacy := []string{"--firewall-backend", "legacy"}
	tests := []struct {
		name  string
		caps  []string
		args  []string
		check func(t *testing.T, r capsResult)
	}{
		{"unit set", caps, nil, func(t *testing.T, r capsResult) {
			if mech := procid.Detect().Best(); !r.started || r.mechanism != string(mech) || r.newExe != "/usr/bin/curl" || r.preExe != "/usr/bin/bash" || r.udpReuse != "active" || !r.kernel {
				t.Errorf("with the unit's capabilities: %+v; want started, %s, curl and bash named, udp reuse protection and kernel decisions active", r, mech)
			}
		}},
		{"unit set, procfs", caps, procfs, func(t *testing.T, r capsResult) {
			if !r.started || r.newExe != "/usr/bin/curl" || r.preExe != "/usr/bin/bash" {
				t.Errorf("procfs mechanism with the unit's capabilities: %+v; want curl and bash named", r)
			}
		}},
		{"unit set, iptables-legacy", caps, legacy, func(t *testing.T, r capsResult) {
			if !r.started || r.newExe != "/usr/bin/curl" {
				t.Errorf("iptables-legacy with the unit's capabilities: %+v", r)
			}
		}},
		{"without CAP_NET_ADMIN", without("CAP_NET_ADMIN"), nil, func(t *testing.T, r capsResult) {
			if r.started {
				t.Errorf("started without CAP_NET_ADMIN: %+v", r)
			}
		}},
		{"without CAP_NET_RAW, iptables-legacy", without("CAP_NET_RAW"), legacy, func(t *testing.T, r capsResult) {
			if r.started {
				t.Errorf("iptables-legacy started without CAP_NET_RAW: %+v", r)
			}
		}},
		{"without CAP_BPF", without("CAP_BPF"), nil, func(t *testing.T, r capsResult) {
			if r.mechanism == "netfilter-link" || r.kernel {
				t.Errorf("eBPF identification or kernel decisions without CAP_BPF: %+v", r)
			}
		}},
		{"without CAP_PERFMON", without("CAP_PERFMON"), nil, func(t *testing.T, r capsResult) {
			if r.mechanism == "netfilter-link" || r.kernel {
				t.Errorf("eBPF identification or kernel decisions without CAP_PERFMON: %+v", r)
			}
		}},
		{"without CAP_SYS_PTRACE", without("CAP_SYS_PTRACE"), nil, func(t *testing.T, r capsResult) {
			if r.preExe != "" {
				t.Errorf("named a process started before the agent without CAP_SYS_PTRACE: %+v", r)
			}
		}},
		{"without CAP_DAC_READ_SEARCH, procfs", without("CAP_DAC_READ_SEARCH"), procfs, func(t *testing.T, r capsResult) {
			if r.newExe != "" {
				t.Errorf("procfs named a process without CAP_DAC_READ_SEARCH: %+v", r)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runWithCaps(t, bin, uid, gid, tc.caps, tc.args)
			t.Logf("%v %v: started %v, mechanism %q, udp reuse protection %q, kernel decisions %v, new process %q, pre-agent process %q", tc.caps, tc.args, r.started, r.mechanism, r.udpReuse, r.kernel, r.newExe, r.preExe)
			tc.check(t, r)
		})
	}
}

// runWithCaps starts the agent inside a fresh namespace with only caps,
// with one client of uid started before it and one after, and reports what
// it managed. It checks that the agent left no rules behind.
func runWithCaps(t *testing.T, bin string, uid, gid uint32, caps, args []string) capsResult {
	ns := testenv.NewNetNS(t)
	// The clients run in a cgroup of their own, which is where the sockops
	// mechanism (if it is picked) attaches: never to the host's root.
	cg := testenv.NewCgroup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := ns.Listen(t, "tcp", "127.0.0.1:0")
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := l.Addr().(interface{ String() string }).String()
	port = port[strings.LastIndex(port, ":")+1:]
	before, err := fw.Snapshot(ctx, fw.Config{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}

	// A client that exists before the agent and connects when told to.
	pre := ns.CommandInCgroup(ctx, cg, uid, gid, "bash", "-c", "read x; exec 3<>/dev/tcp/127.0.0.1/"+port)
	preIn, err := pre.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pre.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { preIn.Close(); pre.Process.Kill(); pre.Wait() }()

	bound := "-all"
	for _, c := range caps {
		bound += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	dir := testenv.TempDir(t)
	sock := filepath.Join(dir, "agent.sock")
	// The test user is a system account, which the default policy allows:
	// ask about every UID but root's instead.
	conf := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(conf, []byte("[[policy.users]]\nuids = \"1-4294967294\"\naction = \"ask\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := testenv.LaunchAgent(ctx, testenv.Options{
		Wrap: []string{"nsenter", "--net=" + ns.Path, "setpriv", "--bounding-set=" + bound, "--inh-caps=-all", "--"},
		Bin:  filepath.Join(bin, "bastion-agent"), Socket: sock, Config: conf, InterceptLoopback: true,
		Args: append([]string{"--cgroup", cg.Path}, args...), Dir: dir, StopTimeout: agentStopTimeout,
	})
	var r capsResult
	if err != nil {
		t.Logf("agent did not start: %v", err)
		return r
	}
	t.Cleanup(func() { a.Stop() })
	r.started = true
	st, err := a.Client.GetStatus(ctx, &agentv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	r.mechanism = st.GetMechanism()
	r.udpReuse = st.GetUdpReuseProtection()

	fmt.Fprintln(preIn, "go")
	curl := ns.CommandInCgroup(ctx, cg, uid, gid, "curl", "-s", "-m", "30", "-o", "/dev/null", "http://127.0.0.1:"+port+"/")
	if err := curl.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { curl.Process.Kill(); curl.Wait() }()
	for _, c := range []struct {
		pid int
		exe *string
	}{{pre.Process.Pid, &r.preExe}, {curl.Process.Pid, &r.newExe}} {
		p, err := pendingWhere(t, a.Client, 15*time.Second, func(p *agentv1.PendingConnection) bool {
			return p.GetFlow().GetDstPort() != 0 && fmt.Sprint(p.GetFlow().GetDstPort()) == port &&
				(int(p.GetProcess().GetPid()) == c.pid || p.GetProcess().GetPid() == 0)
		})
		if err != nil {
			t.Fatalf("connection of pid %d not held: %v", c.pid, err)
		}
		*c.exe = p.GetProcess().GetExe()
		if _, err := a.Client.Decide(ctx, &agentv1.DecideRequest{Id: p.GetId(), Action: agentv1.Action_ACTION_ALLOW}); err != nil {
			t.Fatal(err)
		}
	}
	// Asked after the chain is in place: an agent whose iptables cannot
	// load the match turns kernel decisions off then.
	st, err = a.Client.GetStatus(ctx, &agentv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	r.kernel = st.GetKernelDecisions().GetMechanism() == kernelMechanism
	if err := a.Stop(); err != nil {
		t.Errorf("agent exit: %v: %s", err, a.Log())
	}
	r.log = a.Log()
	after, err := fw.Snapshot(ctx, fw.Config{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("the agent left rules behind:\n%s", after)
	}
	return r
}
