package uiserver

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/bastion-fw/bastion/internal/rules"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// FuzzRuleFromAPI feeds arbitrary wire bytes through the conversion every
// rule from a client takes. It must never panic, and whatever it accepts
// and validates must also compile and survive a round trip.
func FuzzRuleFromAPI(f *testing.F) {
	for _, r := range []*rulesv1.Rule{
		forever(rulesv1.Action_ACTION_ALLOW, "/usr/bin/curl"),
		{Action: rulesv1.Action_ACTION_DENY, Exe: "/usr/**/python3*", Cmdline: ".*-m pip.*", Dst: "10.0.0.0/8",
			DstPortMin: 1, DstPortMax: 1024, Protocol: rulesv1.Protocol_PROTOCOL_TCP, Lifetime: rulesv1.Lifetime_LIFETIME_SESSION},
		{Action: rulesv1.Action_ACTION_REJECT, Host: "*.example.com", Lifetime: rulesv1.Lifetime_LIFETIME_ONCE},
	} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var p rulesv1.Rule
		if proto.Unmarshal(data, &p) != nil {
			return
		}
		r, err := ruleFromAPI(&p)
		if err != nil || r.Validate() != nil {
			return
		}
		if _, err := rules.NewMatcher([]rules.Rule{r}); err != nil {
			t.Fatalf("a valid rule does not compile: %v (%+v)", err, r)
		}
		if _, err := rules.FromProto(rules.ToProto(r)); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}
