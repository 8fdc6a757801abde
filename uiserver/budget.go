package uiserver

import (
	"fmt"

	"github.com/bastion-fw/bastion/internal/rules"
)

// checkAgentBounds refuses a change that would take the user's rules over
// the agent's per-user bounds (rules.Budget): the agent would refuse the
// whole set, and none of the new rules would be enforced. The user learns
// it when adding the rule instead. add are the new or changed rules (an
// existing ID replaces that rule). The caller holds rulesMu.
func (s *Service) checkAgentBounds(add ...rules.Rule) error {
	replaced := make(map[string]bool, len(add))
	for _, r := range add {
		if r.ID != "" {
			replaced[r.ID] = true
		}
	}
	now := s.ruleNow()
	s.mu.Lock()
	set := make([]rules.Rule, 0, len(s.active)+len(add))
	for _, r := range s.active {
		if !replaced[r.ID] {
			set = append(set, r)
		}
	}
	s.mu.Unlock()
	set = append(set, add...)
	enforced := set[:0]
	for _, r := range set {
		if r.Enabled && (r.Lifetime != rules.Duration || now.Before(r.Expires)) {
			enforced = append(enforced, r)
		}
	}
	if _, err := rules.SetCost(enforced); err != nil {
		return fmt.Errorf("%w: the agent would refuse this user's rules: %w", errInvalid, err)
	}
	return nil
}
