package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
)

// worstRules are n rules of the widest expression the bounds accept, for
// any executable, that never match a command line of a's.
func worstRules(n int) []rules.Rule {
	var rs []rules.Rule
	for i := range n {
		rs = append(rs, rules.Rule{ID: fmt.Sprintf("w%d", i), Enabled: true, Action: flow.ActionAllow,
			Lifetime: rules.Forever, Cmdline: "(?:.*){30}ZQ"})
	}
	return rs
}

// TestRuleWorkerIsolatesUIDs: while bob's worker grinds through costly
// rules, alice's connection is decided by her rule at once.
func TestRuleWorkerIsolatesUIDs(t *testing.T) {
	e, r, _ := newRuleEngine(t)
	if _, err := e.SetRules(bob, SetRulesRequest{Rules: worstRules(200)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{allowRule("a", "/usr/bin/curl", "", 443)}}); err != nil {
		t.Fatal(err)
	}
	slow := wget1001
	slow.Args = []string{strings.Repeat("a", 600)}
	for i := range 50 {
		e.Handle(PacketRef{ID: uint32(100 + i)}, tcp("192.0.2.9", uint16(30000+i), 443), slow)
	}
	start := time.Now()
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.1", 40000, 443), curl1000)
	for r.rawVerdict(1) == flow.ActionNone {
		if time.Since(start) > 10*time.Second {
			t.Fatal("alice's connection not decided within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	e.mu.Lock()
	left := e.workers.queued
	e.mu.Unlock()
	t.Logf("alice decided after %v; bob's connections still queued: %d", took, left)
	if left == 0 {
		t.Errorf("bob's queue was empty when alice was decided: the test did not load bob's worker")
	}
	if r.rawVerdict(1) != flow.ActionAllow {
		t.Errorf("alice: %v, want allow", r.rawVerdict(1))
	}
}

// TestRuleQueueFull: a UID whose queue is full gets the timeout action for
// the excess at once; nothing blocks, another UID is unaffected.
func TestRuleQueueFull(t *testing.T) {
	e, r, _ := newRuleEngine(t)
	if _, err := e.SetRules(bob, SetRulesRequest{Rules: worstRules(900)}); err != nil {
		t.Fatal(err)
	}
	slow := wget1001
	slow.Args = []string{strings.Repeat("a", 600)}
	n := ruleQueueLen + 50
	for i := range n {
		e.Handle(PacketRef{ID: uint32(1000 + i)}, tcp("192.0.2.9", uint16(i), 443), slow)
	}
	busy := 0
	for i := range n {
		if r.rawVerdict(uint32(1000+i)) == e.pol.TimeoutAction {
			busy++
		}
	}
	if busy < 40 {
		t.Errorf("%d of %d connections answered at once with the timeout action; want the ~50 over the queue", busy, n)
	}
	e.Close(flow.ActionDeny) // every held packet gets a verdict
	for i := range n {
		if r.rawVerdict(uint32(1000+i)) == flow.ActionNone {
			t.Fatalf("packet %d never released", 1000+i)
		}
	}
}

// TestHashNotReadyGetsDeadlineAction: a connection whose sha256 rule waits
// for a hash that is not done by its prompt deadline gets the timeout
// action then; meanwhile another UID's connection is decided at once.
func TestHashNotReadyGetsDeadlineAction(t *testing.T) {
	e, r, _ := newRuleEngine(t)
	e.pol.PromptTimeout = 300 * time.Millisecond
	e.now, e.after = time.Now, time.AfterFunc
	procDir := t.TempDir()
	e.hashes = newExeHasher(procDir)
	e.hashes.rate = 4 * hashChunk // 16 chunks take 4 s
	big := filepath.Join(t.TempDir(), "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(16 * hashChunk)
	f.Close()
	if _, err := e.SetRules(bob, SetRulesRequest{Rules: []rules.Rule{{ID: "h", Enabled: true, Action: flow.ActionAllow,
		Lifetime: rules.Forever, ExeSHA256: strings.Repeat("0", 64)}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetRules(alice, SetRulesRequest{Rules: []rules.Rule{allowRule("a", "/usr/bin/curl", "", 443)}}); err != nil {
		t.Fatal(err)
	}
	p := fakeProc(t, procDir, 777, big, 1e9)
	p.UID = 1001
	start := time.Now()
	e.Handle(PacketRef{ID: 1}, tcp("192.0.2.9", 1, 443), p)
	e.Handle(PacketRef{ID: 2}, tcp("192.0.2.1", 2, 443), curl1000)
	for r.rawVerdict(2) == flow.ActionNone {
		if time.Since(start) > 5*time.Second {
			t.Fatal("alice not decided")
		}
		time.Sleep(time.Millisecond)
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("alice decided after %v, behind bob's hash", d)
	}
	if got := r.verdict(1); got != e.pol.TimeoutAction {
		t.Errorf("bob's connection: %v, want the timeout action", got)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("bob's connection answered after %v, before its deadline", d)
	}
}
