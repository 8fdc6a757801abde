package e2e

import (
	"encoding/json"
	"os"
	"sync"
	"testing"
)

// AttackReportEnv names the file that attack tests append their results to,
// one JSON object per line; `make attack` sets it and prints the table
// (internal/e2e/attacktable). Unset, results are only logged.
const AttackReportEnv = "BASTION_ATTACK_REPORT"

// AttackResult is one line of the attack table: what was tried, how many
// times, and how many of the tries got through. Expected is what a correct
// Bastion lets through (0 for every attack so far).
type AttackResult struct {
	Test     string `json:"test"`
	Attack   string `json:"attack"`
	Tries    int    `json:"tries"`
	Through  int    `json:"got_through"`
	Expected int    `json:"expected"`
}

var attackReportMu sync.Mutex

// reportAttack records the outcome of one attack: tries made, and how many
// got past Bastion (connections that reached the peer unasked, bytes the
// victim lost, and so on; the test says what counts). It fails t when more
// got through than expected, so every attack test asserts through it. Attack
// tests are named TestAttack*, run as root against a real agent in their own
// namespace, and attack as an unprivileged user (B, UID 1001) against a
// victim (A, UID 1000) where the attack has one.
func reportAttack(t *testing.T, attack string, tries, through, expected int) {
	t.Helper()
	r := AttackResult{Test: t.Name(), Attack: attack, Tries: tries, Through: through, Expected: expected}
	t.Logf("attack %q: %d tries, %d got through (expected %d)", attack, tries, through, expected)
	if through > expected {
		t.Errorf("attack %q: %d of %d tries got through, expected %d", attack, through, tries, expected)
	}
	path := os.Getenv(AttackReportEnv)
	if path == "" {
		return
	}
	line, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("attack report: %v", err)
	}
	attackReportMu.Lock()
	defer attackReportMu.Unlock()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatalf("attack report: %v", err)
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		t.Fatalf("attack report: %v", err)
	}
}
