package compile

import (
	"fmt"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/profile"
)

// Policy is either kind of policy, reduced to what compiling needs.
type Policy struct {
	// Kind is "ArmorPolicy" or "ClusterArmorPolicy".
	Kind      string
	Namespace string
	Name      string
	Spec      v1alpha1.ArmorPolicySpec
}

// The kinds of Policy.
const (
	KindArmorPolicy        = "ArmorPolicy"
	KindClusterArmorPolicy = "ClusterArmorPolicy"
)

// FromArmorPolicy is the Policy of an ArmorPolicy.
func FromArmorPolicy(p *v1alpha1.ArmorPolicy) Policy {
	return Policy{Kind: KindArmorPolicy, Namespace: p.Namespace, Name: p.Name, Spec: p.Spec}
}

// FromClusterArmorPolicy is the Policy of a ClusterArmorPolicy.
func FromClusterArmorPolicy(p *v1alpha1.ClusterArmorPolicy) Policy {
	return Policy{Kind: KindClusterArmorPolicy, Name: p.Name, Spec: p.Spec.ArmorPolicySpec}
}

// ProfileID is the id of the policy's profile.
func (p Policy) ProfileID() string {
	if p.Kind == KindClusterArmorPolicy {
		return profile.ForClusterArmorPolicy(p.Name)
	}
	return profile.ForArmorPolicy(p.Namespace, p.Name)
}

// String names the policy for people: "ArmorPolicy shop/web".
func (p Policy) String() string {
	if p.Kind == KindClusterArmorPolicy {
		return fmt.Sprintf("%s %s", p.Kind, p.Name)
	}
	return fmt.Sprintf("%s %s/%s", p.Kind, p.Namespace, p.Name)
}
