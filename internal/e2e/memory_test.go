package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
)

// idleGoal is the resident memory an idle agent aims at.
const idleGoal = 20 << 20

// TestAgentIdleMemory starts an agent in a namespace, waits until its
// resident memory has settled (its start-up garbage collected and
// returned: no new low for 25 s) and logs it: in all, its anonymous pages
// (the Go heap, stacks and BPF map mappings) and its file pages (the
// program's text). It fails only past the memory budget (rssBound); the
// goal, idleGoal, is reported.
func TestAgentIdleMemory(t *testing.T) {
	ns := testenv.NewNetNS(t)
	a := startAgent(t, ns, "--log-level", "info")
	pid := a.Cmd.Process.Pid
	low, lowAt := int64(1<<62), time.Now()
	testenv.Poll(2*time.Minute, func() bool {
		if rss := procStatus(t, pid)["VmRSS"]; rss < low {
			low, lowAt = rss, time.Now()
		}
		return time.Since(lowAt) > 25*time.Second
	})
	st := procStatus(t, pid)
	t.Logf("idle agent: resident %.1f MiB (anonymous %.1f, file %.1f), peak %.1f MiB; goal %.0f MiB",
		mib(st["VmRSS"]), mib(st["RssAnon"]), mib(st["RssFile"]), mib(st["VmHWM"]), mib(idleGoal))
	if st["VmRSS"] > rssBound {
		t.Errorf("idle agent resident %.1f MiB, over the %.0f MiB budget", mib(st["VmRSS"]), mib(rssBound))
	}
}

// procStatus reads the sizes in /proc/PID/status, in bytes.
func procStatus(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("process status: %v", err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "kB" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			out[strings.TrimSuffix(f[0], ":")] = kb << 10
		}
	}
	return out
}
