// Package profiles keeps what a node has loaded equal to the policies it must enforce:
// the BPF rule tables, the AppArmor profiles and the seccomp files of every compiled
// policy. Apply adds what is new, replaces what changed, removes what no policy needs any
// more, and reports, per policy and enforcer, what happened: loaded, failed (why), or
// unsupported on this node (which kernel feature is missing, and which rules that leaves
// unenforced). One policy failing never stops the others from loading.
//
// It only ever touches what podarmor owns: AppArmor profiles named podarmor-<id>, files
// under the seccomp root's podarmor/ directory, the BPF profiles it set.
package profiles

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/podarmor/podarmor/enforcer/policyset"
	"github.com/podarmor/podarmor/enforcer/tables"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
	compileapparmor "github.com/podarmor/podarmor/policies/compile/apparmor"
	compilebpf "github.com/podarmor/podarmor/policies/compile/bpf"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// BPF is the BPF enforcer (enforcer/bpf.Enforcer).
type BPF interface {
	SetProfile(p *compilebpf.Profile) error
	RemoveProfile(id string) error
	Profiles() []string
}

// AppArmor loads AppArmor profiles (enforcer/apparmor.Loader).
type AppArmor interface {
	Load(ctx context.Context, name string, text []byte) error
	Current(name string, text []byte) bool
	Remove(name string) error
	Loaded() (map[string]string, error)
}

// Seccomp stores seccomp profiles (enforcer/seccomp.Store).
type Seccomp interface {
	Write(id string, content []byte) (string, error)
	Remove(id string) error
	List() ([]string, error)
}

// Config says which enforcers the node has. An enforcer the node lacks is nil, with
// the reason in its Missing field; policies that use it are reported Unsupported.
type Config struct {
	BPF        BPF
	BPFMissing string
	// MissingHooks are the BPF LSM hooks the kernel lacks, with why; rules that need
	// one are reported as not enforced by BPF on this node.
	MissingHooks map[string]string

	AppArmor        AppArmor
	AppArmorMissing string

	Seccomp        Seccomp
	SeccompMissing string

	// Observe, if set, is called after every load of a profile into an enforcer (not
	// for profiles left as they were), with how long it took and its error.
	Observe func(e v1alpha1.Enforcer, took time.Duration, err error)

	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// State is what became of one enforcer's profile of a policy.
type State string

// States.
const (
	// Loaded: the profile is in place (or the enforcer has nothing to load for the
	// policy's mode, e.g. seccomp RuntimeDefault).
	Loaded State = "Loaded"
	// Failed: loading it failed; Reason says why.
	Failed State = "Failed"
	// Unsupported: the node lacks the enforcer; Reason says what is missing.
	Unsupported State = "Unsupported"
)

// NotEnforced is a rule an enforcer does not enforce on this node, and why.
type NotEnforced struct {
	RuleID string
	Reason string
}

// EnforcerResult is one enforcer's outcome for a policy.
type EnforcerResult struct {
	Enforcer v1alpha1.Enforcer
	State    State
	Reason   string
	// NotEnforced lists rules of the policy this enforcer leaves out on this node
	// because a kernel feature is missing (rules an enforcer cannot express at all are
	// in the compiler's output, compile.Profile.Unsupported, and not repeated here).
	NotEnforced []NotEnforced
}

// Result is what Apply did with one policy.
type Result struct {
	// Policy is the policy as compiled.
	Policy    compile.Policy
	ProfileID string
	Enforcers []EnforcerResult
}

// Ready reports whether every enforcer of the policy loaded it or is unsupported on the
// node (not failed).
func (r Result) Ready() bool {
	for _, e := range r.Enforcers {
		if e.State == Failed {
			return false
		}
	}
	return true
}

// loaded is what the node holds for one profile ID.
type loaded struct {
	// digests of what each enforcer loaded.
	digests map[v1alpha1.Enforcer][sha256.Size]byte
	// bpf is the BPF state: "" when BPF is not among the policy's enforcers or has
	// nothing to load, else the State.
	bpf       State
	bpfReason string
	// bpfNotEnforced are the rules BPF leaves out on this node (missing hooks).
	bpfNotEnforced []NotEnforced
}

// Manager applies policies to the node. It is safe for concurrent use; Apply calls are
// serialised.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	apply sync.Mutex

	mu       sync.RWMutex
	profiles map[string]*loaded
	// cleaned is set once Apply has removed what earlier enforcers left and no
	// policy needs.
	cleaned bool
}

// New returns a Manager.
func New(cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Manager{cfg: cfg, log: cfg.Logger, profiles: map[string]*loaded{}}
}

// Lookup tells the registrar about profile id: whether the node knows it, and whether
// its containers must be registered with the BPF enforcer. A profile whose BPF rules
// failed to load is an error: its containers must not start unconfined. A profile whose
// policy uses BPF on a node without BPF LSM is known but not registered (the node's
// status says BPF is unsupported there).
func (m *Manager) Lookup(id string) (known, bpf bool, err error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	l := m.profiles[id]
	switch {
	case l == nil:
		return false, false, nil
	case l.bpf == Failed:
		return true, false, fmt.Errorf("its BPF rules failed to load on this node: %s", l.bpfReason)
	}
	return true, l.bpf == Loaded, nil
}

// IDs are the profile IDs the node has loaded.
func (m *Manager) IDs() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Sorted(maps.Keys(m.profiles))
}

// Apply makes the node's profiles those of policies, which must have distinct profile
// IDs, and returns a result for each policy, in order.
func (m *Manager) Apply(ctx context.Context, policies []policyset.Compiled) []Result {
	m.apply.Lock()
	defer m.apply.Unlock()

	results := make([]Result, 0, len(policies))
	want := map[string]bool{}
	for _, p := range policies {
		id := p.ProfileID()
		want[id] = true
		m.mu.RLock()
		prev := m.profiles[id]
		m.mu.RUnlock()
		res, now := m.applyOne(ctx, p, prev)
		m.mu.Lock()
		m.profiles[id] = now
		m.mu.Unlock()
		results = append(results, res)
	}
	m.removeUnwanted(want)
	return results
}

func (m *Manager) applyOne(ctx context.Context, p policyset.Compiled, prev *loaded) (Result, *loaded) {
	id := p.ProfileID()
	res := Result{Policy: p.Policy, ProfileID: id}
	now := &loaded{digests: map[v1alpha1.Enforcer][sha256.Size]byte{}}
	for _, prof := range p.Result.Profiles {
		er := EnforcerResult{Enforcer: prof.Enforcer, State: Loaded}
		digest := sha256.Sum256(prof.Content)
		unchanged := prev != nil && prev.digests[prof.Enforcer] == digest
		var err error
		start, attempted := time.Now(), false
		switch prof.Enforcer {
		case v1alpha1.EnforcerBPF:
			switch {
			case m.cfg.BPF == nil:
				er.State, er.Reason = Unsupported, m.cfg.BPFMissing
			case prof.Content == nil:
			case unchanged && prev.bpf == Loaded:
				er.NotEnforced = prev.bpfNotEnforced
			default:
				var bp compilebpf.Profile
				if err = json.Unmarshal(prof.Content, &bp); err == nil {
					err = m.cfg.BPF.SetProfile(&bp)
				}
				if err == nil {
					er.NotEnforced = m.missingHooks(bp.Rules)
				}
				attempted = true
			}
		case v1alpha1.EnforcerAppArmor:
			name := compileapparmor.ProfileName(id)
			switch {
			case m.cfg.AppArmor == nil:
				er.State, er.Reason = Unsupported, m.cfg.AppArmorMissing
			case prof.Content == nil:
			case unchanged:
			case prev == nil && m.cfg.AppArmor.Current(name, prof.Content):
				// Loaded by an earlier enforcer from the same text.
			default:
				err = m.cfg.AppArmor.Load(ctx, name, prof.Content)
				attempted = true
			}
		case v1alpha1.EnforcerSeccomp:
			switch {
			case m.cfg.Seccomp == nil:
				er.State, er.Reason = Unsupported, m.cfg.SeccompMissing
			case prof.Content == nil:
			case unchanged:
			default:
				_, err = m.cfg.Seccomp.Write(id, prof.Content)
				attempted = true
			}
		default:
			err = fmt.Errorf("enforcer %s is not known to this enforcer", prof.Enforcer)
		}
		if attempted && m.cfg.Observe != nil {
			m.cfg.Observe(prof.Enforcer, time.Since(start), err)
		}
		if err != nil {
			er.State, er.Reason = Failed, err.Error()
			m.log.Error("profile not loaded", "profile", id, "enforcer", prof.Enforcer, "policy", p.Policy.String(), "error", err)
		} else if er.State == Loaded && prof.Content != nil {
			now.digests[prof.Enforcer] = digest
			if !unchanged {
				m.log.Info("profile loaded", "profile", id, "enforcer", prof.Enforcer, "policy", p.Policy.String())
			}
		}
		if prof.Enforcer == v1alpha1.EnforcerBPF && prof.Content != nil {
			now.bpf, now.bpfReason, now.bpfNotEnforced = er.State, er.Reason, er.NotEnforced
		}
		res.Enforcers = append(res.Enforcers, er)
	}
	// A profile this policy no longer asks an enforcer for is removed from it.
	if prev != nil {
		for e := range prev.digests {
			if _, ok := now.digests[e]; !ok && !slices.ContainsFunc(res.Enforcers, func(r EnforcerResult) bool { return r.Enforcer == e && r.State == Failed }) {
				if err := m.remove(e, id); err != nil {
					m.log.Error("profile not removed", "profile", id, "enforcer", e, "error", err)
					now.digests[e] = prev.digests[e]
				}
			}
		}
	}
	return res, now
}

// missingHooks lists the rules that need a BPF LSM hook the kernel lacks.
func (m *Manager) missingHooks(rules []ruleset.Rule) []NotEnforced {
	if len(m.cfg.MissingHooks) == 0 {
		return nil
	}
	var out []NotEnforced
	seen := map[string]bool{}
	for _, r := range rules {
		for _, h := range tables.Hooks(r) {
			reason, missing := m.cfg.MissingHooks[h]
			if !missing || seen[r.ID] {
				continue
			}
			seen[r.ID] = true
			out = append(out, NotEnforced{RuleID: r.ID, Reason: fmt.Sprintf("LSM hook %s: %s", h, reason)})
		}
	}
	return out
}

// removeUnwanted removes the profiles no policy wants: those this manager loaded, and,
// on the first call, those earlier enforcers left.
func (m *Manager) removeUnwanted(want map[string]bool) {
	m.mu.Lock()
	var gone []string
	for id := range m.profiles {
		if !want[id] {
			gone = append(gone, id)
		}
	}
	first := !m.cleaned
	m.cleaned = true
	m.mu.Unlock()

	stale := map[v1alpha1.Enforcer][]string{}
	for _, id := range gone {
		// Every enforcer, not only those that hold it now: a profile whose update
		// failed is still loaded in its previous version.
		for _, e := range []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor, v1alpha1.EnforcerSeccomp} {
			stale[e] = append(stale[e], id)
		}
		m.mu.Lock()
		delete(m.profiles, id)
		m.mu.Unlock()
	}
	if first {
		for e, ids := range m.leftovers(want) {
			stale[e] = append(stale[e], ids...)
		}
	}
	for e, ids := range stale {
		for _, id := range ids {
			if err := m.remove(e, id); err != nil {
				m.log.Error("profile not removed", "profile", id, "enforcer", e, "error", err)
				continue
			}
			m.log.Info("profile removed", "profile", id, "enforcer", e)
		}
	}
}

// leftovers are the profiles an earlier enforcer loaded that no policy wants now.
func (m *Manager) leftovers(want map[string]bool) map[v1alpha1.Enforcer][]string {
	out := map[v1alpha1.Enforcer][]string{}
	if m.cfg.BPF != nil {
		for _, id := range m.cfg.BPF.Profiles() {
			if !want[id] {
				out[v1alpha1.EnforcerBPF] = append(out[v1alpha1.EnforcerBPF], id)
			}
		}
	}
	if m.cfg.AppArmor != nil {
		names, err := m.cfg.AppArmor.Loaded()
		if err != nil {
			m.log.Error("list AppArmor profiles", "error", err)
		}
		prefix := compileapparmor.ProfileName("")
		for name := range names {
			id, ours := strings.CutPrefix(name, prefix)
			// A child profile or hat ("podarmor-x//y") goes with its parent.
			if ours && !strings.Contains(id, "//") && !want[id] {
				out[v1alpha1.EnforcerAppArmor] = append(out[v1alpha1.EnforcerAppArmor], id)
			}
		}
	}
	if m.cfg.Seccomp != nil {
		ids, err := m.cfg.Seccomp.List()
		if err != nil {
			m.log.Error("list seccomp profiles", "error", err)
		}
		for _, id := range ids {
			if !want[id] {
				out[v1alpha1.EnforcerSeccomp] = append(out[v1alpha1.EnforcerSeccomp], id)
			}
		}
	}
	return out
}

func (m *Manager) remove(e v1alpha1.Enforcer, id string) error {
	switch e {
	case v1alpha1.EnforcerBPF:
		if m.cfg.BPF != nil {
			return m.cfg.BPF.RemoveProfile(id)
		}
	case v1alpha1.EnforcerAppArmor:
		if m.cfg.AppArmor != nil {
			return m.cfg.AppArmor.Remove(compileapparmor.ProfileName(id))
		}
	case v1alpha1.EnforcerSeccomp:
		if m.cfg.Seccomp != nil {
			return m.cfg.Seccomp.Remove(id)
		}
	}
	return nil
}
