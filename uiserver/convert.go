package uiserver

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/flow"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// Conversions to the UI API's types; those of the agent API are in
// internal/apiconv.

func actionToRules(a flow.Action) rulesv1.Action {
	switch a {
	case flow.ActionAllow:
		return rulesv1.Action_ACTION_ALLOW
	case flow.ActionDeny:
		return rulesv1.Action_ACTION_DENY
	case flow.ActionReject:
		return rulesv1.Action_ACTION_REJECT
	}
	return rulesv1.Action_ACTION_UNSPECIFIED
}

func tsOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
