// Package validation is the one place that decides whether a policy is valid. The
// admission webhook calls it for ArmorPolicy and ClusterArmorPolicy objects and the
// podarmor CLI calls it for files; both report its errors with their field paths.
package validation

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
)

// Result is the outcome of validating one policy.
type Result struct {
	// Errors make the policy invalid; each names a field.
	Errors field.ErrorList
	// Warnings do not: they say which enforcer leaves which rule to the others.
	Warnings []string
	// Compiled is the compiled policy when there are no errors.
	Compiled *compile.Result
}

// ArmorPolicy validates a namespaced policy.
func ArmorPolicy(p *v1alpha1.ArmorPolicy, o compile.Options) Result {
	errs := objectMeta(p.Name, p.Namespace, true)
	errs = append(errs, target(p.Spec.Target, field.NewPath("spec", "target"))...)
	return finish(compile.FromArmorPolicy(p), o, errs)
}

// ClusterArmorPolicy validates a cluster-scoped policy.
func ClusterArmorPolicy(p *v1alpha1.ClusterArmorPolicy, o compile.Options) Result {
	spec := field.NewPath("spec")
	errs := objectMeta(p.Name, p.Namespace, false)
	errs = append(errs, target(p.Spec.Target, spec.Child("target"))...)
	errs = append(errs, metav1validation.ValidateLabelSelector(&p.Spec.NamespaceSelector,
		metav1validation.LabelSelectorValidationOptions{}, spec.Child("namespaceSelector"))...)
	errs = append(errs, selectorSize(&p.Spec.NamespaceSelector, spec.Child("namespaceSelector"))...)
	if p.Spec.Priority < -1000 || p.Spec.Priority > 1000 {
		errs = append(errs, field.Invalid(spec.Child("priority"), p.Spec.Priority, "must be from -1000 to 1000"))
	}
	return finish(compile.FromClusterArmorPolicy(p), o, errs)
}

func objectMeta(name, namespace string, namespaced bool) field.ErrorList {
	var errs field.ErrorList
	meta := field.NewPath("metadata")
	if name == "" {
		errs = append(errs, field.Required(meta.Child("name"), ""))
	}
	for _, msg := range validation.IsDNS1123Subdomain(name) {
		errs = append(errs, field.Invalid(meta.Child("name"), name, msg))
	}
	switch {
	case namespaced && namespace != "":
		for _, msg := range validation.IsDNS1123Label(namespace) {
			errs = append(errs, field.Invalid(meta.Child("namespace"), namespace, msg))
		}
	case !namespaced && namespace != "":
		errs = append(errs, field.Forbidden(meta.Child("namespace"), "a ClusterArmorPolicy has no namespace"))
	}
	return errs
}

func target(t v1alpha1.Target, path *field.Path) field.ErrorList {
	errs := metav1validation.ValidateLabelSelector(&t.Selector,
		metav1validation.LabelSelectorValidationOptions{}, path.Child("selector"))
	errs = append(errs, selectorSize(&t.Selector, path.Child("selector"))...)
	seen := map[string]bool{}
	for i, c := range t.Containers {
		p := path.Child("containers").Index(i)
		for _, msg := range validation.IsDNS1123Label(c) {
			errs = append(errs, field.Invalid(p, c, msg))
		}
		if seen[c] {
			errs = append(errs, field.Duplicate(p, c))
		}
		seen[c] = true
	}
	return errs
}

// finish compiles the policy, which checks everything about its rules, and warns
// about each rule that some of the policy's enforcers cannot express: where those are the
// only enforcers a node has, the rule is not enforced there.
func finish(p compile.Policy, o compile.Options, errs field.ErrorList) Result {
	res, cerrs := compile.Compile(p, o)
	metaReported := slices.ContainsFunc(errs, func(e *field.Error) bool { return strings.HasPrefix(e.Field, "metadata.") })
	for _, e := range cerrs {
		if !metaReported || !strings.HasPrefix(e.Field, "metadata.") { // objectMeta's check is the same
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return Result{Errors: errs}
	}
	explicit := map[string]bool{}
	for _, b := range p.Spec.BuiltinRules {
		explicit["builtin/"+b.Name] = true
	}
	missing := map[string][]string{} // rule id -> enforcers that leave (part of) it out
	var order []string
	for _, prof := range res.Profiles {
		for _, u := range prof.Unsupported {
			if strings.HasPrefix(u.RuleID, "builtin/") && !explicit[u.RuleID] {
				continue // the runtime-default share of each enforcer is what it can express
			}
			if _, ok := missing[u.RuleID]; !ok {
				order = append(order, u.RuleID)
			}
			if m := missing[u.RuleID]; len(m) == 0 || m[len(m)-1] != string(prof.Enforcer) {
				missing[u.RuleID] = append(m, string(prof.Enforcer))
			}
		}
	}
	var warnings []string
	for _, id := range order {
		warnings = append(warnings, fmt.Sprintf("rule %s is not (fully) enforced by %s; `podarmor render` says why",
			id, strings.Join(missing[id], ", ")))
	}
	return Result{Warnings: warnings, Compiled: res}
}

// selectorSize checks the limits the CRD's CEL rules put on a label selector: the webhook
// evaluates selectors for every pod, so their size is bounded like every list of a policy.
func selectorSize(sel *metav1.LabelSelector, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if n := len(sel.MatchLabels); n > v1alpha1.MaxSelectorLabels {
		errs = append(errs, field.TooMany(path.Child("matchLabels"), n, v1alpha1.MaxSelectorLabels))
	}
	if n := len(sel.MatchExpressions); n > v1alpha1.MaxSelectorExpressions {
		errs = append(errs, field.TooMany(path.Child("matchExpressions"), n, v1alpha1.MaxSelectorExpressions))
	}
	for i, e := range sel.MatchExpressions {
		if n := len(e.Values); n > v1alpha1.MaxSelectorValues {
			errs = append(errs, field.TooMany(path.Child("matchExpressions").Index(i).Child("values"), n, v1alpha1.MaxSelectorValues))
		}
	}
	return errs
}
