package agent

import (
	"fmt"
	"time"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/peercred"
	"github.com/bastion-fw/bastion/internal/rules"
)

// maxRulesPerUID bounds what one caller can make the agent hold and scan on
// the packet path.
const maxRulesPerUID = 10_000

// uidRules are one UID's compiled rules.
type uidRules struct {
	m *rules.Matcher
	// hashes says whether any rule tests the executable's SHA-256; only
	// then does a connection get a SHA256 function (and its allocation).
	hashes bool
	// files says whether any rule names a host file for every mount
	// namespace (rules.Rule.AnyMountNS).
	files bool
}

func (u *uidRules) len() int {
	if u == nil {
		return 0
	}
	return u.m.Len()
}

// match returns the rule that decides the connection, if any. On w, the
// UID's worker, it paces between expressions and waits for a hash until
// the connection's deadline; late says that a hash the rules needed was not
// ready in time. Without a worker (settling pending entries) only a cached
// hash is used.
func (u *uidRules) match(h *exeHasher, proc flow.Process, t flow.Tuple, host string, now time.Time, w *ruleWorker) (r *rules.Rule, ok, late bool) {
	c := rules.Conn{UID: proc.UID, Args: proc.Args, Tuple: t, Host: host}
	// SECURITY: path and glob rules see the path only when it is the
	// host's file and the process runs in the host's mount namespace: in
	// a namespace of its own, a process can show any program at any path.
	if proc.ExeVerified() {
		c.Exe = proc.Exe
	}
	var ch *connHash
	if u.hashes && proc.Exe != "" {
		ch = &connHash{h: h, proc: proc}
		if w != nil {
			ch.wait, ch.quit = w.e.hashWait(now), w.e.workers.quit
		}
		c.SHA256 = ch.sha256
	}
	if w != nil {
		c.Pace = w.pace
	}
	if u.files && proc.ExeIno != 0 {
		c.SameFile = func(path string) bool { return h.files.Is(path, proc.ExeDev, proc.ExeIno) }
	}
	r, ok = u.m.Match(c, now)
	if ch != nil && ch.late {
		return nil, false, true
	}
	return r, ok, false
}

// kernelDeps says whether u's decision for proc's connection t may depend
// on the process or on the destination's name (rules.Matcher.KernelDeps).
func (u *uidRules) kernelDeps(h *exeHasher, proc flow.Process, t flow.Tuple, host string, now time.Time) (process, name bool) {
	c := rules.Conn{UID: proc.UID, Args: proc.Args, Tuple: t, Host: host}
	if proc.ExeVerified() {
		c.Exe = proc.Exe
	}
	if u.files && proc.ExeIno != 0 {
		c.SameFile = func(path string) bool { return h.files.Is(path, proc.ExeDev, proc.ExeIno) }
	}
	return u.m.KernelDeps(c, now)
}

// SetRulesRequest replaces the rules of one UID.
type SetRulesRequest struct {
	// UID is whose connections the rules decide; nil means the caller's.
	UID   *uint32
	Rules []rules.Rule
}

// rulesTarget returns the UID whose rules caller may set with uid.
//
// SECURITY: a user sets only the rules of their own UID; root may name any.
// The rules are matched only against connections whose UID the kernel
// reported, so a user's rules can never decide another user's connection.
func rulesTarget(caller peercred.Cred, uid *uint32) (uint32, error) {
	if uid == nil {
		return caller.UID, nil
	}
	if !caller.IsRoot() && *uid != caller.UID {
		return 0, fmt.Errorf("set rules of uid %d: %w", *uid, errPermissionDenied)
	}
	return *uid, nil
}

// SetRules atomically replaces the rules that decide req.UID's connections
// and returns how many it enforces (disabled and expired rules are dropped;
// none removes the UID's rules). Pending connections of that UID the new
// rules cover are decided at once.
func (e *Engine) SetRules(caller peercred.Cred, req SetRulesRequest) (int, error) {
	uid, err := rulesTarget(caller, req.UID)
	if err != nil {
		return 0, err
	}
	if len(req.Rules) > maxRulesPerUID {
		return 0, fmt.Errorf("%d rules, at most %d: %w", len(req.Rules), maxRulesPerUID, errInvalid)
	}
	now := ruleTime(e.now())
	live := make([]rules.Rule, 0, len(req.Rules))
	hashes, files := false, false
	for _, r := range req.Rules {
		// An expired rule never matches again; keeping it would only
		// cost a comparison per connection.
		if !r.Enabled || (r.Lifetime == rules.Duration && !now.Before(r.Expires)) {
			continue
		}
		live = append(live, r)
		hashes = hashes || r.ExeSHA256 != ""
		files = files || r.AnyMountNS
	}
	// SECURITY: what the rules cost is bounded before they are compiled
	// (internal/rules/cost.go), so a hostile set is refused cheaply.
	if _, err := rules.SetCost(live); err != nil {
		return 0, fmt.Errorf("%w: %w", err, errInvalid)
	}
	var m *uidRules
	if len(live) > 0 {
		cm, err := rules.NewMatcher(live)
		if err != nil {
			return 0, fmt.Errorf("compile rules: %w: %w", err, errInvalid)
		}
		if cm.Len() > 0 {
			m = &uidRules{m: cm, hashes: hashes, files: files}
		}
	}

	e.mu.Lock()
	if m == nil {
		delete(e.rules, uid)
	} else {
		e.rules[uid] = m
	}
	// After the rules changed: a decision remembered from the old ones
	// stops applying before SetRules returns.
	e.invalidateKernel(uid)
	var waiting []*pending
	if m != nil {
		for _, p := range e.byID {
			if p.Process.UID == uid {
				waiting = append(waiting, p)
			}
		}
	}
	e.mu.Unlock()
	e.log.Info("rules set", "uid", uid, "caller_uid", caller.UID, "caller_pid", caller.PID, "rules", len(req.Rules), "active", m.len())

	e.rememberRules(uid, m, live)
	e.settleByRules(uid, m, waiting, now)
	return m.len(), nil
}

// settleByRules decides the pending entries that m now covers. Matching
// may hash executables, so it runs without the lock; an entry decided or
// a matcher replaced meanwhile is left alone.
func (e *Engine) settleByRules(uid uint32, m *uidRules, waiting []*pending, now time.Time) {
	type verdict struct {
		p    *pending
		a    flow.Action
		by   string
		held []heldPacket
	}
	var matched []verdict
	for _, p := range waiting {
		if r, ok, _ := m.match(e.hashes, p.Process, p.Tuple, p.Host, now, nil); ok {
			matched = append(matched, verdict{p: p, a: r.Action, by: "rule:" + r.ID})
		}
	}
	if len(matched) == 0 {
		return
	}
	e.mu.Lock()
	if e.rules[uid] != m {
		e.mu.Unlock()
		return // newer rules were set; that call settles
	}
	n := 0
	for _, v := range matched {
		if e.byID[v.p.ID] != v.p {
			continue
		}
		v.held = e.resolveLocked(v.p, v.a, v.by)
		matched[n] = v
		n++
	}
	e.mu.Unlock()
	for _, v := range matched[:n] {
		e.releaseHeld(v.p, v.held, v.a, v.by)
	}
}

// RuleCount returns the number of rules enforced for uid.
func (e *Engine) RuleCount(uid uint32) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.rules[uid].len()
}
