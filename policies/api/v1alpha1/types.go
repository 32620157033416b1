package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels that podarmor and its users put on Kubernetes objects.
const (
	// LabelEnable on a namespace opts its pods into podarmor when its value is "true".
	LabelEnable = "podarmor.io/enable"
	// LabelProfile on a pod names the profile id the node enforcer confines it with.
	LabelProfile = "podarmor.io/profile"

	// AnnotationOptOut on a pod asks to opt out of its policy, when the policy allows it.
	AnnotationOptOut = "podarmor.io/opt-out"
	// AnnotationPolicy on a pod names the policy and generation it was admitted under,
	// e.g. "ArmorPolicy shop/web@3".
	AnnotationPolicy = "podarmor.io/policy"
	// AnnotationDecisions on a pod records the webhook's per-container decisions that
	// differ from the policy's default, e.g. a container that kept its own profile.
	AnnotationDecisions = "podarmor.io/decisions"
)

// Enforcer is a kernel mechanism podarmor drives.
// +kubebuilder:validation:Enum=BPF;AppArmor;Seccomp
type Enforcer string

// The enforcers, in the order backends are listed everywhere.
const (
	EnforcerBPF      Enforcer = "BPF"
	EnforcerAppArmor Enforcer = "AppArmor"
	EnforcerSeccomp  Enforcer = "Seccomp"
)

// Enforcers lists every enforcer in canonical order.
var Enforcers = []Enforcer{EnforcerBPF, EnforcerAppArmor, EnforcerSeccomp}

// Mode chooses how much a policy confines. Every mode is allow-by-default except where
// its rules deny; a later allow-list mode will flip the default for the rule kinds it
// names, which is why the compiled rule set carries a default verdict of its own.
// +kubebuilder:validation:Enum=AlwaysAllow;RuntimeDefault;EnhanceProtect
type Mode string

const (
	// ModeAlwaysAllow labels and tracks the pods but confines nothing: a way to roll a
	// policy out in steps.
	ModeAlwaysAllow Mode = "AlwaysAllow"
	// ModeRuntimeDefault expresses the container runtime's default confinement for each
	// enforcer (the catalog's runtime-default rules).
	ModeRuntimeDefault Mode = "RuntimeDefault"
	// ModeEnhanceProtect is RuntimeDefault plus the chosen built-in and custom rules.
	ModeEnhanceProtect Mode = "EnhanceProtect"
)

// Action is what happens when a rule matches.
// +kubebuilder:validation:Enum=Enforce;Audit
type Action string

const (
	// ActionEnforce denies the operation (EPERM) and records it.
	ActionEnforce Action = "Enforce"
	// ActionAudit records and counts the operation but never blocks it.
	ActionAudit Action = "Audit"
)

// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=ap,categories=podarmor
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Enforcers",type=string,JSONPath=`.spec.enforcers`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Nodes-Ready",type=integer,JSONPath=`.status.readyNodes`
// +kubebuilder:printcolumn:name="Nodes",type=integer,JSONPath=`.status.totalNodes`
// +kubebuilder:printcolumn:name="Profile",type=string,JSONPath=`.status.profileID`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ArmorPolicy confines the pods of its namespace that its target selects.
type ArmorPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ArmorPolicySpec `json:"spec"`
	Status PolicyStatus    `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ArmorPolicyList is a list of ArmorPolicy.
type ArmorPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ArmorPolicy `json:"items"`
}

// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=cap,categories=podarmor
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Enforcers",type=string,JSONPath=`.spec.enforcers`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Nodes-Ready",type=integer,JSONPath=`.status.readyNodes`
// +kubebuilder:printcolumn:name="Nodes",type=integer,JSONPath=`.status.totalNodes`
// +kubebuilder:printcolumn:name="Profile",type=string,JSONPath=`.status.profileID`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ClusterArmorPolicy confines pods in every opted-in namespace its namespace selector
// matches, unless a namespaced ArmorPolicy selects them first.
type ClusterArmorPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterArmorPolicySpec `json:"spec"`
	Status PolicyStatus           `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ClusterArmorPolicyList is a list of ClusterArmorPolicy.
type ClusterArmorPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterArmorPolicy `json:"items"`
}

// ArmorPolicySpec is what a policy asks of the pods it targets.
// +kubebuilder:validation:XValidation:rule="self.mode == 'EnhanceProtect' || ((!has(self.builtinRules) || size(self.builtinRules) == 0) && !has(self.customRules))",message="builtinRules and customRules take effect only in mode EnhanceProtect"
// +kubebuilder:validation:XValidation:rule="!has(self.customRules) || !has(self.customRules.syscalls) || size(self.customRules.syscalls) == 0 || self.enforcers.exists(e, e == 'Seccomp')",message="customRules.syscalls needs the Seccomp enforcer"
type ArmorPolicySpec struct {
	// Target selects the pods, and optionally the containers within them, to confine.
	Target Target `json:"target"`

	// Enforcers are the kernel mechanisms that carry out the policy; any non-empty subset.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=3
	// +listType=set
	Enforcers []Enforcer `json:"enforcers"`

	// Mode chooses how much the policy confines.
	Mode Mode `json:"mode"`

	// Action is what a matching rule does unless the rule says otherwise.
	// +kubebuilder:default=Enforce
	// +optional
	Action Action `json:"action,omitempty"`

	// BuiltinRules name rules of the built-in catalog (see `podarmor rules`).
	// +kubebuilder:validation:MaxItems=256
	// +listType=map
	// +listMapKey=name
	// +optional
	BuiltinRules []BuiltinRule `json:"builtinRules,omitempty"`

	// CustomRules are rules written out in the policy itself.
	// +optional
	CustomRules *CustomRules `json:"customRules,omitempty"`

	// Admission says how the admission webhook applies the policy to new pods.
	// +optional
	Admission AdmissionOptions `json:"admission,omitempty"`
}

// NotReadyAction is what the webhook does with a pod whose policy is not loaded on
// every enforcer node yet.
// +kubebuilder:validation:Enum=Reject;AdmitBPFOnly
type NotReadyAction string

const (
	// NotReadyReject refuses the pod with a message saying which policy is not ready.
	NotReadyReject NotReadyAction = "Reject"
	// NotReadyAdmitBPFOnly admits the pod with the profile label only, so that the BPF
	// enforcer confines it while the AppArmor and seccomp profiles are not injected
	// (kubelet refuses to start a container whose profile is missing on its node).
	NotReadyAdmitBPFOnly NotReadyAction = "AdmitBPFOnly"
)

// AdmissionOptions are the per-policy choices of the admission webhook.
type AdmissionOptions struct {
	// AllowOptOut lets a pod opt out of the policy with the annotation
	// podarmor.io/opt-out: "true". The webhook records every opt-out on the pod and in
	// its metrics. Off by default: pods cannot opt out.
	// +optional
	AllowOptOut bool `json:"allowOptOut,omitempty"`
	// OverrideProfiles replaces AppArmor and seccomp profiles that containers set
	// themselves. Off by default: such a container keeps its own profile, and the
	// webhook records that on the pod and in its metrics.
	// +optional
	OverrideProfiles bool `json:"overrideProfiles,omitempty"`
	// WhenNotReady is what happens to a new pod while the policy's profiles are not yet
	// loaded on every enforcer node.
	// +kubebuilder:default=Reject
	// +optional
	WhenNotReady NotReadyAction `json:"whenNotReady,omitempty"`
}

// ClusterArmorPolicySpec is an ArmorPolicySpec for every namespace a selector matches.
type ClusterArmorPolicySpec struct {
	ArmorPolicySpec `json:",inline"`

	// NamespaceSelector selects the opted-in namespaces the policy applies in; an empty
	// selector ({}) selects every opted-in namespace.
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector"`

	// Priority orders cluster policies that match the same pod: the highest wins, ties go
	// to the name that sorts first.
	// +kubebuilder:validation:Minimum=-1000
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=0
	// +optional
	Priority int32 `json:"priority,omitempty"`
}

// Target selects pods and containers. The webhook evaluates the selector for every pod
// of the namespace, so its size is bounded (MaxSelectorLabels, MaxSelectorExpressions,
// MaxSelectorValues) like every other list of a policy.
type Target struct {
	// Selector selects pods by their labels; an empty selector ({}) selects every pod in
	// the policy's scope.
	Selector metav1.LabelSelector `json:"selector"`

	// Containers limits the policy to containers with these names. Empty means every
	// container: regular, init and ephemeral.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +listType=set
	// +optional
	Containers []string `json:"containers,omitempty"`
}

// The size limits of a label selector (Target.Selector, and a ClusterArmorPolicy's
// namespaceSelector). policies/validation enforces them (the policy webhook and the CLI);
// the CRD's schema does not yet.
const (
	MaxSelectorLabels      = 64
	MaxSelectorExpressions = 64
	MaxSelectorValues      = 256
)

// BuiltinRule turns on one rule of the built-in catalog.
type BuiltinRule struct {
	// Name is the rule's name in the catalog.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// Action overrides the policy's action for this rule.
	// +optional
	Action Action `json:"action,omitempty"`
}

// PolicyStatus is what podarmor observed of a policy.
type PolicyStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ProfileID names the compiled profile: the pod label podarmor.io/profile, the
	// AppArmor profile podarmor-<id> and the seccomp file podarmor/<id>.json.
	// +optional
	ProfileID string `json:"profileID,omitempty"`

	// Conditions: Ready (profiles loaded on every enforcer node) and others, with reasons.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// ReadyNodes counts the nodes where every enforcer of the policy has loaded it.
	// +optional
	ReadyNodes int32 `json:"readyNodes,omitempty"`
	// FailedNodes counts the nodes where an enforcer failed to load it.
	// +optional
	FailedNodes int32 `json:"failedNodes,omitempty"`
	// TotalNodes counts the nodes running the podarmor enforcer.
	// +optional
	TotalNodes int32 `json:"totalNodes,omitempty"`
}
