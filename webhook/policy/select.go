// Package policy knows the policies and namespaces of the cluster and chooses the policy
// that applies to a pod. The choice is deterministic: a namespaced ArmorPolicy whose
// selector matches wins (the oldest one when several match, and the others are reported
// as conflicting); then the ClusterArmorPolicy with the highest priority whose namespace
// and pod selectors match (ties go to the name that sorts first); then the configured
// default ClusterArmorPolicy.
package policy

import (
	"cmp"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
)

// Store is what the webhook knows of the cluster: the informer caches in production,
// fixed lists in tests.
type Store interface {
	// ArmorPolicies lists the ArmorPolicies of a namespace.
	ArmorPolicies(namespace string) []*v1alpha1.ArmorPolicy
	// ClusterArmorPolicies lists every ClusterArmorPolicy.
	ClusterArmorPolicies() []*v1alpha1.ClusterArmorPolicy
	// ClusterArmorPolicy returns one ClusterArmorPolicy by name.
	ClusterArmorPolicy(name string) (*v1alpha1.ClusterArmorPolicy, bool)
	// Namespace returns a namespace by name.
	Namespace(name string) (*corev1.Namespace, bool)
}

// Choice is the policy chosen for a pod.
type Choice struct {
	// Policy is the chosen policy in compiler form.
	Policy compile.Policy
	// Generation and Status are the chosen policy's.
	Generation int64
	Status     v1alpha1.PolicyStatus
	// Reason says why it was chosen: "namespaced", "cluster" or "default".
	Reason string
	// Conflicts names the other ArmorPolicies of the namespace that select the pod
	// too; the chosen one is the oldest.
	Conflicts []*v1alpha1.ArmorPolicy
}

// The reasons of a Choice.
const (
	ReasonNamespaced = "namespaced"
	ReasonCluster    = "cluster"
	ReasonDefault    = "default"
)

// ErrNoPolicy is returned when nothing applies to a pod of an opted-in namespace and the
// default policy does not exist either.
type ErrNoPolicy struct{ Default string }

func (e ErrNoPolicy) Error() string {
	if e.Default == "" {
		return "no podarmor policy selects the pod and no default policy is configured"
	}
	return fmt.Sprintf("no podarmor policy selects the pod and the default ClusterArmorPolicy %q does not exist", e.Default)
}

// Select chooses the policy for a pod of namespace ns. defaultPolicy names the
// ClusterArmorPolicy that applies when no other does ("" for none).
func Select(s Store, pod *corev1.Pod, ns *corev1.Namespace, defaultPolicy string) (Choice, error) {
	podLabels := labels.Set(pod.Labels)

	var matched []*v1alpha1.ArmorPolicy
	for _, p := range s.ArmorPolicies(ns.Name) {
		ok, err := selects(&p.Spec.Target.Selector, podLabels)
		if err != nil {
			return Choice{}, fmt.Errorf("ArmorPolicy %s/%s: spec.target.selector: %w", p.Namespace, p.Name, err)
		}
		if ok {
			matched = append(matched, p)
		}
	}
	if len(matched) > 0 {
		slices.SortFunc(matched, func(a, b *v1alpha1.ArmorPolicy) int {
			if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
				return c
			}
			return cmp.Compare(a.Name, b.Name)
		})
		p := matched[0]
		return Choice{
			Policy: compile.FromArmorPolicy(p), Generation: p.Generation, Status: p.Status,
			Reason: ReasonNamespaced, Conflicts: matched[1:],
		}, nil
	}

	nsLabels := labels.Set(ns.Labels)
	var best *v1alpha1.ClusterArmorPolicy
	for _, p := range s.ClusterArmorPolicies() {
		okNS, err := selects(&p.Spec.NamespaceSelector, nsLabels)
		if err != nil {
			return Choice{}, fmt.Errorf("ClusterArmorPolicy %s: spec.namespaceSelector: %w", p.Name, err)
		}
		okPod, err := selects(&p.Spec.Target.Selector, podLabels)
		if err != nil {
			return Choice{}, fmt.Errorf("ClusterArmorPolicy %s: spec.target.selector: %w", p.Name, err)
		}
		if okNS && okPod && (best == nil || p.Spec.Priority > best.Spec.Priority ||
			(p.Spec.Priority == best.Spec.Priority && p.Name < best.Name)) {
			best = p
		}
	}
	reason := ReasonCluster
	if best == nil {
		var ok bool
		if defaultPolicy != "" {
			best, ok = s.ClusterArmorPolicy(defaultPolicy)
		}
		if !ok {
			return Choice{}, ErrNoPolicy{Default: defaultPolicy}
		}
		reason = ReasonDefault
	}
	return Choice{
		Policy: compile.FromClusterArmorPolicy(best), Generation: best.Generation, Status: best.Status,
		Reason: reason,
	}, nil
}

func selects(sel *metav1.LabelSelector, set labels.Set) (bool, error) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, err
	}
	return s.Matches(set), nil
}
