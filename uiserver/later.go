package uiserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/bastion-fw/bastion/internal/flow"
	"github.com/bastion-fw/bastion/internal/rules"
	"github.com/bastion-fw/bastion/internal/store"
)

// DecideLater lists the connections decided by the silent action.
func (s *Service) DecideLater(ctx context.Context) ([]store.DecideLaterEntry, error) {
	es, err := s.store.DecideLater(ctx)
	if err != nil {
		return nil, fmt.Errorf("read decide-later list: %w", err)
	}
	return es, nil
}

// ResolveDecideLater makes rule r from entry id (none when r is nil) and
// removes the entry.
func (s *Service) ResolveDecideLater(ctx context.Context, id string, r *rules.Rule) (rules.Rule, error) {
	es, err := s.DecideLater(ctx)
	if err != nil {
		return rules.Rule{}, err
	}
	var found *store.DecideLaterEntry
	for i := range es {
		if es[i].ID == id {
			found = &es[i]
			break
		}
	}
	if found == nil {
		return rules.Rule{}, fmt.Errorf("%w: no decide-later entry %q", errNotFound, id)
	}
	var out rules.Rule
	if r != nil {
		if !rules.Covers(*r, connOf(found.Process, found.Tuple, found.Host)) {
			return rules.Rule{}, invalidf("the rule does not cover the entry's connection (%s, exe %q)",
				found.Tuple.String(), found.Process.Exe)
		}
		if out, err = s.AddRule(ctx, *r); err != nil {
			return rules.Rule{}, err
		}
	}
	if err := s.store.RemoveDecideLater(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return out, fmt.Errorf("remove decide-later entry: %w", err)
	}
	key := keyOf(found.Process, found.Tuple)
	s.mu.Lock()
	if s.laterKeys[key] == id {
		delete(s.laterKeys, key)
	}
	s.mu.Unlock()
	return out, nil
}

// listForLater lists e's connection under decide later, with the action
// it got, unless an entry for the same program and destination is listed
// already; it returns the entry's ID.
func (s *Service) listForLater(key promptKey, e *entry, a flow.Action) (string, error) {
	s.mu.Lock()
	id, listed := s.laterKeys[key]
	s.mu.Unlock()
	if listed {
		return id, nil
	}
	le, err := s.store.AddDecideLater(s.ctx, store.DecideLaterEntry{
		Time: s.clock.Now(), Process: e.proc, Tuple: e.tuple, Host: e.host, Applied: a,
	})
	if err != nil {
		return "", fmt.Errorf("add decide-later entry: %w", err)
	}
	s.mu.Lock()
	s.laterKeys[key] = le.ID
	s.mu.Unlock()
	return le.ID, nil
}

// PutOffPrompt answers prompt id with the silent action now and lists its
// connection under decide later: the user's "Decide later". The first
// answer wins, as with AnswerPrompt.
func (s *Service) PutOffPrompt(ctx context.Context, id string) (flow.Action, string, error) {
	s.mu.Lock()
	p := s.prompts[id]
	if p == nil {
		s.mu.Unlock()
		return 0, "", fmt.Errorf("%w: no prompt %q (already answered, timed out or withdrawn)", errNotFound, id)
	}
	// Claimed: from here on, later answers get NotFound.
	s.removePromptLocked(p)
	s.mu.Unlock()
	a := s.cfg.SilentAction
	s.decideEntries(p.agent, p.key, entriesOf(p), a, decidedByLater, "")
	s.mu.Lock()
	s.broadcastLocked(withdrawn(p, "later"))
	s.mu.Unlock()
	s.log.Info("prompt put off", "prompt_id", id, "exe", p.first.proc.Exe, "dst", p.first.tuple.String(),
		"verdict", a.String())
	laterID, err := s.listForLater(p.key, p.first, a)
	if err != nil {
		return a, "", fmt.Errorf("the connection got %s, but it could not be listed under decide later: %w", a, err)
	}
	return a, laterID, nil
}

// decidedByLater is the history's decided_by of a prompt the user put off.
const decidedByLater = "later"
