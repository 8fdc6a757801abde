package procid

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// TestForkWithoutExec checks that a child that forks and connects without
// exec is named as itself, with its parent's executable.
func TestForkWithoutExec(t *testing.T) {
	requireMechanism(t, MechNetfilterLink)
	testenv.RequireTools(t, "python3")
	// The system interpreter, not a pyenv-style shim script.
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("python3 is installed, but not as %s: %v", py, err)
	}
	wantExe, err := filepath.EvalSymlinks(py)
	if err != nil {
		t.Fatal(err)
	}
	ns, _ := newNetns(t)
	r := openNetfilter(t, ns)
	accepted := make(chan netip.AddrPort, 1)
	l := listenAccept(t, ns, "tcp4", "127.0.0.1:0", accepted)
	port := l.Addr().(*net.TCPAddr).Port
	// The child prints its own pid, connects and exits.
	script := fmt.Sprintf(`import os, socket, sys
pid = os.fork()
if pid == 0:
    print(os.getpid(), flush=True)
    socket.create_connection(("127.0.0.1", %d)).close()
    os._exit(0)
os.waitpid(pid, 0)
`, port)
	cmd := exec.Command(py, "-c", script)
	var out strings.Builder
	cmd.Stdout = &out
	if err := runIn(ns, cmd); err != nil {
		t.Fatalf("python: %v", err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("child pid %q: %v", out.String(), err)
	}
	src := <-accepted
	tup := flow.Tuple{Proto: flow.TCP, Src: src.Addr(), Dst: netip.MustParseAddr("127.0.0.1"), SrcPort: src.Port(), DstPort: uint16(port)}
	p := waitResolve(t, r.Resolve, tup)
	t.Logf("%s -> %+v", tup, p)
	if p.TGID != uint32(child) || p.PPID != uint32(cmd.Process.Pid) {
		t.Errorf("tgid/ppid = %d/%d, want %d/%d", p.TGID, p.PPID, child, cmd.Process.Pid)
	}
	if p.Exe != wantExe || len(p.Args) != 3 || p.Args[1] != "-c" {
		t.Errorf("exe %q args %q, want %q and the parent's argv", p.Exe, p.Args, wantExe)
	}
}

// TestExeAcrossMount runs the helper from a tmpfs mounted inside the test's
// temporary directory, so the dentry walk must cross a mount point.
func TestExeAcrossMount(t *testing.T) {
	requireMechanism(t, MechNetfilterLink)
	ns, _ := newNetns(t)
	r := openNetfilter(t, ns)
	dir, bin := helperBinary(t)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bastion-test", mnt, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	inner := filepath.Join(mnt, "sub", "helper-in-tmpfs")
	if err := os.MkdirAll(filepath.Dir(inner), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(inner, data, 0o755); err != nil {
		t.Fatal(err)
	}
	l := listen(t, ns, "tcp4", "127.0.0.1:0")
	dst := l.Addr().String()
	h := startHelper(t, ns, helperOpts{mode: "tcp4", dst: dst, uid: 1000, argv0: "./sub/helper-in-tmpfs", dir: mnt})
	dap := netip.MustParseAddrPort(dst)
	tup := flow.Tuple{Proto: flow.TCP, Src: h.local.Addr(), Dst: dap.Addr(), SrcPort: h.local.Port(), DstPort: dap.Port()}
	p := waitResolve(t, r.Resolve, tup)
	if p.Exe != inner {
		t.Errorf("exe = %q, want %q", p.Exe, inner)
	}
}

// BenchmarkResolve measures Resolve for a flow whose process is in the exec
// map (the common case for processes started after the agent), which reads
// the flow from recent_flows, against a bare flows map lookup (the bpf()
// syscall Resolve made before) as the baseline.
func BenchmarkResolve(b *testing.B) {
	requireMechanism(b, MechNetfilterLink)
	ns, _ := newNetns(b)
	r, err := Open(Config{Mechanism: MechNetfilterLink, NetNS: ns})
	if err != nil {
		b.Fatalf("open: %v", err)
	}
	defer r.Close()
	l := listen(b, ns, "tcp4", "127.0.0.1:0")
	dir, bin := helperBinary(b)
	dst := l.Addr().String()
	h := startHelper(b, ns, helperOpts{mode: "tcp4", dst: dst, uid: 1000, argv0: bin, dir: dir, args: []string{"bench"}})
	dap := netip.MustParseAddrPort(dst)
	tup := flow.Tuple{Proto: flow.TCP, Src: h.local.Addr(), Dst: dap.Addr(), SrcPort: h.local.Port(), DstPort: dap.Port()}
	if p, err := r.Resolve(tup); err != nil || p.Exe != bin {
		b.Fatalf("resolve: %+v %v", p, err)
	}
	br := r.(*bpfResolver)
	b.Run("flows-lookup-only", func(b *testing.B) {
		var k procidFlowKey
		var v procidFlowValue
		setKey(&k, br.netns, tup)
		b.ReportAllocs()
		for b.Loop() {
			if err := br.flows.Lookup(&k, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("resolve", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Resolve(tup); err != nil {
				b.Fatal(err)
			}
		}
	})
}
