package uiserver

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// Conversions to the UI API's types; those of the agent API are in
// internal/apiconv, those of rules (rules.ActionProto) in internal/rules.

func tsOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
