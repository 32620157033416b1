package apparmor

import (
	"fmt"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// ABI is an AppArmor feature ABI, which a profile declares in its first line.
type ABI string

// ABI30 is the feature ABI of AppArmor 3.0 (abi <abi/3.0>), the newest that
// apparmor_parser 3.0 (Debian 12) knows; 4.x (Debian 13) compiles policy declaring it
// with 3.0's meaning.
const ABI30 ABI = "3.0"

// Config configures the AppArmor backend.
type Config struct {
	// ABI is the feature ABI the profiles are written for. It defaults to ABI30, the only
	// one supported: what Express accepts depends on it.
	ABI ABI
}

// defaults fills in the optional fields and rejects values the backend cannot honour.
func (c Config) defaults() (Config, error) {
	if c.ABI == "" {
		c.ABI = ABI30
	}
	if c.ABI != ABI30 {
		return c, fmt.Errorf("apparmor abi %q is not supported (only %q)", c.ABI, ABI30)
	}
	return c, nil
}

// Backend compiles rule sets into AppArmor profiles. It is pure and safe for concurrent
// use.
type Backend struct {
	cfg Config
}

// New returns a backend for c.
func New(c Config) (*Backend, error) {
	c, err := c.defaults()
	if err != nil {
		return nil, err
	}
	return &Backend{cfg: c}, nil
}

// ProfileName returns the name of the AppArmor profile for a profile id, podarmor-<id>,
// which the pod's securityContext names as its Localhost AppArmor profile.
func ProfileName(id string) string {
	return "podarmor-" + id
}

// Enforcer is AppArmor.
func (b *Backend) Enforcer() v1alpha1.Enforcer { return v1alpha1.EnforcerAppArmor }

// Express returns nil when the AppArmor profile expresses r exactly, and otherwise an
// error saying why not. The package documentation lists what AppArmor 3.0 can express.
func (b *Backend) Express(r ruleset.Rule) error {
	_, err := translate(r)
	return err
}

// Render returns the AppArmor profile for rs: the allow-everything base, then every rule
// Express accepts in rs's order, and a comment for each rule it does not.
func (b *Backend) Render(rs *ruleset.RuleSet) ([]byte, error) {
	if rs == nil {
		return nil, fmt.Errorf("render apparmor profile: no rule set")
	}
	out, err := render(b.cfg, rs)
	if err != nil {
		return nil, fmt.Errorf("render apparmor profile for %q: %w", rs.ProfileID, err)
	}
	return out, nil
}
