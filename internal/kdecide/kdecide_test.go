package kdecide

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/kernelfeature"
	"github.com/bastion-fw/bastion/internal/testenv"
)

const testUID = 1000

// kernelEnv is a namespace whose OUTPUT chain lets a TCP SYN or a new UDP
// flow pass only when xt_allow matches it, with the decision programs
// attached to a cgroup the dialer runs in.
type kernelEnv struct {
	ns     *testenv.NS
	cg     *testenv.Cgroup
	k      *Kernel
	dialer string
	exe    Key   // UID and the dialer's file; the rest zero
	ctime  Ctime // the dialer's file's ctime
	events chan Event
}

func newKernelEnv(t *testing.T) *kernelEnv {
	t.Helper()
	testenv.RequireE2E(t)
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "iptables")
	testenv.RequireKernelFeature(t, kernelfeature.BTF, kernelfeature.SockAddr)
	e := &kernelEnv{ns: testenv.NewNetNS(t), cg: testenv.NewCgroup(t), dialer: testenv.BuildDialer(t), events: make(chan Event, 1024)}
	dir := filepath.Join(DefaultPinRoot, "test-"+strconv.Itoa(os.Getpid())+"-"+strings.ReplaceAll(t.Name(), "/", "_"))
	k, err := Open(Config{NetNS: e.ns.File, CgroupPath: e.cg.Path, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	e.k = k
	e.exe, e.ctime = fileKey(t, e.dialer)
	e.exe.UID = testUID
	e.iptables(t, "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
	e.iptables(t, "-A", "OUTPUT", "-m", "bpf", "--object-pinned", k.XtPin(), "-j", "ACCEPT")
	e.iptables(t, "-A", "OUTPUT", "-p", "tcp", "--syn", "-j", "DROP")
	e.iptables(t, "-A", "OUTPUT", "-p", "udp", "-j", "DROP")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := k.ReadEvents(ctx, func(b []Event) {
			for _, ev := range b {
				e.events <- ev
			}
		}); err != nil {
			t.Errorf("ReadEvents: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return e
}

func (e *kernelEnv) iptables(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + e.ns.Path, "iptables", "-w"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("iptables %v: %v: %s", args, err, out)
	}
}

// fileKey is the kernel's identity of the file at path, and its ctime.
func fileKey(t *testing.T, path string) (Key, Ctime) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return Key{ExeDev: unix.Major(st.Dev)<<20 | unix.Minor(st.Dev), ExeIno: st.Ino}, Ctime{st.Ctim.Sec, uint32(st.Ctim.Nsec)}
}

func (e *kernelEnv) dial(t *testing.T, network, addr string) testenv.DialResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := e.ns.CommandInCgroup(ctx, e.cg, testUID, testUID, e.dialer, "-net", network, "-addr", addr, "-timeout", "400ms", "-reply")
	out, err := cmd.Output()
	var r testenv.DialResult
	if jerr := jsonUnmarshal(out, &r); jerr != nil {
		t.Fatalf("dialer %s %s: %v %v: %s", network, addr, jerr, err, out)
	}
	return r
}

func (e *kernelEnv) remember(t *testing.T, proto flow.Proto, dst string, port uint16, a flow.Action, by string) {
	t.Helper()
	k := e.exe
	k.Proto, k.Dst, k.Port = proto, netip.MustParseAddr(dst), port
	if err := e.k.Remember(Decision{Key: k, Action: a, By: by, Gen: e.k.Gen(testUID), ExeCtime: e.ctime}); err != nil {
		t.Fatal(err)
	}
}

func (e *kernelEnv) nextEvent(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-e.events:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no kernel decision event within 5 s")
	}
	return Event{}
}

// echo serves TCP and UDP echo on 127.0.0.1:port in the namespace.
func (e *kernelEnv) echo(t *testing.T, port int) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	e.ns.Serve(t, "tcp4", addr, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 512)
		n, _ := c.Read(buf)
		c.Write(buf[:n])
	})
	pc := e.ns.ListenPacket(t, "udp4", addr)
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// TestKernelDecides: remembered decisions are applied in the kernel —
// allow without the queue, deny with EPERM at connect(), reject with
// ECONNREFUSED — and each is reported with its process and rule; no
// decision, a stale generation and an expired decision all leave the
// connection to the chain's next rule (here a DROP).
func TestKernelDecides(t *testing.T) {
	e := newKernelEnv(t)
	for _, p := range []int{7001, 7002, 7003, 7004} {
		e.echo(t, p)
	}
	e.remember(t, flow.TCP, "127.0.0.1", 7001, flow.ActionAllow, "rule:allow-7001")
	e.remember(t, flow.TCP, "127.0.0.1", 7002, flow.ActionDeny, "rule:deny-7002")
	e.remember(t, flow.TCP, "127.0.0.1", 7003, flow.ActionReject, "cache:c3")
	e.remember(t, flow.UDP, "127.0.0.1", 7001, flow.ActionAllow, "rule:udp")

	if r := e.dial(t, "tcp4", "127.0.0.1:7001"); !r.OK {
		t.Fatalf("remembered allow: %+v", r)
	}
	ev := e.nextEvent(t)
	if ev.Action != flow.ActionAllow || ev.By != "rule:allow-7001" || ev.Process.UID != testUID || ev.Tuple.DstPort != 7001 ||
		ev.Tuple.SrcPort == 0 || ev.Tuple.Src != netip.MustParseAddr("127.0.0.1") || ev.Process.Comm != "bastion-dialer" || ev.Process.TGID == 0 {
		t.Errorf("allow event %+v", ev)
	}
	if r := e.dial(t, "tcp4", "127.0.0.1:7002"); r.OK || r.Kind != "permission" {
		t.Errorf("remembered deny: %+v, want a permission error", r)
	} else if r.ElapsedUS > 100_000 {
		t.Errorf("remembered deny took %d µs", r.ElapsedUS)
	}
	if ev := e.nextEvent(t); ev.Action != flow.ActionDeny || ev.By != "rule:deny-7002" || ev.Tuple.DstPort != 7002 {
		t.Errorf("deny event %+v", ev)
	}
	if r := e.dial(t, "tcp4", "127.0.0.1:7003"); r.OK || r.Kind != "refused" {
		t.Errorf("remembered reject: %+v, want refused", r)
	}
	if ev := e.nextEvent(t); ev.Action != flow.ActionReject || ev.By != "cache:c3" {
		t.Errorf("reject event %+v", ev)
	}
	if r := e.dial(t, "udp4", "127.0.0.1:7001"); !r.OK {
		t.Errorf("remembered udp allow: %+v", r)
	}
	if ev := e.nextEvent(t); ev.Action != flow.ActionAllow || ev.Tuple.Proto != flow.UDP {
		t.Errorf("udp allow event %+v", ev)
	}
	// Nothing remembered: the chain's DROP.
	if r := e.dial(t, "tcp4", "127.0.0.1:7004"); r.OK || r.Kind != "timeout" {
		t.Errorf("no decision: %+v, want a timeout (dropped)", r)
	}
	// Another program (same UID) gets nothing from the dialer's allow.
	other := filepath.Join(filepath.Dir(e.dialer), "other-dialer")
	testenv.CopyExecutable(t, e.dialer, other)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := e.ns.CommandInCgroup(ctx, e.cg, testUID, testUID, other, "-net", "tcp4", "-addr", "127.0.0.1:7001", "-timeout", "400ms").Output()
	var r testenv.DialResult
	if err := jsonUnmarshal(out, &r); err != nil || r.OK {
		t.Errorf("another executable got the dialer's allow: %+v (%v)", r, err)
	}

	// A new generation makes every decision of the UID stale at once.
	if err := e.k.Invalidate(testUID); err != nil {
		t.Fatal(err)
	}
	if r := e.dial(t, "tcp4", "127.0.0.1:7001"); r.OK {
		t.Errorf("stale allow still applied: %+v", r)
	}
	if r := e.dial(t, "tcp4", "127.0.0.1:7002"); r.Kind != "timeout" {
		t.Errorf("stale deny still applied: %+v", r)
	}
	st, err := e.k.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != 0 || st.Allowed != 2 || st.Denied != 1 || st.Rejected != 1 || st.Lost != 0 {
		t.Errorf("stats %+v, want 0 entries, 2 allowed, 1 denied, 1 rejected, 0 lost", st)
	}

	// An expiry ends a decision in the kernel by itself.
	k := e.exe
	k.Proto, k.Dst, k.Port = flow.TCP, netip.MustParseAddr("127.0.0.1"), 7001
	if err := e.k.Remember(Decision{Key: k, Action: flow.ActionAllow, By: "rule:soon", Gen: e.k.Gen(testUID), ExeCtime: e.ctime, Expires: time.Now().Add(300 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if r := e.dial(t, "tcp4", "127.0.0.1:7001"); !r.OK {
		t.Fatalf("allow before its expiry: %+v", r)
	}
	time.Sleep(400 * time.Millisecond) // the expiry itself is what is tested
	if r := e.dial(t, "tcp4", "127.0.0.1:7001"); r.OK {
		t.Errorf("expired allow still applied: %+v", r)
	}
}

// TestRememberStaleGeneration: a decision made under a generation that was
// invalidated meanwhile is never stored.
func TestRememberStaleGeneration(t *testing.T) {
	e := newKernelEnv(t)
	e.echo(t, 7001)
	g := e.k.Gen(testUID)
	if err := e.k.Invalidate(testUID); err != nil {
		t.Fatal(err)
	}
	k := e.exe
	k.Proto, k.Dst, k.Port = flow.TCP, netip.MustParseAddr("127.0.0.1"), 7001
	if err := e.k.Remember(Decision{Key: k, Action: flow.ActionAllow, By: "rule:old", Gen: g, ExeCtime: e.ctime}); err != nil {
		t.Fatal(err)
	}
	if r := e.dial(t, "tcp4", "127.0.0.1:7001"); r.OK {
		t.Errorf("decision of a stale generation applied: %+v", r)
	}
}

// TestDatagramsAreRecordedOncePerFlow: an unconnected UDP socket sending
// datagram after datagram to one allowed destination (each sendmsg runs
// the hook, and with no reply each datagram is a new flow to the chain)
// makes one record, not one per datagram; a datagram to a destination with
// no decision, sent from the same socket, is left to the chain (dropped
// here).
func TestDatagramsAreRecordedOncePerFlow(t *testing.T) {
	e := newKernelEnv(t)
	e.ns.ListenPacket(t, "udp4", "127.0.0.1:7001")
	// Every datagram meets the match, whatever conntrack makes of the
	// flow.
	e.iptables(t, "-I", "OUTPUT", "1", "-m", "bpf", "--object-pinned", e.k.XtPin(), "-j", "ACCEPT")
	e.remember(t, flow.UDP, "127.0.0.1", 7001, flow.ActionAllow, "rule:udp")
	pc := e.ns.ListenPacket(t, "udp4", "127.0.0.1:7002")
	got := make(chan int, 16)
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			got <- 1
		}
	}()
	dsts := strings.Repeat("127.0.0.1:7001,", 5) + "127.0.0.1:7002"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The last datagram is dropped by the chain, which sendto reports.
	out, _ := e.ns.CommandInCgroup(ctx, e.cg, testUID, testUID, e.dialer, "-net", "udp4", "-sendto", "-addr", dsts).Output()
	var r testenv.DialResult
	if err := jsonUnmarshal(out, &r); err != nil || r.Kind != "permission" || !strings.Contains(r.Error, "127.0.0.1:7002") {
		t.Fatalf("dialer: %+v (%v), want the datagram to 7002 refused by the chain's DROP", r, err)
	}
	ev := e.nextEvent(t)
	if ev.Action != flow.ActionAllow || ev.Tuple.DstPort != 7001 {
		t.Fatalf("event %+v", ev)
	}
	select {
	case ev := <-e.events:
		t.Fatalf("a second record for the same flow: %+v", ev)
	case <-got:
		t.Fatal("the datagram to a destination with no decision got through")
	case <-time.After(500 * time.Millisecond):
	}
	st, err := e.k.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets != 5 || st.Allowed != 1 {
		t.Errorf("stats %+v: want 5 packets matched, 1 connection allowed", st)
	}
}

// TestDeletedExecutableIsNotItsFile: a process running a file that no name
// leads to any more (deleted, or replaced by an upgrade) gets none of that
// file's decisions in the kernel — the agent does not verify such a
// process's path either — while a process running the file under its name
// does.
func TestDeletedExecutableIsNotItsFile(t *testing.T) {
	e := newKernelEnv(t)
	testenv.RequireTools(t, "sh")
	e.echo(t, 7001)
	dir, err := os.MkdirTemp("", "kdecide-deleted-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "dialer")
	testenv.CopyExecutable(t, e.dialer, exe)
	key, ctime := fileKey(t, exe)
	key.UID, key.Proto, key.Dst, key.Port = testUID, flow.TCP, netip.MustParseAddr("127.0.0.1"), 7001
	if err := e.k.Remember(Decision{Key: key, Action: flow.ActionAllow, By: "rule:file", Gen: e.k.Gen(testUID), ExeCtime: ctime}); err != nil {
		t.Fatal(err)
	}
	run := func(script string) testenv.DialResult {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, _ := e.ns.CommandInCgroup(ctx, e.cg, testUID, testUID, "sh", "-c", script, "sh", exe).Output()
		var r testenv.DialResult
		if err := jsonUnmarshal(out, &r); err != nil {
			t.Fatalf("%s: %v: %q", script, err, out)
		}
		return r
	}
	args := " -net tcp4 -addr 127.0.0.1:7001 -timeout 400ms"
	if r := run(`exec "$1"` + args); !r.OK {
		t.Fatalf("the file under its name: %+v", r)
	}
	// The same file, run after its only name is gone.
	if r := run(`exec 3<"$1"; rm "$1"; exec /proc/self/fd/3` + args); r.OK {
		t.Fatalf("a deleted file got its decision: %+v", r)
	}
}

// TestRenamedExecutableIsNotItsFile: a decision made for a file under
// one name stops applying once the file is renamed — the rules may decide
// the new name otherwise, and the queue decides it again — and does not
// come back when the file gets its old name back: the file's ctime, which
// a rename changes, is part of the decision.
func TestRenamedExecutableIsNotItsFile(t *testing.T) {
	e := newKernelEnv(t)
	e.echo(t, 7001)
	dir, err := os.MkdirTemp("", "kdecide-renamed-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	exe, renamed := filepath.Join(dir, "dialer"), filepath.Join(dir, "other")
	testenv.CopyExecutable(t, e.dialer, exe)
	key, ctime := fileKey(t, exe)
	key.UID, key.Proto, key.Dst, key.Port = testUID, flow.TCP, netip.MustParseAddr("127.0.0.1"), 7001
	if err := e.k.Remember(Decision{Key: key, Action: flow.ActionAllow, By: "rule:file", Gen: e.k.Gen(testUID), ExeCtime: ctime}); err != nil {
		t.Fatal(err)
	}
	dial := func(path string) testenv.DialResult {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, _ := e.ns.CommandInCgroup(ctx, e.cg, testUID, testUID, path, "-net", "tcp4", "-addr", "127.0.0.1:7001", "-timeout", "400ms").Output()
		var r testenv.DialResult
		if err := jsonUnmarshal(out, &r); err != nil {
			t.Fatalf("%s: %v: %q", path, err, out)
		}
		return r
	}
	if r := dial(exe); !r.OK {
		t.Fatalf("the file under the name it was decided for: %+v", r)
	}
	// Rename it (on a kernel without fine-grained timestamps, a rename in
	// the clock tick of the file's last change would keep its ctime:
	// rename it again until the ctime moved).
	for deadline := time.Now().Add(time.Second); ; {
		if err := os.Rename(exe, renamed); err != nil {
			t.Fatal(err)
		}
		if _, c := fileKey(t, renamed); c != ctime {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("renames for 1s did not change the file's ctime")
		}
		if err := os.Rename(renamed, exe); err != nil {
			t.Fatal(err)
		}
	}
	if r := dial(renamed); r.OK {
		t.Errorf("the renamed file got the decision made for its old name: %+v", r)
	}
	if err := os.Rename(renamed, exe); err != nil {
		t.Fatal(err)
	}
	if r := dial(exe); r.OK {
		t.Errorf("the file renamed back got the decision made before the renames: %+v", r)
	}
}

// TestDecidedForTheSocketsOwner: a connection belongs to its socket's
// owner (the file-system UID that made it), as the agent counts it, not to
// the caller's real UID: a process running as UID 1000 with effective UID
// 1001 (a setuid program midway) gets neither UID 1000's remembered deny
// (for TCP, whose socket shows its owner) nor UID 1000's allow (for IPv4
// UDP, whose socket does not, and whose match checks the owner).
func TestDecidedForTheSocketsOwner(t *testing.T) {
	e := newKernelEnv(t)
	testenv.RequireTools(t, "setpriv")
	e.echo(t, 7001)
	e.remember(t, flow.TCP, "127.0.0.1", 7001, flow.ActionDeny, "rule:deny-1000")
	e.remember(t, flow.UDP, "127.0.0.1", 7001, flow.ActionAllow, "rule:allow-1000")
	run := func(network string) testenv.DialResult {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, _ := e.ns.CommandInCgroup(ctx, e.cg, 0, 0, "setpriv", "--ruid=1000", "--euid=1001", "--rgid=1000", "--egid=1001", "--clear-groups",
			e.dialer, "-net", network, "-addr", "127.0.0.1:7001", "-timeout", "400ms", "-reply").Output()
		var r testenv.DialResult
		if err := jsonUnmarshal(out, &r); err != nil {
			t.Fatalf("%s: %v: %q", network, err, out)
		}
		return r
	}
	if r := run("tcp4"); r.Kind != "timeout" {
		t.Errorf("tcp4 with euid 1001: %+v; want UID 1000's deny not applied (the chain's DROP: a timeout)", r)
	}
	if r := run("udp4"); r.OK {
		t.Errorf("udp4 with euid 1001: %+v; want UID 1000's allow not applied", r)
	}
	// The same program as UID 1000 alone gets both.
	if r := e.dial(t, "tcp4", "127.0.0.1:7001"); r.Kind != "permission" {
		t.Errorf("tcp4 as 1000: %+v, want UID 1000's deny", r)
	}
	if r := e.dial(t, "udp4", "127.0.0.1:7001"); !r.OK {
		t.Errorf("udp4 as 1000: %+v, want UID 1000's allow", r)
	}
}

// TestForgetBy: a restarted agent removes the decisions its predecessor's
// cache made (ForgetBy "cache:") and keeps those of rules.
func TestForgetBy(t *testing.T) {
	e := newKernelEnv(t)
	e.echo(t, 7001)
	e.echo(t, 7002)
	e.remember(t, flow.TCP, "127.0.0.1", 7001, flow.ActionAllow, "rule:r1")
	e.remember(t, flow.TCP, "127.0.0.1", 7002, flow.ActionAllow, "cache:d1")
	if n, err := e.k.ForgetBy("cache:"); err != nil || n != 1 {
		t.Fatalf("ForgetBy = %d, %v; want 1", n, err)
	}
	if r := e.dial(t, "tcp4", "127.0.0.1:7001"); !r.OK {
		t.Errorf("the rule's decision went too: %+v", r)
	}
	if r := e.dial(t, "tcp4", "127.0.0.1:7002"); r.OK {
		t.Errorf("the cache's decision stayed: %+v", r)
	}
}

// TestExpiryIsOnTheWallClock: on a kernel that has bpf_ktime_get_tai_ns
// (6.1 and later), a decision's expiry is stored on CLOCK_TAI, the wall
// clock's, so that a step of the wall clock moves it as it moves the end
// of the rule it came from; the stored value is the wall time the
// decision names. Without the helper it is on the boot clock.
func TestExpiryIsOnTheWallClock(t *testing.T) {
	e := newKernelEnv(t)
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	if want := major > 6 || (major == 6 && minor >= 1); want != (e.k.ExpiryClock() == "tai") {
		t.Fatalf("kernel %d.%d: expiry clock %q", major, minor, e.k.ExpiryClock())
	}
	e.echo(t, 7001)
	k := e.exe
	k.Proto, k.Dst, k.Port = flow.TCP, netip.MustParseAddr("127.0.0.1"), 7001
	// A time with Go's monotonic reading, as the agent's cache makes
	// them: what is left is still measured on the wall clock.
	expires := time.Now().Add(time.Hour)
	before := e.k.expiryNow()
	if err := e.k.Remember(Decision{Key: k, Action: flow.ActionAllow, By: "rule:hour", Gen: e.k.Gen(testUID), ExeCtime: e.ctime, Expires: expires}); err != nil {
		t.Fatal(err)
	}
	after := e.k.expiryNow()
	var v decideKdValue
	kk := keyOf(k)
	if err := e.k.objs.Decisions.Lookup(&kk, &v); err != nil {
		t.Fatal(err)
	}
	// Early by the time Remember took, never late.
	lo, hi := before+time.Hour.Nanoseconds()-(after-before), after+time.Hour.Nanoseconds()
	if got := int64(v.Expires); got < lo-int64(time.Millisecond) || got > hi {
		t.Errorf("stored expiry %d, want within [%d, %d] on the %s clock", got, lo, hi, e.k.ExpiryClock())
	}
	if e.k.ExpiryClock() == "tai" {
		var tai, real unix.Timespec
		unix.ClockGettime(unix.CLOCK_TAI, &tai)
		unix.ClockGettime(unix.CLOCK_REALTIME, &real)
		offset := (tai.Nano() - real.Nano() + int64(time.Second)/2) / int64(time.Second) * int64(time.Second)
		if d := time.Duration(int64(v.Expires) - offset - expires.UnixNano()); d > 0 || d < -time.Millisecond {
			t.Errorf("stored expiry is %v from the wall time it names (TAI offset %v)", d, time.Duration(offset))
		}
	}
	if r := e.dial(t, "tcp4", "127.0.0.1:7001"); !r.OK {
		t.Errorf("allow an hour before its expiry not applied: %+v", r)
	}
}
