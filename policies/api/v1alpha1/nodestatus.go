package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Bounds of an ArmorNodeStatus: an object must stay far below etcd's 1.5 MiB limit
// whatever a node has to say, so every list an enforcer fills from what it finds is
// capped, and what is left out is counted instead.
const (
	// MaxUnenforcedRules is how many rules not enforced on a node one policy entry lists;
	// UnenforcedRulesOmitted counts the rest.
	MaxUnenforcedRules = 32
	// MaxUnattachedHooks is how many BPF LSM hooks that could not be attached a node
	// lists.
	MaxUnattachedHooks = 64
	// MaxAppArmorFeatures is how many AppArmor feature names a node lists.
	MaxAppArmorFeatures = 64
	// MaxReasonLength is the longest reason or message in an ArmorNodeStatus.
	MaxReasonLength = 1024
)

// LoadState is what became of a policy in one enforcer on one node.
// +kubebuilder:validation:Enum=Loaded;Failed;Unsupported
type LoadState string

const (
	// LoadLoaded: the enforcer enforces the policy's current generation on the node.
	LoadLoaded LoadState = "Loaded"
	// LoadFailed: the enforcer tried and failed (the reason says why); what it enforced
	// before, if anything, may still be in place.
	LoadFailed LoadState = "Failed"
	// LoadUnsupported: the node lacks the enforcer (no BPF LSM, AppArmor or seccomp in
	// its kernel), so it enforces nothing of the policy there.
	LoadUnsupported LoadState = "Unsupported"
)

// PolicyKind names the kind of a policy an enforcer reports on.
// +kubebuilder:validation:Enum=ArmorPolicy;ClusterArmorPolicy
type PolicyKind string

// The policy kinds.
const (
	KindArmorPolicy        PolicyKind = "ArmorPolicy"
	KindClusterArmorPolicy PolicyKind = "ClusterArmorPolicy"
)

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ans,categories=podarmor
// +kubebuilder:printcolumn:name="Loaded",type=integer,JSONPath=`.status.summary.loaded`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.summary.failed`
// +kubebuilder:printcolumn:name="BPF",type=boolean,JSONPath=`.status.features.bpfLSM`
// +kubebuilder:printcolumn:name="AppArmor",type=boolean,JSONPath=`.status.features.appArmor`
// +kubebuilder:printcolumn:name="Seccomp",type=boolean,JSONPath=`.status.features.seccomp`,priority=1
// +kubebuilder:printcolumn:name="Kernel",type=string,JSONPath=`.status.features.kernelRelease`,priority=1
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.enforcer.version`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ArmorNodeStatus is one node's report of what its podarmor enforcer can do and what it
// made of each policy. There is one per node, named after the node, written only by
// that node's enforcer and owned by the Node (deleted with it). The webhook's leader
// aggregates them into each policy's status.
//
// The report is the object's status, but the kind has no status subresource: the
// enforcer is its only writer, and one create or update carries the whole report.
type ArmorNodeStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Status is the node's report.
	// +optional
	Status NodeReport `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ArmorNodeStatusList is a list of ArmorNodeStatus.
type ArmorNodeStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ArmorNodeStatus `json:"items"`
}

// NodeReport is what an enforcer reports about its node.
type NodeReport struct {
	// Enforcer identifies the enforcer process that wrote the report.
	// +optional
	Enforcer EnforcerInfo `json:"enforcer,omitempty"`

	// Features are the node's kernel features podarmor relies on.
	// +optional
	Features NodeFeatures `json:"features,omitempty"`

	// Policies has one entry per policy the enforcer knows, sorted by kind, namespace
	// and name.
	// +listType=atomic
	// +optional
	Policies []NodePolicyStatus `json:"policies,omitempty"`

	// Summary counts the policies by outcome, for `kubectl get armornodestatuses`.
	// The enforcer's writer (enforcer/nodestatus) computes it from Policies.
	// +optional
	Summary NodeSummary `json:"summary,omitempty"`
}

// EnforcerInfo identifies an enforcer process.
type EnforcerInfo struct {
	// Version is the enforcer's version.
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Version string `json:"version,omitempty"`
	// StartTime is when the enforcer process started.
	// +optional
	StartTime metav1.Time `json:"startTime,omitempty"`
}

// NodeFeatures are the kernel features of a node that podarmor's enforcers need.
type NodeFeatures struct {
	// KernelRelease is the running kernel's release (uname -r).
	// +kubebuilder:validation:MaxLength=256
	// +optional
	KernelRelease string `json:"kernelRelease,omitempty"`

	// BPFLSM is true when BPF LSM is active (bpf is in /sys/kernel/security/lsm) and
	// the enforcer loaded its programs.
	BPFLSM bool `json:"bpfLSM"`
	// UnattachedHooks are the BPF LSM hooks whose programs could not be attached on
	// this kernel; rules that need them are not enforced by BPF here. At most
	// MaxUnattachedHooks (64).
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	UnattachedHooks []UnattachedHook `json:"unattachedHooks,omitempty"`

	// AppArmor is true when AppArmor is active and the enforcer can load profiles.
	AppArmor bool `json:"appArmor"`
	// AppArmorABI is the policy ABI the enforcer's profiles target and the kernel
	// accepts (e.g. "4.0"), empty without AppArmor.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	AppArmorABI string `json:"appArmorABI,omitempty"`
	// AppArmorFeatures summarises the kernel's AppArmor features (the entries of
	// /sys/kernel/security/apparmor/features, e.g. "network", "mount", "ptrace"). At
	// most MaxAppArmorFeatures (64).
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +listType=atomic
	// +optional
	AppArmorFeatures []string `json:"appArmorFeatures,omitempty"`

	// Seccomp is true when the kernel supports seccomp filters.
	Seccomp bool `json:"seccomp"`
}

// UnattachedHook is a BPF LSM hook that could not be attached.
type UnattachedHook struct {
	// Hook is the LSM hook, e.g. "file_open".
	// +kubebuilder:validation:MaxLength=64
	Hook string `json:"hook"`
	// Reason says why.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Reason string `json:"reason,omitempty"`
}

// NodePolicyStatus is what one node made of one policy.
type NodePolicyStatus struct {
	// Kind is the policy's kind.
	Kind PolicyKind `json:"kind"`
	// Namespace is the ArmorPolicy's namespace; empty for a ClusterArmorPolicy.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Name is the policy's name.
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// UID is the policy's uid, so that a policy deleted and created again under the
	// same name is not mistaken for the old one.
	// +optional
	UID types.UID `json:"uid,omitempty"`
	// Generation is the policy generation the enforcer compiled.
	Generation int64 `json:"generation"`
	// ProfileID is the policy's profile id.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	ProfileID string `json:"profileID,omitempty"`

	// Enforcers has the result of each enforcer the policy names.
	// +kubebuilder:validation:MaxItems=3
	// +listType=map
	// +listMapKey=enforcer
	// +optional
	Enforcers []EnforcerResult `json:"enforcers,omitempty"`

	// UnenforcedRules are rules of the policy that this node does not enforce with some
	// enforcer because the kernel lacks a feature, at most MaxUnenforcedRules (32).
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	UnenforcedRules []UnenforcedRule `json:"unenforcedRules,omitempty"`
	// UnenforcedRulesOmitted counts the unenforced rules left out of UnenforcedRules.
	// +optional
	UnenforcedRulesOmitted int32 `json:"unenforcedRulesOmitted,omitempty"`
}

// EnforcerResult is what one enforcer made of a policy on a node.
type EnforcerResult struct {
	// Enforcer is the enforcer.
	Enforcer Enforcer `json:"enforcer"`
	// State is Loaded, Failed or Unsupported.
	State LoadState `json:"state"`
	// Reason says why the state is Failed or Unsupported.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Reason string `json:"reason,omitempty"`
}

// UnenforcedRule is a rule a node does not enforce with one enforcer, and the kernel
// feature it lacks.
type UnenforcedRule struct {
	// Rule is the rule's id: "builtin/<name>", "custom/<name>" or
	// "runtime-default/<name>".
	// +kubebuilder:validation:MaxLength=128
	Rule string `json:"rule"`
	// Enforcer is the enforcer that leaves the rule out.
	// +optional
	Enforcer Enforcer `json:"enforcer,omitempty"`
	// MissingFeature names what the kernel lacks, e.g. "BPF LSM hook path_chmod".
	// +kubebuilder:validation:MaxLength=256
	MissingFeature string `json:"missingFeature"`
}

// NodeSummary counts a node's policies by outcome.
type NodeSummary struct {
	// Policies is the number of policies reported.
	Policies int32 `json:"policies"`
	// Loaded counts the policies every enforcer of which is Loaded or Unsupported.
	Loaded int32 `json:"loaded"`
	// Failed counts the policies with at least one Failed enforcer.
	Failed int32 `json:"failed"`
}
