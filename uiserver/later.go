package uiserver

import (
	"context"
	"errors"
	"fmt"

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
