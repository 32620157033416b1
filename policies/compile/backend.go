package compile

import (
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// Backend translates a rule set into one enforcer's profile. Backends are pure: no I/O,
// and the same rule set gives byte-identical output.
type Backend interface {
	// Enforcer is the enforcer the backend compiles for.
	Enforcer() v1alpha1.Enforcer
	// Express returns nil when the backend expresses r exactly, and otherwise an error
	// saying why not. A backend never widens or narrows a rule silently: a rule it cannot
	// express exactly is left to the other enforcers, and validation reports it.
	Express(r ruleset.Rule) error
	// Render returns the profile for rs: every rule Express accepts, in rs's order. Rules
	// it cannot express are left out (and, where the format allows comments, listed).
	Render(rs *ruleset.RuleSet) ([]byte, error)
}
