package procid

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/testenv"
)

// TestExeIdentity: a process whose executable was deleted before it
// connected is ExeDeleted, and one that runs another file bind-mounted over
// /usr/bin/curl in a mount namespace of its own is named /usr/bin/curl but
// ExeOtherNS, with its namespace; under the eBPF exec records and under the
// /proc fallback alike.
func TestExeIdentity(t *testing.T) {
	testenv.RequireRoot(t)
	hostNS, err := nsInode("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	for _, mech := range []Mechanism{MechNetfilterLink, MechProcFS} {
		t.Run(string(mech), func(t *testing.T) {
			requireMechanism(t, mech)
			ns, _ := newNetns(t)
			r, err := Open(Config{Mechanism: mech, NetNS: ns, Log: testLogger(t)})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer r.Close()
			l := listen(t, ns, "tcp4", "127.0.0.1:0")
			dst := l.Addr().String()
			dap := netip.MustParseAddrPort(dst)
			resolve := func(h *helperProc) flow.Process {
				tup := flow.Tuple{Proto: flow.TCP, Src: h.local.Addr(), Dst: dap.Addr(), SrcPort: h.local.Port(), DstPort: dap.Port()}
				p := waitResolve(t, r.Resolve, tup)
				t.Logf("%s -> %+v (%s)", tup, p, p.ExeDisplay())
				return p
			}

			dir, bin := helperBinary(t)
			p := resolve(startHelper(t, ns, helperOpts{mode: "tcp4", dst: dst, hold: true, argv0: bin, dir: dir, unlinkSelf: true}))
			if _, err := os.Stat(bin); !os.IsNotExist(err) {
				t.Fatalf("the helper did not delete itself: %v", err)
			}
			if p.Exe != bin || p.ExeIdentity != flow.ExeDeleted || !strings.HasSuffix(p.ExeDisplay(), " (deleted)") || p.ExeVerified() {
				t.Errorf("deleted executable: exe %q identity %s shown %q", p.Exe, p.ExeIdentity, p.ExeDisplay())
			}

			dir, bin = helperBinary(t)
			p = resolve(startHelper(t, ns, helperOpts{mode: "tcp4", dst: dst, hold: true, argv0: "unshare", dir: dir,
				args: []string{"-m", "sh", "-c", `mount --bind "$0" /usr/bin/curl && exec /usr/bin/curl`, bin}}))
			if p.Exe != "/usr/bin/curl" || p.ExeIdentity != flow.ExeOtherNS || p.MntNS == hostNS || p.MntNS == 0 || p.ExeVerified() {
				t.Errorf("bind mount over /usr/bin/curl: exe %q identity %s mnt_ns %d (host %d)", p.Exe, p.ExeIdentity, p.MntNS, hostNS)
			}
			if !strings.Contains(p.ExeDisplay(), "not the host's file") {
				t.Errorf("shown as %q", p.ExeDisplay())
			}
		})
	}
}
