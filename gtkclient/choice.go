package gtkclient

import (
	"time"

	"github.com/bastion-fw/bastion/internal/rules"
)

// The prompt's lifetimes and scopes, in the order shown, as in
// bastionctl's terminal prompt.
var promptLifetimes = []struct {
	label string
	life  rules.Lifetime
	dur   time.Duration
}{
	{"Once", rules.Once, 0},
	{"For 15 minutes", rules.Duration, 15 * time.Minute},
	{"For 1 hour", rules.Duration, time.Hour},
	{"Until I log out", rules.Session, 0},
	{"Forever", rules.Forever, 0},
}

var promptScopes = []struct {
	label string // completed with the destination the rule names
	scope rules.Scope
}{
	{"This destination and port", rules.ScopeDestinationPort},
	{"This host, any port", rules.ScopeHost},
	{"This domain", rules.ScopeDomain},
	{"This port, any destination", rules.ScopePort},
	{"Anywhere", rules.ScopeAny},
}
