package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/peercred"
	"github.com/bastion-fw/bastion/internal/rules"
)

func allowRule(id, exe, dst string, port uint16) rules.Rule {
	r := rules.Rule{ID: id, Enabled: true, Action: flow.ActionAllow, Exe: exe, Proto: flow.TCP,
		PortMin: port, PortMax: port, Lifetime: rules.Forever}
	if dst != "" {
		r.Dst = netip.MustParsePrefix(dst)
	}
	return r
}

func uidPtr(u uint32) *uint32 { return &u }

func newRuleEngine(t *testing.T) (*Engine, *fakeRelease, *fakeClock) {
	t.Helper()
	e, r, clk := newTestEngine(t)        // its clock drives rule expiry too
	e.hashes = newExeHasher(t.TempDir()) // no live processes unless a test says so
	return e, r, clk
}

func TestSetRulesPermissions(t *testing.T) {
	rs := []rules.Rule{allowRule("r1", "/usr/bin/curl", "", 443)}
	for _, tc := range []struct {
		name    string
		caller  peercred.Cred
		uid     *uint32
		wantErr error
		wantUID uint32
	}{
		{"user sets own rules, uid unset", alice, nil, nil, 1000},
		{"user sets own rules, uid named", alice, uidPtr(1000), nil, 1000},
		{"user sets another user's rules", alice, uidPtr(1001), errPermissionDenied, 0},
		{"user sets root's rules", alice, uidPtr(0), errPermissionDenied, 0},
		{"root sets a user's rules", admin, uidPtr(1001), nil, 1001},
		{"root sets own rules", admin, nil, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _, _ := newRuleEngine(t)
			n, err := e.SetRules(tc.caller, SetRulesRequest{UID: tc.uid, Rules: rs})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("SetRules error %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				for _, uid := range []uint32{0, 1000, 1001} {
					if e.RuleCount(uid) != 0 {
						t.Fatalf("refused SetRules installed rules for uid %d", uid)
					}
				}
				return
			}
			if n != 1 || e.RuleCount(tc.wantUID) != 1 {
				t.Fatalf("active %d, uid %d has %d rules; want 1 and 1", n, tc.wantUID, e.RuleCount(tc.wantUID))
			}
		})
	}
}

func TestRuleDecidesInsteadOfPrompting(t *testing.T) {
	e, r, _ := newRuleEngine(t)
	cancel := e.WatchPending(alice).Cancel // alice's prompt client is up
	defer cancel()
	decisions := e.WatchDecisions(alice)
	cancelD := decisions.Cancel
	defer cancelD()
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{
		allowRule("allow-https", "/usr/bin/curl", "192.0.2.1/32", 443),
		{ID: "reject-all", Enabled: true, Action: flow.ActionReject, Exe: "/usr/bin/curl", Dst: netip.MustParsePrefix("198.51.100.0/24"), Lifetime: rules.Forever},
	}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id     uint32
		t      flow.Tuple
		want   flow.Action
		wantBy string
	}{
		{1, tcp("192.0.2.1", 40000, 443), flow.ActionAllow, "rule:allow-https"},
		{2, tcp("198.51.100.7", 40001, 80), flow.ActionReject, "rule:reject-all"},
		{3, tcp("192.0.2.1", 40002, 80), flow.ActionNone, ""}, // no rule: asks
	} {
		e.Handle(PacketRef{ID: tc.id}, tc.t, curl1000)
		if got := r.verdict(tc.id); got != tc.want {
			t.Errorf("packet %d (%v): verdict %v, want %v", tc.id, tc.t, got, tc.want)
		}
		if tc.want == flow.ActionNone {
			continue
		}
		d := next(t, decisions)
		if d.DecidedBy != tc.wantBy || "rule:"+d.RuleID != tc.wantBy {
			t.Errorf("packet %d decided by %q, rule %q; want %q", tc.id, d.DecidedBy, d.RuleID, tc.wantBy)
		}
		if pd := decisionToProto(d); pd.GetRuleId() != d.RuleID {
			t.Errorf("DecisionEvent.rule_id %q, want %q", pd.GetRuleId(), d.RuleID)
		}
	}
	if n, _ := e.Stats(); n != 1 {
		t.Fatalf("%d pending, want 1 (the connection no rule covers)", n)
	}
	if got := e.Counters.RuleDecisions.Load(); got != 2 {
		t.Fatalf("%d rule decisions counted, want 2", got)
	}
}

func TestRulesOfOneUIDNeverDecideAnother(t *testing.T) {
	e, r, _ := newRuleEngine(t)
	// Alice's rule names bob's program and destination exactly.
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{
		allowRule("alice-wget", "/usr/bin/wget", "192.0.2.1/32", 443),
		allowRule("alice-any", "/usr/bin/*", "", 0),
	}}); err != nil {
		t.Fatal(err)
	}
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), wget1001)
	if got := r.verdict(1); got != flow.ActionNone {
		t.Fatalf("uid 1001's connection got %v from uid 1000's rules", got)
	}
	if got := e.ListPending(bob); len(got) != 1 {
		t.Fatalf("bob has %d pending, want 1", len(got))
	}
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.1", 40001, 443), flow.Process{PID: 61, TGID: 61, UID: 1000, Exe: "/usr/bin/wget", ExeIdentity: flow.ExeHost})
	if got := r.verdict(2); got != flow.ActionAllow {
		t.Fatalf("uid 1000's own wget: %v, want allow", got)
	}
}

func TestDisabledAndExpiredRulesAreIgnored(t *testing.T) {
	e, r, clk := newRuleEngine(t)
	disabled := allowRule("disabled", "/usr/bin/curl", "192.0.2.1/32", 443)
	disabled.Enabled = false
	expired := allowRule("expired", "/usr/bin/curl", "192.0.2.2/32", 443)
	expired.Lifetime, expired.Expires = rules.Duration, clk.Now().Add(-time.Second)
	expiring := allowRule("expiring", "/usr/bin/curl", "192.0.2.3/32", 443)
	expiring.Lifetime, expiring.Expires = rules.Duration, clk.Now().Add(time.Minute)
	n, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{disabled, expired, expiring}})
	if err != nil || n != 1 {
		t.Fatalf("SetRules = %d, %v; want 1 active", n, err)
	}
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.2", 40000, 443), curl1000)
	e.Handle(PacketRef{ID: 3}, tcp("192.0.2.3", 40000, 443), curl1000)
	if r.verdict(1) != flow.ActionNone || r.verdict(2) != flow.ActionNone {
		t.Fatalf("disabled/expired rules decided: %v %v", r.verdict(1), r.verdict(2))
	}
	if r.verdict(3) != flow.ActionAllow {
		t.Fatalf("live duration rule: %v, want allow", r.verdict(3))
	}
	clk.Advance(time.Minute)
	e.Handle(PacketRef{ID: 4}, tcp("192.0.2.3", 40001, 443), curl1000)
	if r.verdict(4) == flow.ActionAllow {
		t.Fatal("duration rule still decided after it expired")
	}
	// Only disabled rules: nothing is enforced.
	if n, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{disabled}}); err != nil || n != 0 || e.RuleCount(1000) != 0 {
		t.Fatalf("SetRules(disabled only) = %d, %v; %d rules kept", n, err, e.RuleCount(1000))
	}
}

func TestEmptyRulesRemoveTheUIDsRules(t *testing.T) {
	e, r, _ := newRuleEngine(t)
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{allowRule("r", "/usr/bin/curl", "", 0)}}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.SetRules(alice, SetRulesRequest{}); err != nil || n != 0 || e.RuleCount(1000) != 0 {
		t.Fatalf("SetRules(empty) = %d, %v; %d rules kept", n, err, e.RuleCount(1000))
	}
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	if r.verdict(1) != flow.ActionNone {
		t.Fatal("removed rules still decided")
	}
}

func TestSetRulesSettlesCoveredPendingEntries(t *testing.T) {
	e, r, _ := newRuleEngine(t)
	events := e.WatchPending(alice)
	cancel := events.Cancel
	defer cancel()
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.1", 40001, 443), curl1000) // parallel connection, same entry
	e.Handle(PacketRef{ID: 3}, tcp("192.0.2.2", 40002, 443), curl1000) // not covered
	e.Handle(PacketRef{ID: 4}, tcp("192.0.2.1", 40003, 443), wget1001) // another user's
	for range 2 {
		if ev := next(t, events); ev.Kind != PendingAdded {
			t.Fatalf("event %+v, want added", ev)
		}
	}
	// A prompt answered "forever" in the rules service arrives as a rule.
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{allowRule("forever", "/usr/bin/curl", "192.0.2.1/32", 443)}}); err != nil {
		t.Fatal(err)
	}
	for id := uint32(1); id <= 2; id++ {
		if got := r.verdict(id); got != flow.ActionAllow {
			t.Errorf("covered packet %d: %v, want allow", id, got)
		}
	}
	if r.verdict(3) != flow.ActionNone || r.verdict(4) != flow.ActionNone {
		t.Fatalf("uncovered packets decided: %v %v", r.verdict(3), r.verdict(4))
	}
	ev := next(t, events)
	if ev.Kind != PendingResolved || ev.DecidedBy != "rule:forever" || ev.Action != flow.ActionAllow || ev.Pending.Tuple.Dst != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("event %+v, want the 192.0.2.1 entry resolved by rule:forever", ev)
	}
	if n, _ := e.Stats(); n != 2 {
		t.Fatalf("%d pending, want 2", n)
	}
	// Its retransmits get the rule's answer too.
	e.Handle(PacketRef{ID: 5}, tcp("192.0.2.1", 40000, 443), curl1000)
	if r.verdict(5) != flow.ActionAllow {
		t.Fatalf("retransmit after settlement: %v", r.verdict(5))
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fakeProc makes procDir/<tgid> look like a live process that runs exe and
// started at start (ns), as the hasher reads it.
func fakeProc(t *testing.T, procDir string, tgid uint32, exe string, start uint64) flow.Process {
	t.Helper()
	dir := filepath.Join(procDir, strconv.FormatUint(uint64(tgid), 10))
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(exe, filepath.Join(dir, "exe")); err != nil {
		t.Fatal(err)
	}
	stat := fmt.Sprintf("%d (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %d 1 1\n", tgid, start/nsPerTick)
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	return flow.Process{PID: tgid, TGID: tgid, StartTime: start, UID: 1000, Exe: exe}
}

func TestSHA256RuleMatchesTheRightBinary(t *testing.T) {
	dir := t.TempDir()
	good, other := filepath.Join(dir, "good"), filepath.Join(dir, "other")
	if err := os.WriteFile(good, []byte("#!good binary\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, []byte("#!other binary\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e, r, _ := newRuleEngine(t)
	procDir := t.TempDir()
	e.hashes = newExeHasher(procDir)
	rule := rules.Rule{ID: "pinned", Enabled: true, Action: flow.ActionAllow, ExeSHA256: sha256Hex([]byte("#!good binary\n")), Lifetime: rules.Forever}
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{rule}}); err != nil {
		t.Fatal(err)
	}
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), fakeProc(t, procDir, 4242, good, 1e9))
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.1", 40001, 443), fakeProc(t, procDir, 4243, other, 1e9))
	// A process that is gone has no hash (its path is never read).
	e.Handle(PacketRef{ID: 3}, tcp("192.0.2.1", 40002, 443), flow.Process{PID: 99, TGID: 99, StartTime: 1e9, UID: 1000, Exe: good})
	if r.verdict(1) != flow.ActionAllow {
		t.Fatalf("pinned binary: %v, want allow", r.verdict(1))
	}
	if r.verdict(2) != flow.ActionNone || r.verdict(3) != flow.ActionNone {
		t.Fatalf("other/gone binary decided by the hash rule: %v %v", r.verdict(2), r.verdict(3))
	}
	// The same file with new content is another binary.
	if err := os.WriteFile(good, []byte("#!evil binary\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(good, future, future); err != nil {
		t.Fatal(err)
	}
	e.Handle(PacketRef{ID: 4}, tcp("192.0.2.2", 40003, 443), fakeProc(t, procDir, 4244, good, 1e9))
	if r.verdict(4) != flow.ActionNone {
		t.Fatalf("replaced binary: %v; the hash cache served the old file's digest", r.verdict(4))
	}
}

// selfStartTime returns this test process's start time as the identification
// mechanisms report it.
func selfStartTime(t *testing.T) uint64 {
	t.Helper()
	ticks, err := readStartTicks("/proc/self/stat")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	return ticks * nsPerTick
}

// TestSHA256OfTheRunningImage: the hash is of the image the process runs,
// through /proc/<pid>/exe, never of whatever its path holds now.
func TestSHA256OfTheRunningImage(t *testing.T) {
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Skipf("cannot read /proc/self/exe: %v", err)
	}
	// The path now holds something else, as after an upgrade or an attack.
	decoy := filepath.Join(t.TempDir(), "decoy")
	if err := os.WriteFile(decoy, []byte("not the running binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := newExeHasher("/proc")
	defer h.Close()
	start := selfStartTime(t)
	running := flow.Process{TGID: uint32(os.Getpid()), StartTime: start, Exe: decoy}
	if got, err := h.Sum(running); err != nil || got != sha256Hex(self) {
		t.Fatalf("live process: Sum = %q, %v; want the mapped image's %q", got, err, sha256Hex(self))
	}
	for name, p := range map[string]flow.Process{
		"pid reused":         {TGID: running.TGID, StartTime: start + 5*nsPerTick, Exe: decoy},
		"start time unknown": {TGID: running.TGID, Exe: decoy},
	} {
		if got, err := h.Sum(p); err == nil {
			t.Errorf("%s: Sum = %q, want no hash", name, got)
		}
	}
}

// hashFile hashes path through the hasher's queue for uid.
func hashFile(t *testing.T, h *exeHasher, uid uint32, path string) (string, *hashJob) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	sum, j, err := h.lookup(f)
	if err != nil {
		t.Fatal(err)
	}
	if j == nil {
		return sum, nil
	}
	if j, err = h.submit(uid, j); err != nil {
		t.Fatal(err)
	}
	return "", j
}

func TestHashCacheIsBounded(t *testing.T) {
	dir := t.TempDir()
	h := newExeHasher(dir)
	defer h.Close()
	for i := range maxHashCache + 10 {
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, []byte{byte(i), byte(i >> 8)}, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, time.Unix(int64(i), 0), time.Unix(int64(i), 0)); err != nil {
			t.Fatal(err)
		}
		if _, j := hashFile(t, h, 1000, p); j != nil {
			<-j.done
			if j.err != nil {
				t.Fatal(j.err)
			}
		}
	}
	if n := len(h.cache); n > maxHashCache {
		t.Fatalf("hash cache holds %d entries, bound %d", n, maxHashCache)
	}
	// A cached file is answered without a job.
	if sum, j := hashFile(t, h, 1000, filepath.Join(dir, "f")); j != nil || sum == "" {
		t.Errorf("second hash of an unchanged file: not from the cache")
	}
}

// TestHashBudgetIsGlobalAndFair: a huge file of one UID does not hold up a
// small one of another (turns alternate chunk by chunk), and the hasher
// never reads faster than its budget.
func TestHashBudgetIsGlobalAndFair(t *testing.T) {
	dir := t.TempDir()
	big, small := filepath.Join(dir, "big"), filepath.Join(dir, "small")
	if err := os.WriteFile(small, make([]byte, 2*hashChunk), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 * hashChunk); err != nil { // sparse
		t.Fatal(err)
	}
	f.Close()
	h := newExeHasher(dir)
	defer h.Close()
	h.rate = 32 * hashChunk // two seconds for the big file
	start := time.Now()
	_, jb := hashFile(t, h, 1001, big)
	_, js := hashFile(t, h, 1000, small)
	<-js.done
	h.mu.Lock()
	read := jb.read
	h.mu.Unlock()
	if js.err != nil || read > 8*hashChunk {
		t.Errorf("small file of uid 1000 done (err %v) after %d bytes of uid 1001's big file; want turns", js.err, read)
	}
	<-jb.done
	elapsed := time.Since(start)
	if min := time.Duration(float64(66*hashChunk) / float64(h.rate) * 0.8 * float64(time.Second)); elapsed < min {
		t.Errorf("hashed %d bytes in %v, faster than the budget allows (%v)", 66*hashChunk, elapsed, min)
	}
	t.Logf("66 chunks in %v at a budget of %d B/s", elapsed, h.rate)
}

func TestParseStartTicks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{"plain", "1234 (curl) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 100", 98765, false},
		{"name with spaces and parens", "1234 (a) b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 42 1000 100", 42, false},
		{"truncated", "1234 (curl) S 1 2 3", 0, true},
		{"no name", "1234 curl S", 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 zz 1 1", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStartTicks([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseStartTicks = %d, %v; want %d (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// FuzzParseStartTicks: the command name in a stat line is chosen by the
// (possibly hostile) process.
func FuzzParseStartTicks(f *testing.F) {
	f.Add([]byte("1234 (curl) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 100"))
	f.Add([]byte("1 ()) ) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 7 1 1"))
	f.Add([]byte(")"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseStartTicks(b)
	})
}
