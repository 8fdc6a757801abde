package store

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
)

// The helper process of TestDurabilityAcknowledgedWritesSurviveKill is this
// test binary re-executed with these variables set.
const (
	envChild = "BASTION_STORE_CHILD"
	envPath  = "BASTION_STORE_PATH"
	envFirst = "BASTION_STORE_FIRST"
	envCount = "BASTION_STORE_COUNT"
)

// durableRule is the content of the i-th rule the helper writes; the
// parent checks what it reads back against it.
func durableRule(i int) rules.Rule {
	r := rules.Rule{
		Enabled:   i%2 == 0,
		Action:    flow.Action(1 + i%3),
		Exe:       fmt.Sprintf("/usr/bin/prog-%d", i),
		Cmdline:   fmt.Sprintf(`^--flag %d$`, i),
		ExeSHA256: fmt.Sprintf("%064x", i),
		Dst:       netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32),
		PortMin:   uint16(i % 60000),
		PortMax:   uint16(i%60000 + 10),
		Host:      fmt.Sprintf("h%d.example.com", i),
		Proto:     flow.TCP,
		Lifetime:  rules.Forever,
		Created:   time.Unix(1_700_000_000, int64(i)).UTC(),
		Hits:      uint64(i),
		Note:      strings.Repeat("n", i%200),
	}
	if i%5 == 0 {
		r.Lifetime = rules.Duration
		r.Expires = time.Unix(1_800_000_000, int64(i)).UTC()
	}
	return r
}

// TestHelperWriter is not a test: it is the child process that
// TestDurabilityAcknowledgedWritesSurviveKill kills. It adds rules and
// prints "ack <index> <id>" for each only after AddRule returned.
func TestHelperWriter(t *testing.T) {
	if os.Getenv(envChild) != "1" {
		t.Skip("helper process for TestDurabilityAcknowledgedWritesSurviveKill")
	}
	first, err1 := strconv.Atoi(os.Getenv(envFirst))
	count, err2 := strconv.Atoi(os.Getenv(envCount))
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	s, err := Open(os.Getenv(envPath))
	if err != nil {
		t.Fatal(err)
	}
	out := bufio.NewWriter(os.Stdout)
	for i := first; i < first+count; i++ {
		r, err := s.AddRule(t.Context(), durableRule(i))
		if err != nil {
			t.Fatal(err)
		}
		// Acknowledge: from here on the parent may rely on the rule.
		fmt.Fprintf(out, "ack %d %s\n", i, r.ID)
		if err := out.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDurabilityAcknowledgedWritesSurviveKill runs a writer process and
// SIGKILLs it right after it acknowledged its Nth rule, three times on the
// same database. After each kill, Open must succeed (integrity intact) and
// every acknowledged rule must be there exactly as written; a rule that
// was being written when the kill came may be there too, but whole.
func TestDurabilityAcknowledgedWritesSurviveKill(t *testing.T) {
	if os.Getenv(envChild) == "1" {
		t.Skip("running as the helper process")
	}
	path := filepath.Join(t.TempDir(), "rules.db")
	acked := map[string]int{} // ID -> index, over all rounds
	next := 0
	for round, killAfter := range []int{300, 550, 800} {
		const count = 1000
		ids, killed := runKilledWriter(t, path, next, count, killAfter)
		if len(ids) != killAfter {
			t.Fatalf("round %d: read %d acknowledgements, want %d", round, len(ids), killAfter)
		}
		if !killed {
			t.Errorf("round %d: the writer finished before the kill landed", round)
		}
		for id, i := range ids {
			acked[id] = i
		}

		// The kill left a WAL behind, so reopening exercises recovery.
		if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
			t.Errorf("round %d: no WAL left after the kill (%v)", round, err)
		}
		s, err := Open(path)
		if err != nil {
			t.Fatalf("round %d: Open after kill: %v", round, err)
		}
		rs, err := s.Rules(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		stored := map[string]rules.Rule{}
		for _, r := range rs {
			stored[r.ID] = r
		}
		for id, i := range acked {
			r, ok := stored[id]
			want := durableRule(i)
			want.ID = id
			if !ok {
				t.Errorf("round %d: acknowledged rule %d (%s) is missing", round, i, id)
			} else if !reflect.DeepEqual(r, want) {
				t.Errorf("round %d: acknowledged rule %d read back as\n%+v\nwant\n%+v", round, i, r, want)
			}
		}
		// Anything beyond the acknowledged rules is a whole rule that the
		// writer was committing when it died.
		extra := 0
		for id, r := range stored {
			if _, ok := acked[id]; ok {
				continue
			}
			extra++
			i, err := strconv.Atoi(strings.TrimPrefix(r.Exe, "/usr/bin/prog-"))
			want := durableRule(i)
			want.ID = id
			if err != nil || !reflect.DeepEqual(r, want) {
				t.Errorf("round %d: unacknowledged rule %s is not a whole rule: %+v", round, id, r)
			} else {
				acked[id] = i // part of the database from now on
			}
		}
		t.Logf("round %d: killed after %d acknowledgements; %d rules stored, %d of them committed but unacknowledged",
			round, killAfter, len(stored), extra)
		next += count
	}
}

// runKilledWriter starts the helper writing count rules from index first
// into path, and SIGKILLs it upon reading its killAfter-th
// acknowledgement. It returns the acknowledged IDs and whether the helper
// died of the kill (rather than having finished first).
func runKilledWriter(t *testing.T, path string, first, count, killAfter int) (map[string]int, bool) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), envChild+"=1", envPath+"="+path,
		envFirst+"="+strconv.Itoa(first), envCount+"="+strconv.Itoa(count))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "ack" {
			continue // the test framework's own output
		}
		i, err := strconv.Atoi(f[1])
		if err != nil {
			t.Fatalf("bad acknowledgement %q", sc.Text())
		}
		ids[f[2]] = i
		if len(ids) == killAfter {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	// Drain so Wait does not block on a full pipe, then reap.
	for sc.Scan() {
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return ids, true
		}
	}
	if err != nil {
		t.Fatalf("writer: %v", err)
	}
	return ids, false
}
