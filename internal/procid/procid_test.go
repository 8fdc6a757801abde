package procid

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf/link"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/netns"
	"github.com/bastion-fw/bastion/internal/testenv"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

type flowCase struct {
	mode  string
	proto flow.Proto
	dst   string // host:port; port ignored for ping
	uid   uint32
}

var flowCases = []flowCase{
	{"tcp4", flow.TCP, "127.0.0.1:%d", 0},
	{"tcp6", flow.TCP, "[::1]:%d", 1000},
	{"udp4", flow.UDP, "127.0.0.1:%d", 1001},
	{"udp6", flow.UDP, "[::1]:%d", 1000},
	{"ping4", flow.ICMP, "127.0.0.1:%d", 1001},
	{"ping6", flow.ICMPv6, "[::1]:%d", 0},
}

// checkFlows runs every flowCase as a short-lived helper process and checks
// that r names it. With relative, the helper is executed by a relative
// path, which must still give an absolute Exe.
func checkFlows(t *testing.T, r Resolver, ns *os.File, cg *testenv.Cgroup) {
	dir, bin := helperBinary(t)
	l4 := listen(t, ns, "tcp4", "127.0.0.1:0")
	l6 := listen(t, ns, "tcp6", "[::1]:0")
	for i, c := range flowCases {
		t.Run(c.mode, func(t *testing.T) {
			port := 9 // discard; nobody listens, which is fine for UDP
			switch c.mode {
			case "tcp4":
				port = l4.Addr().(*net.TCPAddr).Port
			case "tcp6":
				port = l6.Addr().(*net.TCPAddr).Port
			case "ping4", "ping6":
				port = 0
			}
			dst := fmt.Sprintf(c.dst, port)
			argv0 := bin
			if i%2 == 1 {
				argv0 = "./" + filepath.Base(bin) // relative execve path
			}
			marker := fmt.Sprintf("marker-%s-%d", c.mode, i)
			h := startHelper(t, ns, helperOpts{
				mode: c.mode, dst: dst, uid: c.uid, cgroup: cg,
				argv0: argv0, dir: dir, args: []string{marker, "second arg"},
			})
			// The helper has exited: this is the short-lived case.
			dap := netip.MustParseAddrPort(dst)
			tup := flow.Tuple{Proto: c.proto, Src: h.local.Addr(), Dst: dap.Addr(), SrcPort: h.local.Port(), DstPort: dap.Port()}
			if c.proto == flow.ICMP || c.proto == flow.ICMPv6 {
				tup.DstPort = 0
			}
			p := waitResolve(t, r.Resolve, tup)
			t.Logf("%s -> %+v", tup, p)
			pid := uint32(h.cmd.Process.Pid)
			if p.TGID != pid || p.PID != pid {
				t.Errorf("pid/tgid = %d/%d, want %d", p.PID, p.TGID, pid)
			}
			if p.UID != c.uid || p.GID != c.uid {
				t.Errorf("uid/gid = %d/%d, want %d", p.UID, p.GID, c.uid)
			}
			if p.Exe != bin {
				t.Errorf("exe = %q, want %q", p.Exe, bin)
			}
			if p.ExeIdentity != flow.ExeHost || p.ExeIno == 0 || p.MntNS == 0 {
				t.Errorf("exe identity %s (dev %d ino %d mnt_ns %d), want the host's file", p.ExeIdentity, p.ExeDev, p.ExeIno, p.MntNS)
			}
			if want := []string{argv0, marker, "second arg"}; !slices.Equal(p.Args, want) {
				t.Errorf("args = %q, want %q", p.Args, want)
			}
			if p.PPID != uint32(os.Getpid()) {
				t.Errorf("ppid = %d, want %d", p.PPID, os.Getpid())
			}
			if p.Source != string(r.Mechanism()) {
				t.Errorf("source = %q, want %q", p.Source, r.Mechanism())
			}
			if p.StartTime == 0 {
				t.Errorf("start time is 0")
			}
			if br, ok := r.(*bpfResolver); ok {
				checkRecent(t, br, tup)
			}
			r.Forget(tup)
		})
	}
}

// checkRecent checks that nf_local_out's memory-mapped copy of tup's flow
// (recent_flows) is readable at the slot the agent computes, and says what
// the flows map says. Under MechSockOps nothing writes it.
func checkRecent(t *testing.T, r *bpfResolver, tup flow.Tuple) {
	t.Helper()
	if r.mech != MechNetfilterLink {
		if r.recent != nil {
			t.Errorf("%s maps recent_flows", r.mech)
		}
		return
	}
	var k procidFlowKey
	var fromMap, fromRecent procidFlowValue
	setKey(&k, r.netns, tup)
	if err := r.flows.Lookup(&k, &fromMap); err != nil {
		t.Fatalf("flows map: %v", err)
	}
	if !r.recent.lookup(&k, &fromRecent) {
		t.Fatalf("recent_flows has no copy of %s (slot %d)", tup, recentSlot(&k)%uint32(len(r.recent.mem)/int(slotSize)))
	}
	if fromRecent != fromMap {
		t.Errorf("recent_flows says %+v, flows says %+v", fromRecent, fromMap)
	}
	hits := r.recent.hits.Load()
	if _, err := r.Resolve(tup); err != nil {
		t.Fatalf("resolve again: %v", err)
	}
	if r.recent.hits.Load() != hits+1 {
		t.Errorf("Resolve did not answer from recent_flows")
	}
}

func TestNetfilterLink(t *testing.T) {
	requireMechanism(t, MechNetfilterLink)
	ns, _ := newNetns(t)
	r := openNetfilter(t, ns)
	checkFlows(t, r, ns, nil)
}

func TestSockOps(t *testing.T) {
	requireMechanism(t, MechSockOps)
	ns, _ := newNetns(t)
	cg := testenv.NewCgroup(t)
	r, err := Open(Config{Mechanism: MechSockOps, NetNS: ns, CgroupPath: cg.Path, Log: testLogger(t)})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer r.Close()
	checkFlows(t, r, ns, cg)
}

func TestNotFound(t *testing.T) {
	testenv.RequireKernelFeature(t, MechNetfilterLink.KernelFeatures()...)
	ns, _ := newNetns(t)
	r := openNetfilter(t, ns)
	tup := flow.Tuple{Proto: flow.TCP, Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.1"), SrcPort: 1, DstPort: 2}
	if _, err := r.Resolve(tup); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resolve unknown flow: err = %v, want ErrNotFound", err)
	}
}

// TestSameTupleTwoNamespaces sends the same 5-tuple from two namespaces and
// checks each is attributed to its own process.
func TestSameTupleTwoNamespaces(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mech := range []Mechanism{MechNetfilterLink, MechSockOps} {
		t.Run(string(mech), func(t *testing.T) {
			requireMechanism(t, mech)
			nsA, inoA := newNetns(t)
			nsB, inoB := newNetns(t)
			cfg := Config{Mechanism: mech, NetNS: nsA, Log: testLogger(t)}
			var cg *testenv.Cgroup
			if mech == MechSockOps {
				cg = testenv.NewCgroup(t)
				cfg.CgroupPath = cg.Path
			}
			r, err := Open(cfg)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer r.Close()
			br := r.(*bpfResolver)
			if mech == MechNetfilterLink {
				// One set of maps, attached in both namespaces.
				prog := mustNetfilterProg(t, br)
				if err := br.attachNetfilter(nsB, prog); err != nil {
					t.Fatal(err)
				}
			}
			const lport = 40555
			lA := listen(t, nsA, "tcp4", "127.0.0.1:0")
			port := lA.Addr().(*net.TCPAddr).Port
			listen(t, nsB, "tcp4", fmt.Sprintf("127.0.0.1:%d", port))
			dir, bin := helperBinary(t)
			dst := fmt.Sprintf("127.0.0.1:%d", port)
			hA := startHelper(t, nsA, helperOpts{mode: "tcp4", dst: dst, lport: lport, uid: 1000, argv0: bin, dir: dir, cgroup: cg})
			hB := startHelper(t, nsB, helperOpts{mode: "tcp4", dst: dst, lport: lport, uid: 1001, argv0: bin, dir: dir, cgroup: cg})
			tup := flow.Tuple{Proto: flow.TCP, Src: hA.local.Addr(), Dst: netip.MustParseAddr("127.0.0.1"), SrcPort: lport, DstPort: uint16(port)}
			if hA.local != hB.local {
				t.Fatalf("tuples differ: %v vs %v", hA.local, hB.local)
			}
			pA := waitResolve(t, func(tu flow.Tuple) (flow.Process, error) { return br.resolveIn(inoA, tu) }, tup)
			pB := waitResolve(t, func(tu flow.Tuple) (flow.Process, error) { return br.resolveIn(inoB, tu) }, tup)
			if pA.TGID != uint32(hA.cmd.Process.Pid) || pA.UID != 1000 {
				t.Errorf("namespace A: got pid %d uid %d, want %d 1000", pA.TGID, pA.UID, hA.cmd.Process.Pid)
			}
			if pB.TGID != uint32(hB.cmd.Process.Pid) || pB.UID != 1001 {
				t.Errorf("namespace B: got pid %d uid %d, want %d 1001", pB.TGID, pB.UID, hB.cmd.Process.Pid)
			}
		})
	}
}

// TestSystemBinary checks a real program started through a shell that
// exits right after connecting: nc -z.
func TestSystemBinary(t *testing.T) {
	requireMechanism(t, MechNetfilterLink)
	testenv.RequireTools(t, "nc")
	nc, err := exec.LookPath("nc")
	if err != nil {
		t.Fatal(err)
	}
	wantExe, err := filepath.EvalSymlinks(nc)
	if err != nil {
		t.Fatal(err)
	}
	ns, _ := newNetns(t)
	r := openNetfilter(t, ns)

	var l net.Listener
	accepted := make(chan netip.AddrPort, 1)
	l = listenAccept(t, ns, "tcp6", "[::1]:0", accepted)
	port := l.Addr().(*net.TCPAddr).Port
	cmd := exec.Command("sh", "-c", fmt.Sprintf("exec nc -z -w1 ::1 %d", port))
	if err := runIn(ns, cmd); err != nil {
		t.Fatalf("nc: %v", err)
	}
	src := <-accepted
	tup := flow.Tuple{Proto: flow.TCP, Src: src.Addr(), Dst: netip.MustParseAddr("::1"), SrcPort: src.Port(), DstPort: uint16(port)}
	p := waitResolve(t, r.Resolve, tup)
	t.Logf("%s -> %+v", tup, p)
	if p.TGID != uint32(cmd.Process.Pid) {
		t.Errorf("tgid = %d, want %d", p.TGID, cmd.Process.Pid)
	}
	if p.Exe != wantExe {
		t.Errorf("exe = %q, want %q", p.Exe, wantExe)
	}
	if len(p.Args) < 1 || p.Args[0] != "nc" || p.Args[len(p.Args)-1] != fmt.Sprint(port) {
		t.Errorf("args = %q", p.Args)
	}
}

func TestProcFS(t *testing.T) {
	requireMechanism(t, MechProcFS)
	ns, _ := newNetns(t)
	r, err := Open(Config{Mechanism: MechProcFS, NetNS: ns, Log: testLogger(t)})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer r.Close()
	l := listen(t, ns, "tcp4", "127.0.0.1:0")
	dir, bin := helperBinary(t)
	dst := l.Addr().String()
	h := startHelper(t, ns, helperOpts{mode: "tcp4", dst: dst, uid: 1000, hold: true, argv0: bin, dir: dir, args: []string{"held"}})
	dap := netip.MustParseAddrPort(dst)
	tup := flow.Tuple{Proto: flow.TCP, Src: h.local.Addr(), Dst: dap.Addr(), SrcPort: h.local.Port(), DstPort: dap.Port()}
	p := waitResolve(t, r.Resolve, tup)
	if p.TGID != uint32(h.cmd.Process.Pid) || p.UID != 1000 || p.Exe != bin || p.Source != string(MechProcFS) {
		t.Errorf("got %+v, want pid %d uid 1000 exe %s", p, h.cmd.Process.Pid, bin)
	}
}

// TestAuto: auto picks the best mechanism the running kernel offers, by
// what Detect reports, whatever the kernel; and where the netfilter link
// cannot attach (here: every priority it may take is held, as where the
// kernel lacks it) it falls back to the next.
func TestAuto(t *testing.T) {
	testenv.RequireRoot(t)
	f := Detect()
	t.Logf("detected: %s", f)
	for _, tc := range []struct {
		name            string
		netfilterUsable bool
	}{{"as detected", true}, {"netfilter link unavailable", false}} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.netfilterUsable && !f.NetfilterLink {
				t.Skipf("the kernel lacks the netfilter link, so %q is the case above", tc.name)
			}
			ns, _ := newNetns(t)
			if !tc.netfilterUsable {
				holdNetfilterPriorities(t, ns)
			}
			// Should auto fall back to sockops, it attaches to this
			// cgroup, not to the host's root.
			cg := testenv.NewCgroup(t)
			r, err := Open(Config{NetNS: ns, CgroupPath: cg.Path, Log: testLogger(t)})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer r.Close()
			usable := f
			usable.NetfilterLink = f.NetfilterLink && tc.netfilterUsable
			if want := usable.Best(); r.Mechanism() != want {
				t.Errorf("auto picked %s, want %s (detected: %s)", r.Mechanism(), want, f)
			}
		})
	}
}

// holdNetfilterPriorities attaches an accept-all program at every IPv4
// LOCAL_OUT priority nf_local_out may take in ns, until the test ends.
func holdNetfilterPriorities(t *testing.T, ns *os.File) {
	t.Helper()
	prog := acceptAll(t)
	err := netns.Do(ns, func() error {
		for p := int32(nfPriorityFirst); p <= nfPriorityLast; p++ {
			l, err := link.AttachNetfilter(link.NetfilterOptions{Program: prog, ProtocolFamily: link.NetfilterProtoIPv4,
				Hook: link.NetfilterInetLocalOut, Priority: p})
			if err != nil {
				return fmt.Errorf("hold priority %d: %w", p, err)
			}
			t.Cleanup(func() { l.Close() })
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDetect holds what Detect reports against independent evidence: the
// real programs, opened and attached as the agent does. On any kernel the
// two must agree; no kernel version decides anything.
func TestDetect(t *testing.T) {
	testenv.RequireRoot(t)
	f := Detect()
	t.Logf("detected: %s", f)
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err == nil && !f.BTF {
		t.Errorf("/sys/kernel/btf/vmlinux exists, but Detect says btf=no (%s)", f.Reasons["btf"])
	}
	ns, _ := newNetns(t)
	cg := testenv.NewCgroup(t)
	var opened []*bpfResolver
	for _, c := range []struct {
		cfg  Config
		want bool
	}{
		{Config{Mechanism: MechNetfilterLink, NetNS: ns}, f.BTF && f.NetfilterLink},
		{Config{Mechanism: MechSockOps, NetNS: ns, CgroupPath: cg.Path}, f.BTF && f.SockOps && f.SockAddr},
	} {
		c.cfg.Log = testLogger(t)
		r, err := Open(c.cfg)
		if err == nil {
			defer r.Close()
			opened = append(opened, r.(*bpfResolver))
		}
		if got := err == nil; got != c.want {
			t.Errorf("%s: opened %v (err %v), but Detect says it is offered: %v (%s)", c.cfg.Mechanism, got, err, c.want, f)
		}
	}
	// Exec tracking (tp_btf) loads with either mechanism, and keeps its
	// map only when its programs attached.
	for _, r := range opened {
		if got := r.execs != nil; got != f.TpBtf {
			t.Errorf("%s: exec tracking attached %v, but Detect says tp_btf=%v (%s)", r.mech, got, f.TpBtf, f.Reasons["tp_btf"])
		}
	}
	if len(opened) == 0 {
		t.Logf("no eBPF mechanism opened: tp_btf=%v is not checked", f.TpBtf)
	}
}

// TestFallbackIsLoggedAsOne: the procfs resolver opened as the second
// chance of an eBPF mechanism says so, and does not claim that there is no
// eBPF (which read as a contradiction right after "netfilter-link ready");
// opened as the mechanism itself it still warns about short-lived
// processes.
func TestFallbackIsLoggedAsOne(t *testing.T) {
	requireMechanism(t, MechProcFS)
	ns, _ := newNetns(t)
	for _, tc := range []struct {
		name     string
		fallback Mechanism
		want     []string
		wantNot  []string
	}{
		{"fallback", MechNetfilterLink, []string{"fallback ready", "fallback_for=netfilter-link", "mechanism=procfs"}, []string{"no eBPF"}},
		{"primary", "", []string{"process identification ready", "mechanism=procfs", "no eBPF"}, []string{"fallback"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf strings.Builder
			log := slog.New(slog.NewTextHandler(&buf, nil))
			r, err := Open(Config{Mechanism: MechProcFS, FallbackFor: tc.fallback, NetNS: ns, Log: log})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			r.Close()
			for _, s := range tc.want {
				if !strings.Contains(buf.String(), s) {
					t.Errorf("log does not say %q:\n%s", s, buf.String())
				}
			}
			for _, s := range tc.wantNot {
				if strings.Contains(buf.String(), s) {
					t.Errorf("log says %q:\n%s", s, buf.String())
				}
			}
		})
	}
}
