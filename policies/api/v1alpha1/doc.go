// Package v1alpha1 holds the podarmor.io/v1alpha1 API: ArmorPolicy (namespaced) and
// ClusterArmorPolicy (cluster-scoped), which choose enforcers, a mode, built-in rules and
// custom rules for the pods they select.
//
// The OpenAPI schema and CEL rules in the CRDs (deploy/crds) are generated from the markers
// in this package; checks that need code (pattern syntax, CIDRs, catalog names, what each
// enforcer can express) live in policies/validation.
//
// +kubebuilder:object:generate=true
// +groupName=podarmor.io
package v1alpha1
