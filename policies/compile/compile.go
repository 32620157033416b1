// Package compile turns a policy into what each enforcer loads: first an
// enforcer-neutral rule set (policies/ruleset), then per enforcer an AppArmor profile,
// an OCI seccomp profile and the BPF rule set. It is pure and deterministic: no I/O, and
// the same policy and options give byte-identical output.
package compile

import (
	"fmt"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/catalog"
	"github.com/podarmor/podarmor/policies/compile/apparmor"
	"github.com/podarmor/podarmor/policies/compile/bpf"
	"github.com/podarmor/podarmor/policies/compile/seccomp"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// Options are what compiling needs besides the policy.
type Options struct {
	// Catalog is the built-in rule catalog; defaults to catalog.Load().
	Catalog *catalog.Catalog
	// APIServer are the addresses that $APISERVER stands for in egress rules.
	APIServer []netip.Addr
	// ClusterCIDRs are the prefixes that $CLUSTER_CIDRS stands for in egress rules.
	ClusterCIDRs []netip.Prefix
	// Backends compile for each enforcer; default to the AppArmor, seccomp and BPF
	// backends of this module.
	Backends map[v1alpha1.Enforcer]Backend
}

func (o Options) defaults() (Options, error) {
	if o.Catalog == nil {
		c, err := catalog.Load()
		if err != nil {
			return o, fmt.Errorf("load built-in catalog: %w", err)
		}
		o.Catalog = c
	}
	if o.Backends == nil {
		b, err := DefaultBackends()
		if err != nil {
			return o, err
		}
		o.Backends = b
	}
	return o, nil
}

// DefaultBackends builds the backends of this module with their default configuration.
func DefaultBackends() (map[v1alpha1.Enforcer]Backend, error) {
	aa, err := apparmor.New(apparmor.Config{})
	if err != nil {
		return nil, fmt.Errorf("apparmor backend: %w", err)
	}
	sc, err := seccomp.New(seccomp.Config{})
	if err != nil {
		return nil, fmt.Errorf("seccomp backend: %w", err)
	}
	return map[v1alpha1.Enforcer]Backend{
		v1alpha1.EnforcerBPF:      bpf.Backend{},
		v1alpha1.EnforcerAppArmor: aa,
		v1alpha1.EnforcerSeccomp:  sc,
	}, nil
}

// Result is a compiled policy.
type Result struct {
	RuleSet *ruleset.RuleSet
	// Profiles has one entry per enforcer of the policy, in canonical enforcer order.
	Profiles []Profile
}

// Profile is what one enforcer loads for a policy.
type Profile struct {
	Enforcer v1alpha1.Enforcer
	// Content is the profile text. It is nil when the enforcer applies the container
	// runtime's own default instead (Seccomp in mode RuntimeDefault: the pod asks for
	// seccompProfile type RuntimeDefault) or nothing (Seccomp in mode AlwaysAllow).
	Content []byte
	// Unsupported lists the rules of the rule set this enforcer cannot express exactly
	// and so leaves to the policy's other enforcers.
	Unsupported []Unsupported
}

// Unsupported is a rule an enforcer leaves out, and why.
type Unsupported struct {
	RuleID string `json:"ruleID"`
	Reason string `json:"reason"`
}

// Compile compiles a policy for each of its enforcers. It fails, naming the field, when
// the policy is invalid or when one of its rules cannot be expressed by any of its
// enforcers: a rule is never dropped silently. A built-in rule passes when its enforcers
// express at least part of it (catalog entries say in their notes which enforcer
// enforces which part); the runtime-default rules a mode adds are each enforcer's share
// of the runtime's defaults and never fail.
func Compile(p Policy, o Options) (*Result, field.ErrorList) {
	o, err := o.defaults()
	if err != nil {
		return nil, field.ErrorList{field.InternalError(nil, err)}
	}
	if errs := names(p); len(errs) > 0 {
		return nil, errs
	}
	rs, sources, errs := expand(p, o)
	if len(errs) > 0 {
		return nil, errs
	}
	res := &Result{RuleSet: rs}
	expressed := map[string]bool{}    // rule id -> some part is expressed
	unexpressed := map[int][]string{} // rule index -> why each enforcer cannot
	for _, e := range rs.Enforcers {
		b, ok := o.Backends[e]
		if !ok {
			return nil, field.ErrorList{field.InternalError(field.NewPath("spec", "enforcers"), fmt.Errorf("no backend for enforcer %s", e))}
		}
		prof := Profile{Enforcer: e}
		for i, r := range rs.Rules {
			if err := b.Express(r); err != nil {
				prof.Unsupported = append(prof.Unsupported, Unsupported{RuleID: r.ID, Reason: err.Error()})
				unexpressed[i] = append(unexpressed[i], fmt.Sprintf("%s: %v", e, err))
				continue
			}
			expressed[r.ID] = true
		}
		if !(e == v1alpha1.EnforcerSeccomp && p.Spec.Mode != v1alpha1.ModeEnhanceProtect) {
			content, err := b.Render(rs)
			if err != nil {
				return nil, field.ErrorList{field.InternalError(field.NewPath("spec"), fmt.Errorf("render %s profile: %w", e, err))}
			}
			prof.Content = content
		}
		res.Profiles = append(res.Profiles, prof)
	}
	reported := map[string]bool{}
	for i, r := range rs.Rules {
		src := sources[r.ID]
		if src == nil || reported[r.ID] {
			continue
		}
		builtin := strings.HasPrefix(r.ID, "builtin/")
		if (builtin && !expressed[r.ID]) || (!builtin && len(unexpressed[i]) == len(rs.Enforcers)) {
			reported[r.ID] = true
			errs = append(errs, field.Invalid(src, r.ID, fmt.Sprintf(
				"none of the policy's enforcers can express this rule (%s); add an enforcer that can",
				strings.Join(unexpressed[i], "; "))))
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return res, nil
}

// names checks that the policy's name and namespace make a profile id, which names the
// AppArmor profile and the seccomp file on every node: the same check as the API
// server's, so that a policy read from a file fails here naming the field rather than in
// a backend.
func names(p Policy) field.ErrorList {
	var errs field.ErrorList
	meta := field.NewPath("metadata")
	for _, msg := range validation.IsDNS1123Subdomain(p.Name) {
		errs = append(errs, field.Invalid(meta.Child("name"), p.Name, msg))
	}
	if p.Kind == KindArmorPolicy && p.Namespace != "" {
		for _, msg := range validation.IsDNS1123Label(p.Namespace) {
			errs = append(errs, field.Invalid(meta.Child("namespace"), p.Namespace, msg))
		}
	}
	return errs
}
