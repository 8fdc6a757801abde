package uiserver

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// TestRuleCostBoundsAtAdd: the user learns of the agent's cost bounds when
// adding a rule, not from a SetRules the agent refuses later: a costly
// expression, and a rule that takes the set over the per-user memory.
func TestRuleCostBoundsAtAdd(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	hostile := forever(rulesv1.Action_ACTION_ALLOW, curl)
	hostile.Cmdline = strings.Repeat("a{1000}", 584)
	_, err := h.ui.AddRule(ctx, &uiv1.AddRuleRequest{Rule: hostile})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "at most 1024") {
		t.Fatalf("AddRule of a%s: %v, want InvalidArgument naming the bound", "{1000}…", err)
	}
	// 500-instruction expressions: about 130 KB each, so the 16 MiB a
	// user's rules may hold are full after ~125 of them.
	big := regexp.QuoteMeta(strings.Repeat("z", 500))
	var refused error
	for i := range 200 {
		r := forever(rulesv1.Action_ACTION_ALLOW, fmt.Sprintf("/usr/bin/tool%d", i))
		r.Cmdline = big
		if _, refused = h.ui.AddRule(ctx, &uiv1.AddRuleRequest{Rule: r}); refused != nil {
			break
		}
	}
	if status.Code(refused) != codes.InvalidArgument || !strings.Contains(refused.Error(), "per user") {
		t.Fatalf("200 costly rules: %v, want InvalidArgument naming the per-user bound", refused)
	}
	t.Logf("refused: %v", refused)
}
