package e2e

import (
	"strings"
	"testing"

	"github.com/bastion-fw/bastion/internal/testenv"
)

// TestStartLogNamesTheFallback reads a real agent's start-up log: the eBPF
// mechanism it identifies processes with is "ready", and procfs, opened
// for the flows that mechanism misses, is logged as its fallback, not with
// a "no eBPF" note that contradicts the line before (issue 14, item 14).
func TestStartLogNamesTheFallback(t *testing.T) {
	bins(t)
	ns := testenv.NewNetNS(t)
	a := startAgent(t, ns)
	mech := a.Status(t).GetMechanism()
	if mech == "procfs" {
		t.Skip("the agent runs on procfs itself (no eBPF mechanism): no fallback to log")
	}
	var ready, fallback, running string
	for _, line := range strings.Split(a.Log(), "\n") {
		switch {
		case strings.Contains(line, `msg="process identification ready"`):
			ready = line
		case strings.Contains(line, "process identification fallback ready"):
			fallback = line
		case strings.Contains(line, `msg="agent running"`):
			running = line
		}
		if strings.Contains(line, "no eBPF") {
			t.Errorf("the log says there is no eBPF while %s runs: %s", mech, line)
		}
	}
	if !strings.Contains(ready, "mechanism="+mech) {
		t.Errorf("no %q ready line: %q", mech, ready)
	}
	if !strings.Contains(fallback, "mechanism=procfs") || !strings.Contains(fallback, "fallback_for="+mech) {
		t.Errorf("the procfs fallback is not logged as %s's fallback: %q", mech, fallback)
	}
	if !strings.Contains(running, "mechanism="+mech) || !strings.Contains(running, "fallback=procfs") {
		t.Errorf("agent running line does not name both: %q", running)
	}
}
