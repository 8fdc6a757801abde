package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/testenv"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

// The agent's bounds on what one non-root UID may hold through its API
// (agent/apilimits.go, agent/watch.go, agent/cache.go, docs/security.md).
const (
	wantConnsPerUID   = 16
	wantStreamsPerUID = 16
	wantCachePerUID   = 4096
	// rssBound is the agent's memory budget under any API attack.
	rssBound = 64 << 20
)

var (
	apifloodOnce sync.Once
	apifloodBin  string
	apifloodErr  error
)

// apiflood builds the API attack program (internal/testenv/apiflood).
func apiflood(t *testing.T) string {
	t.Helper()
	b := bins(t)
	apifloodOnce.Do(func() {
		apifloodBin, apifloodErr = testenv.GoBuild(dirOf(b.agent), "bastion-apiflood", "github.com/bastion-fw/bastion/internal/testenv/apiflood")
	})
	if apifloodErr != nil {
		t.Fatalf("build apiflood: %v", apifloodErr)
	}
	return apifloodBin
}

func dirOf(path string) string { return path[:strings.LastIndexByte(path, '/')] }

// memory reads a process's resident set and its peak, in bytes.
func memory(t *testing.T, pid int) (rss, hwm int64) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("agent memory: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm
}

// apifloodResult mirrors apiflood's JSON line.
type apifloodResult struct {
	ConnsAccepted   int            `json:"conns_accepted"`
	StreamsAccepted int            `json:"streams_accepted"`
	StreamsAlive    int            `json:"streams_alive"`
	StreamsRefused  int            `json:"streams_refused"`
	SetRulesOK      int            `json:"setrules_ok"`
	Datagrams       int            `json:"datagrams"`
	CacheEntries    int            `json:"cache_entries"`
	Decided         int            `json:"decided"`
	Errors          map[string]int `json:"errors"`
}

// TestAttackAPIResourceExhaustion: user B opens as many API connections and
// WatchDecisions streams as it can and never reads them, fills them with
// its own decisions, sends big SetRules requests at once and floods the
// decision cache. The agent must refuse what is over its per-UID bounds and
// stay under 64 MiB resident; user A must still be served meanwhile.
func TestAttackAPIResourceExhaustion(t *testing.T) {
	requireAutoRun(t, "the API's per-UID bounds do not depend on the mechanism, and this test alone takes minutes")
	bin := apiflood(t)
	ns := testenv.NewNetNS(t)
	a := startAgent(t, ns, "--log-level", "info")
	ctx := testCtx(t, 10*time.Minute)
	pid := a.Cmd.Process.Pid
	idleRSS, _ := memory(t, pid)

	const conns, streams, cache = 32, 16, 5000
	p := start(t, ns.Command(ctx, 1001, 1001, bin, "-socket", a.Socket, "-conns", strconv.Itoa(conns),
		"-streams", strconv.Itoa(streams), "-udp", "3000", "-cache", strconv.Itoa(cache)))
	var r apifloodResult
	var peakRSS int64
	if !testenv.Poll(8*time.Minute, func() bool {
		if rss, _ := memory(t, pid); rss > peakRSS {
			peakRSS = rss
		}
		line, _, ok := strings.Cut(p.Stdout(), "\n")
		return ok && json.Unmarshal([]byte(line), &r) == nil || p.Exited()
	}) || p.Exited() {
		t.Fatalf("apiflood: no result (exited %v); stdout %q stderr %q", p.Exited(), p.Stdout(), p.Stderr())
	}
	rss, hwm := memory(t, pid)
	t.Logf("apiflood: %+v", r)
	t.Logf("agent memory: idle %.1f MiB; under attack %.1f MiB resident, peak (VmHWM) %.1f MiB",
		mib(idleRSS), mib(max(rss, peakRSS)), mib(hwm))

	// A is still served while B holds everything it could get.
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := a.Client.GetStatus(actx, &agentv1.GetStatusRequest{})
	cancel()
	if err != nil {
		t.Errorf("root's GetStatus while B attacks: %v", err)
	}
	out, code := run(t, ns.Command(ctx, 1000, 1000, builtBins.ctl, "--agent-socket", a.Socket, "status"))
	if code != 0 {
		t.Errorf("uid 1000's bastionctl status while B attacks: exit %d: %s", code, out)
	}

	through := 0
	if hwm > rssBound {
		through++
	}
	through += max(0, r.ConnsAccepted-wantConnsPerUID) + max(0, r.StreamsAlive-wantStreamsPerUID) +
		max(0, r.CacheEntries-wantCachePerUID)
	if r.SetRulesOK == 0 {
		t.Errorf("no SetRules within the limits succeeded: %v", r.Errors)
	}
	reportAttack(t, "B holds API connections, unread streams, big SetRules and cache entries", conns+conns*streams+cache+1, through, 0)

	// Once B is gone its memory goes back: its connections close, its
	// queues are dropped, and the runtime returns the pages.
	p.Kill()
	if !testenv.Poll(2*time.Minute, func() bool {
		rss, _ = memory(t, pid)
		return rss < idleRSS+16<<20
	}) {
		t.Errorf("agent resident %.1f MiB two minutes after the attacker left (idle %.1f MiB)", mib(rss), mib(idleRSS))
	}
	t.Logf("agent resident after the attacker left: %.1f MiB", mib(rss))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
