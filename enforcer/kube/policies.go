package kube

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/podarmor/podarmor/enforcer/policyset"
	"github.com/podarmor/podarmor/enforcer/profiles"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
)

// Resources of the podarmor API.
var (
	armorPolicies        = v1alpha1.SchemeGroupVersion.WithResource("armorpolicies")
	clusterArmorPolicies = v1alpha1.SchemeGroupVersion.WithResource("clusterarmorpolicies")
)

// typed converts the unstructured objects of a dynamic informer into API types once,
// as they arrive.
func typed(newObj func() runtime.Object) cache.TransformFunc {
	return func(obj any) (any, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return obj, nil // a tombstone, or already converted
		}
		out := newObj()
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
			return nil, fmt.Errorf("decode %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		return out, nil
	}
}

// PolicyResult is what the node made of one policy.
type PolicyResult struct {
	Kind, Namespace, Name string
	UID                   types.UID
	// Generation is the policy's generation the result is for.
	Generation int64
	ProfileID  string
	// CompileError is set when the policy did not compile on this node (the webhook
	// validates policies with the same compiler, so this means a version skew between
	// the two); Enforcers is empty then.
	CompileError string
	// SpecEnforcers are the enforcers the policy names.
	SpecEnforcers []v1alpha1.Enforcer
	Enforcers     []profiles.EnforcerResult
}

// Ready reports whether the node enforces the policy as well as it can: compiled, and
// no enforcer failed.
func (r PolicyResult) Ready() bool {
	if r.CompileError != "" {
		return false
	}
	for _, e := range r.Enforcers {
		if e.State == profiles.Failed {
			return false
		}
	}
	return true
}

// source is one policy object from the API server.
type source struct {
	policy     compile.Policy
	uid        types.UID
	generation int64
}

// sources lists the policies in the informers' stores.
func sources(armor, cluster cache.Store) []source {
	var out []source
	for _, obj := range armor.List() {
		if p, ok := obj.(*v1alpha1.ArmorPolicy); ok {
			out = append(out, source{compile.FromArmorPolicy(p), p.UID, p.Generation})
		}
	}
	for _, obj := range cluster.List() {
		if p, ok := obj.(*v1alpha1.ClusterArmorPolicy); ok {
			out = append(out, source{compile.FromClusterArmorPolicy(p), p.UID, p.Generation})
		}
	}
	return out
}

// compileAll compiles every policy. A policy that does not compile is reported and left
// out; so is a second policy with a profile ID already taken (profile IDs derive from
// kind, namespace and name, so this cannot happen unless two objects collide in the
// hash part of a long ID).
func compileAll(srcs []source, o compile.Options) ([]policyset.Compiled, map[string]PolicyResult, []PolicyResult) {
	var ok []policyset.Compiled
	meta := map[string]PolicyResult{}
	var failed []PolicyResult
	for _, s := range srcs {
		r := PolicyResult{Kind: s.policy.Kind, Namespace: s.policy.Namespace, Name: s.policy.Name, UID: s.uid, Generation: s.generation,
			SpecEnforcers: s.policy.Spec.Enforcers}
		res, errs := compile.Compile(s.policy, o)
		if len(errs) > 0 {
			r.CompileError = errs.ToAggregate().Error()
			failed = append(failed, r)
			continue
		}
		r.ProfileID = res.RuleSet.ProfileID
		if prev, taken := meta[r.ProfileID]; taken {
			r.CompileError = fmt.Sprintf("profile ID %s is %s %s/%s's already", r.ProfileID, prev.Kind, prev.Namespace, prev.Name)
			failed = append(failed, r)
			continue
		}
		meta[r.ProfileID] = r
		ok = append(ok, policyset.Compiled{Source: s.policy.String(), Policy: s.policy, Result: res})
	}
	return ok, meta, failed
}
