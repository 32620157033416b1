// Package bpf compiles a rule set into the form the BPF LSM enforcer loads: the rule set
// itself, less the rules BPF LSM hooks cannot see, as deterministic JSON. The enforcer
// (enforcer/bpf) turns it into map entries; keeping the table layout out of this package
// lets the compiler stay pure Go while the kernel side evolves.
package bpf

import (
	"encoding/json"
	"fmt"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// FormatVersion is the version of the JSON this package emits. The enforcer refuses a
// version it does not know rather than misread rules.
const FormatVersion = 1

// Backend compiles for the BPF enforcer.
type Backend struct{}

// Profile is the document Render emits.
type Profile struct {
	FormatVersion int             `json:"formatVersion"`
	ProfileID     string          `json:"profileID"`
	Policy        string          `json:"policy"`
	Mode          v1alpha1.Mode   `json:"mode"`
	Default       ruleset.Verdict `json:"default"`
	Rules         []ruleset.Rule  `json:"rules"`
}

// Enforcer is BPF.
func (Backend) Enforcer() v1alpha1.Enforcer { return v1alpha1.EnforcerBPF }

// Express accepts every rule kind BPF LSM has hooks for, which is every kind but system
// call rules: LSM hooks run on kernel objects (files, sockets, credentials), not on
// system call numbers and raw arguments.
func (Backend) Express(r ruleset.Rule) error {
	switch r.Kind {
	case ruleset.KindSyscall:
		return fmt.Errorf("system call rules are for Seccomp: BPF LSM hooks see kernel objects, not system calls")
	case ruleset.KindFile, ruleset.KindExec, ruleset.KindSocket, ruleset.KindEgress,
		ruleset.KindCapability, ruleset.KindPtrace, ruleset.KindMount, ruleset.KindOperation:
		return nil
	}
	return fmt.Errorf("unknown rule kind %q", r.Kind)
}

// Render emits the rules Express accepts, in rule-set order.
func (b Backend) Render(rs *ruleset.RuleSet) ([]byte, error) {
	p := Profile{
		FormatVersion: FormatVersion,
		ProfileID:     rs.ProfileID,
		Policy:        rs.Policy,
		Mode:          rs.Mode,
		Default:       rs.Default,
		Rules:         []ruleset.Rule{},
	}
	for _, r := range rs.Rules {
		if b.Express(r) == nil {
			p.Rules = append(p.Rules, r)
		}
	}
	out, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode bpf profile %s: %w", rs.ProfileID, err)
	}
	return append(out, '\n'), nil
}
