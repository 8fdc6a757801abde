package uiserver

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/rules"
	"github.com/bastion-fw/bastion/internal/store"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// reloadLocked rebuilds the matcher from the store and the session rules
// and asks the agent link to push them. The caller holds rulesMu.
func (s *Service) reloadLocked(ctx context.Context) error {
	stored, err := s.store.Rules(ctx)
	if err != nil {
		return fmt.Errorf("read rules: %w", err)
	}
	ids := make(map[string]bool, len(stored))
	for _, r := range stored {
		ids[r.ID] = true
	}
	all := stored
	for _, r := range s.session {
		all = append(all, r)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Created.Before(all[j].Created) })
	m, err := rules.NewMatcher(all)
	if err != nil {
		return fmt.Errorf("compile rules: %w", err)
	}
	s.mu.Lock()
	s.active, s.storedIDs, s.matcher = all, ids, m
	s.rulesVersion++
	s.mu.Unlock()
	select {
	case s.rulesDirty <- struct{}{}:
	default:
	}
	return nil
}

// rulesChanged reloads the rules, decides the open prompts they now cover
// and, while the agent is connected, waits until it has applied them. The
// caller holds rulesMu; it is released here.
func (s *Service) rulesChanged(ctx context.Context) error {
	err := s.reloadLocked(ctx)
	s.mu.Lock()
	v := s.rulesVersion
	s.mu.Unlock()
	s.rulesMu.Unlock()
	s.settlePrompts()
	s.waitPushed(ctx, v)
	return err
}

// waitPushed waits until the agent has applied the rules of version v, for
// at most setRulesTimeout, unless the agent is not connected: a user whose
// rule change returned knows that the agent enforces it, in the kernel
// too, for the next connection.
func (s *Service) waitPushed(ctx context.Context, v uint64) {
	timer := time.NewTimer(setRulesTimeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.agent == nil || s.pushedVersion >= v {
			s.mu.Unlock()
			return
		}
		ch := s.pushed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-timer.C:
			s.log.Warn("the agent has not applied the changed rules yet", "waited", setRulesTimeout)
			return
		}
	}
}

// markPushed records that the agent has the rules of version v, or that
// the link went down (v 0), and wakes waitPushed.
func (s *Service) markPushed(v uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pushedVersion = max(s.pushedVersion, v)
	close(s.pushed)
	s.pushed = make(chan struct{})
}

// agentRules returns the rules the agent should enforce now and the
// version they are of.
func (s *Service) agentRules() ([]*rulesv1.Rule, uint64) {
	now := s.ruleNow()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*rulesv1.Rule, 0, len(s.active))
	for _, r := range s.active {
		if !r.Enabled || (r.Lifetime == rules.Duration && !now.Before(r.Expires)) {
			continue
		}
		out = append(out, rules.ToProto(r))
	}
	return out, s.rulesVersion
}

// Rules returns the stored and session rules.
func (s *Service) Rules(ctx context.Context) ([]rules.Rule, error) {
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	stored, err := s.store.Rules(ctx)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	s.mu.Lock()
	pending := make(map[string]store.Hit, len(s.hits))
	for id, h := range s.hits {
		pending[id] = h
	}
	s.mu.Unlock()
	out := stored
	for _, r := range s.session {
		out = append(out, r)
	}
	// Hits not flushed yet count too.
	for i := range out {
		if h, ok := pending[out[i].ID]; ok {
			out[i].Hits += h.Count
			if h.Last.After(out[i].LastHit) {
				out[i].LastHit = h.Last
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// prepareNew readies a rule from a client for adding: the service owns
// created and the hit counters. A client may choose the id, so that it can
// retry an add whose outcome it did not learn (AddRule).
func (s *Service) prepareNew(r rules.Rule) (rules.Rule, error) {
	r.Hits, r.LastHit = 0, time.Time{}
	r.Created = s.ruleNow()
	if r.Lifetime == rules.Once {
		return r, invalidf("a LIFETIME_ONCE rule only answers a prompt and cannot be added")
	}
	if r.ID != "" && !validClientID(r.ID) {
		return r, invalidf("rule id %q is not 1-64 letters, digits, '.', '_' or '-'", r.ID)
	}
	if err := r.Validate(); err != nil {
		return r, fmt.Errorf("%w: %w", errInvalid, err)
	}
	return r, nil
}

// validClientID reports whether id may name a rule a client adds: the IDs
// the service makes (hex) and the ones clients make (bastionctl: hex) fit.
func validClientID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// sameRule reports whether a and b say the same thing: everything but
// their ids and the bookkeeping the service owns (created, hits, last hit).
func sameRule(a, b rules.Rule) bool {
	for _, r := range []*rules.Rule{&a, &b} {
		r.ID, r.Created, r.Hits, r.LastHit = "", time.Time{}, 0, time.Time{}
		if !r.Expires.IsZero() {
			r.Expires = r.Expires.Round(0).UTC()
		}
	}
	return proto.Equal(rules.ToProto(a), rules.ToProto(b))
}

// AddRule validates and adds a rule: session rules stay in memory, others
// are stored. An add whose client-chosen id names a rule that says the
// same returns that rule: it is the retry of an add that succeeded.
func (s *Service) AddRule(ctx context.Context, r rules.Rule) (rules.Rule, error) {
	r, err := s.prepareNew(r)
	if err != nil {
		return rules.Rule{}, err
	}
	s.rulesMu.Lock()
	if r.ID != "" {
		old, _, err := s.findLocked(ctx, r.ID)
		switch {
		case err == nil && sameRule(old, r):
			s.rulesMu.Unlock()
			return old, nil
		case err == nil:
			s.rulesMu.Unlock()
			return rules.Rule{}, fmt.Errorf("%w: a different rule with id %q exists", errExists, r.ID)
		case !errors.Is(err, errNotFound):
			s.rulesMu.Unlock()
			return rules.Rule{}, err
		}
	}
	if err := s.checkAgentBounds(r); err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	r, err = s.addLocked(ctx, r)
	if err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	return r, s.rulesChanged(ctx)
}

func (s *Service) addLocked(ctx context.Context, r rules.Rule) (rules.Rule, error) {
	if r.Lifetime == rules.Session {
		if r.ID == "" {
			r.ID = newID("")
		}
		s.session[r.ID] = r
		return r, nil
	}
	r, err := s.store.AddRule(ctx, r)
	if err != nil {
		return rules.Rule{}, fmt.Errorf("store rule: %w", err)
	}
	return r, nil
}

// findLocked returns the rule with id and whether it is a session rule.
func (s *Service) findLocked(ctx context.Context, id string) (rules.Rule, bool, error) {
	if r, ok := s.session[id]; ok {
		return r, true, nil
	}
	stored, err := s.store.Rules(ctx)
	if err != nil {
		return rules.Rule{}, false, fmt.Errorf("read rules: %w", err)
	}
	for _, r := range stored {
		if r.ID == id {
			return r, false, nil
		}
	}
	return rules.Rule{}, false, fmt.Errorf("%w: no rule with id %q", errNotFound, id)
}

// UpdateRule replaces the rule with r.ID, keeping its bookkeeping. A rule
// may move between session and stored lifetimes.
func (s *Service) UpdateRule(ctx context.Context, r rules.Rule) (rules.Rule, error) {
	if r.ID == "" {
		return rules.Rule{}, invalidf("rule id is required")
	}
	if r.Lifetime == rules.Once {
		return rules.Rule{}, invalidf("a rule cannot become LIFETIME_ONCE")
	}
	if err := r.Validate(); err != nil {
		return rules.Rule{}, fmt.Errorf("%w: %w", errInvalid, err)
	}
	s.rulesMu.Lock()
	old, wasSession, err := s.findLocked(ctx, r.ID)
	if err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	r.Created, r.Hits, r.LastHit = old.Created, old.Hits, old.LastHit
	if err := s.checkAgentBounds(r); err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	if err := s.replaceLocked(ctx, r, wasSession); err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	return r, s.rulesChanged(ctx)
}

func (s *Service) replaceLocked(ctx context.Context, r rules.Rule, wasSession bool) error {
	nowSession := r.Lifetime == rules.Session
	switch {
	case wasSession && nowSession:
		s.session[r.ID] = r
	case wasSession:
		if _, err := s.store.AddRule(ctx, r); err != nil {
			return fmt.Errorf("store rule: %w", err)
		}
		delete(s.session, r.ID)
	case nowSession:
		if err := s.store.DeleteRule(ctx, r.ID); err != nil {
			return fmt.Errorf("delete stored rule: %w", err)
		}
		s.session[r.ID] = r
	default:
		if err := s.store.UpdateRule(ctx, r); err != nil {
			return fmt.Errorf("update rule: %w", err)
		}
	}
	return nil
}

// DeleteRule removes a rule.
func (s *Service) DeleteRule(ctx context.Context, id string) error {
	s.rulesMu.Lock()
	if _, ok := s.session[id]; ok {
		delete(s.session, id)
	} else if err := s.store.DeleteRule(ctx, id); errors.Is(err, store.ErrNotFound) {
		s.rulesMu.Unlock()
		return fmt.Errorf("%w: no rule with id %q", errNotFound, id)
	} else if err != nil {
		s.rulesMu.Unlock()
		return fmt.Errorf("delete rule %q: %w", id, err)
	}
	return s.rulesChanged(ctx)
}

// SetRuleEnabled switches a rule on or off.
func (s *Service) SetRuleEnabled(ctx context.Context, id string, enabled bool) (rules.Rule, error) {
	s.rulesMu.Lock()
	r, wasSession, err := s.findLocked(ctx, id)
	if err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	r.Enabled = enabled
	if err := s.replaceLocked(ctx, r, wasSession); err != nil {
		s.rulesMu.Unlock()
		return rules.Rule{}, err
	}
	return r, s.rulesChanged(ctx)
}

// Export writes every rule in format f.
func (s *Service) Export(ctx context.Context, f rules.Format) ([]byte, error) {
	rs, err := s.Rules(ctx)
	if err != nil {
		return nil, err
	}
	data, err := rules.Export(rs, f)
	if err != nil {
		return nil, fmt.Errorf("export rules: %w", err)
	}
	return data, nil
}

// ImportedFormat is rules.Format plus OpenSnitch, which imports only.
type importFormat int

const (
	importJSON importFormat = iota + 1
	importTOML
	importOpenSnitch
)

// ImportResult is what an import did.
type ImportResult struct {
	Added, Changed []rules.Rule
	Unchanged      int
	Problems       []string // what could not be taken, one readable line each
}

// Import merges the rules in data into the user's: a rule whose id names
// an existing rule replaces it when it says something else (keeping its
// created time and hits) and is left alone when it says the same; a rule
// without an id, or with an unknown id, is added unless an existing rule
// says the same. Importing a file twice changes nothing the second time.
func (s *Service) Import(ctx context.Context, f importFormat, data []byte) (ImportResult, error) {
	var (
		rs  []rules.Rule
		res ImportResult
		err error
	)
	switch f {
	case importJSON:
		rs, err = rules.Import(data, rules.FormatJSON)
	case importTOML:
		rs, err = rules.Import(data, rules.FormatTOML)
	case importOpenSnitch:
		rs, res.Problems, err = rules.ImportOpenSnitch(data)
	default:
		return res, invalidf("unknown import format")
	}
	if err != nil {
		return res, fmt.Errorf("%w: %w", errInvalid, err)
	}
	var ready []rules.Rule
	for i, r := range rs {
		r, err := s.prepareNew(r)
		if err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("rule %d: %v", i+1, errors.Unwrap(err)))
			continue
		}
		ready = append(ready, r)
	}
	s.rulesMu.Lock()
	if err := s.checkAgentBounds(ready...); err != nil {
		s.rulesMu.Unlock()
		return res, err
	}
	stored, err := s.store.Rules(ctx)
	if err != nil {
		s.rulesMu.Unlock()
		return res, fmt.Errorf("read rules: %w", err)
	}
	existing := make(map[string]rules.Rule, len(stored)+len(s.session))
	for _, r := range stored {
		existing[r.ID] = r
	}
	for id, r := range s.session {
		existing[id] = r
	}
	sameAsExisting := func(r rules.Rule) bool {
		for _, e := range existing {
			if sameRule(e, r) {
				return true
			}
		}
		return false
	}
	for _, r := range ready {
		old, known := existing[r.ID]
		switch {
		case known && sameRule(old, r), !known && sameAsExisting(r):
			res.Unchanged++
			continue
		case known:
			_, wasSession := s.session[r.ID]
			r.Created, r.Hits, r.LastHit = old.Created, old.Hits, old.LastHit
			if err = s.replaceLocked(ctx, r, wasSession); err == nil {
				res.Changed = append(res.Changed, r)
			}
		default:
			if r, err = s.addLocked(ctx, r); err == nil {
				res.Added = append(res.Added, r)
			}
		}
		if err != nil {
			s.rulesChanged(ctx) //nolint:errcheck // the store error is the one to report
			return res, err
		}
		existing[r.ID] = r
	}
	return res, s.rulesChanged(ctx)
}

// sweepExpired removes Duration rules whose time is up.
func (s *Service) sweepExpired(ctx context.Context) error {
	now := s.ruleNow()
	s.rulesMu.Lock()
	stored, err := s.store.Rules(ctx)
	if err != nil {
		s.rulesMu.Unlock()
		return fmt.Errorf("read rules: %w", err)
	}
	removed := 0
	for _, r := range stored {
		if r.Lifetime == rules.Duration && !now.Before(r.Expires) {
			if err := s.store.DeleteRule(ctx, r.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
				s.rulesMu.Unlock()
				return fmt.Errorf("delete expired rule %s: %w", r.ID, err)
			}
			removed++
		}
	}
	for id, r := range s.session {
		if r.Lifetime == rules.Duration && !now.Before(r.Expires) {
			delete(s.session, id)
			removed++
		}
	}
	if removed == 0 {
		s.rulesMu.Unlock()
		return nil
	}
	s.log.Info("removed expired rules", "count", removed)
	return s.rulesChanged(ctx)
}

// countHit notes that rule id decided a connection; flushHits stores it.
func (s *Service) countHitLocked(id string, at time.Time) {
	h := s.hits[id]
	h.Count++
	if at.After(h.Last) {
		h.Last = at
	}
	s.hits[id] = h
}

// flushHits writes the counted hits: stored rules' to the store, session
// rules' to memory.
func (s *Service) flushHits(ctx context.Context) error {
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	s.mu.Lock()
	hits := s.hits
	s.hits = make(map[string]store.Hit)
	stored := s.storedIDs
	s.mu.Unlock()
	toStore := make(map[string]store.Hit)
	for id, h := range hits {
		if r, ok := s.session[id]; ok {
			r.Hits += h.Count
			if h.Last.After(r.LastHit) {
				r.LastHit = h.Last
			}
			s.session[id] = r
		} else if stored[id] {
			toStore[id] = h
		}
	}
	if len(toStore) == 0 {
		return nil
	}
	if err := s.store.RecordHits(ctx, toStore); err != nil {
		return fmt.Errorf("record hits: %w", err)
	}
	return nil
}
