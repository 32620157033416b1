// Package admission decides what a pod of an opted-in namespace must carry: the
// podarmor.io/profile label, and per container the AppArmor and seccomp profiles of the
// policy that applies to it. The mutating webhook applies that plan to the pod, or
// refuses the pod with the plan's reason, and seals what it did (Seal). The validating
// webhook, which runs after every mutating webhook, refuses a pod that does not carry the
// plan, so that no pod enters an opted-in namespace unprotected, whatever other webhooks
// did to it; the API server skips it for a pod whose confinement still matches its seal.
package admission

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile/apparmor"
	"github.com/podarmor/podarmor/policies/compile/seccomp"
	"github.com/podarmor/podarmor/webhook/policy"
)

// AppArmorAnnotationPrefix is the per-container AppArmor annotation kubelets before 1.30
// read (and later ones still honour): <prefix><container>: localhost/<profile>.
const AppArmorAnnotationPrefix = "container.apparmor.security.beta.kubernetes.io/"

// Outcome names what happened to a pod or container, for metrics and the decisions
// annotation. The set is fixed, so it is safe as a metric label.
type Outcome string

// The outcomes.
const (
	OutcomeConfined          Outcome = "confined"
	OutcomeOptedOut          Outcome = "opted-out"
	OutcomeOptOutRefused     Outcome = "opt-out-refused"
	OutcomeKeptOwnAppArmor   Outcome = "kept-own-apparmor"
	OutcomeKeptOwnSeccomp    Outcome = "kept-own-seccomp"
	OutcomeOverrodeAppArmor  Outcome = "overrode-apparmor"
	OutcomeOverrodeSeccomp   Outcome = "overrode-seccomp"
	OutcomeBPFOnly           Outcome = "bpf-only-not-ready"
	OutcomeRejectedNotReady  Outcome = "rejected-not-ready"
	OutcomeRejectedNoPolicy  Outcome = "rejected-no-policy"
	OutcomeRejectedMismatch  Outcome = "rejected-profile-mismatch"
	OutcomeAppArmorNotStored Outcome = "apparmor-annotation-not-settable"
	OutcomeConflict          Outcome = "policy-conflict"
	// OutcomeRejectedUnconfined: the pod lost what podarmor gave it before it was
	// stored (another webhook or admission policy changed it), and was refused.
	OutcomeRejectedUnconfined Outcome = "rejected-unconfined"
)

// Outcomes lists every Outcome, for metrics that must know their label values.
var Outcomes = []Outcome{
	OutcomeConfined, OutcomeOptedOut, OutcomeOptOutRefused, OutcomeKeptOwnAppArmor,
	OutcomeKeptOwnSeccomp, OutcomeOverrodeAppArmor, OutcomeOverrodeSeccomp, OutcomeBPFOnly,
	OutcomeRejectedNotReady, OutcomeRejectedNoPolicy, OutcomeRejectedMismatch,
	OutcomeAppArmorNotStored, OutcomeConflict, OutcomeRejectedUnconfined,
}

// Plan is what a pod must carry.
type Plan struct {
	// Choice is the policy that applies.
	Choice policy.Choice
	// ProfileID is the value of the podarmor.io/profile label.
	ProfileID string
	// Reject, when set, says why the pod must be refused.
	Reject string
	// OptedOut is set when the pod opted out and the policy allows it: it is left alone
	// but for the record of the opt-out.
	OptedOut bool
	// Outcomes are what happened, for metrics (a pod may have several).
	Outcomes []Outcome
	// Containers are the containers the policy targets, with their profiles.
	Containers []ContainerPlan
	// Warnings go back to the client that created the pod.
	Warnings []string
	// Decisions are per-container decisions worth recording on the pod.
	Decisions map[string][]Outcome
}

// ContainerKind says which list of the pod spec a container is in.
type ContainerKind string

// The container kinds.
const (
	Regular   ContainerKind = "container"
	Init      ContainerKind = "initContainer"
	Ephemeral ContainerKind = "ephemeralContainer"
)

// ContainerPlan is what one container must carry.
type ContainerPlan struct {
	Name string
	Kind ContainerKind
	// AppArmor is the profile to set (nil: leave as is).
	AppArmor *corev1.AppArmorProfile
	// Seccomp is the profile to set (nil: leave as is).
	Seccomp *corev1.SeccompProfile
}

// Request is one pod to plan for.
type Request struct {
	Pod       *corev1.Pod
	Namespace *corev1.Namespace
	// EphemeralOnly is set for the pods/ephemeralcontainers subresource, where only
	// ephemeral containers may change.
	EphemeralOnly bool
	// AppArmorField says the API server has the securityContext.appArmorProfile field
	// (Kubernetes 1.30 and later); before, only the annotation exists.
	AppArmorField bool
}

// Planner plans pods against the policies of a Store.
type Planner struct {
	Store policy.Store
	// DefaultPolicy names the ClusterArmorPolicy for pods no other policy selects.
	DefaultPolicy string
}

// Plan decides what the pod of r must carry. An error means the plan could not be made
// (a broken selector); the pod must then be refused, since it cannot be confined.
func (p *Planner) Plan(r Request) (*Plan, error) {
	pod := r.Pod
	choice, err := policy.Select(p.Store, pod, r.Namespace, p.DefaultPolicy)
	if noPolicy, ok := err.(policy.ErrNoPolicy); ok {
		return &Plan{Reject: noPolicy.Error(), Outcomes: []Outcome{OutcomeRejectedNoPolicy}}, nil
	}
	if err != nil {
		return nil, err
	}
	spec := choice.Policy.Spec
	plan := &Plan{Choice: choice, ProfileID: choice.Policy.ProfileID(), Decisions: map[string][]Outcome{}}
	if len(choice.Conflicts) > 0 {
		var names []string
		for _, c := range choice.Conflicts {
			names = append(names, c.Name)
		}
		plan.Outcomes = append(plan.Outcomes, OutcomeConflict)
		plan.Warnings = append(plan.Warnings, fmt.Sprintf("ArmorPolicies %s also select this pod; the oldest, %s, applies",
			strings.Join(names, ", "), choice.Policy.Name))
	}

	if pod.Annotations[v1alpha1.AnnotationOptOut] == "true" {
		if spec.Admission.AllowOptOut {
			plan.OptedOut = true
			plan.Outcomes = append(plan.Outcomes, OutcomeOptedOut)
			plan.Decisions["pod"] = []Outcome{OutcomeOptedOut}
			return plan, nil
		}
		plan.Outcomes = append(plan.Outcomes, OutcomeOptOutRefused)
		plan.Decisions["pod"] = []Outcome{OutcomeOptOutRefused}
		plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s does not allow opting out (spec.admission.allowOptOut); the pod is confined", choice.Policy))
	}

	if r.EphemeralOnly && pod.Labels[v1alpha1.LabelProfile] != plan.ProfileID {
		plan.Reject = fmt.Sprintf("the pod carries profile %q but now falls under %s (profile %q); recreate the pod to debug it under its policy",
			pod.Labels[v1alpha1.LabelProfile], choice.Policy, plan.ProfileID)
		plan.Outcomes = append(plan.Outcomes, OutcomeRejectedMismatch)
		return plan, nil
	}

	wantAppArmor := slices.Contains(spec.Enforcers, v1alpha1.EnforcerAppArmor) && spec.Mode != v1alpha1.ModeAlwaysAllow
	var wantSeccomp *corev1.SeccompProfile
	if slices.Contains(spec.Enforcers, v1alpha1.EnforcerSeccomp) {
		switch spec.Mode {
		case v1alpha1.ModeEnhanceProtect:
			path := seccomp.FileName(plan.ProfileID)
			wantSeccomp = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: &path}
		case v1alpha1.ModeRuntimeDefault:
			wantSeccomp = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
		}
	}

	// Profiles that live on nodes (AppArmor, seccomp Localhost) must be loaded before a
	// pod uses them, or kubelet fails the container.
	needsNode := wantAppArmor || (wantSeccomp != nil && wantSeccomp.Type == corev1.SeccompProfileTypeLocalhost)
	if needsNode && !ready(choice.Status, choice.Generation) {
		switch {
		case spec.Admission.WhenNotReady == v1alpha1.NotReadyAdmitBPFOnly && slices.Contains(spec.Enforcers, v1alpha1.EnforcerBPF):
			wantAppArmor = false
			if wantSeccomp != nil && wantSeccomp.Type == corev1.SeccompProfileTypeLocalhost {
				// The runtime's default seccomp profile needs no file: the floor.
				wantSeccomp = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
			}
			plan.Outcomes = append(plan.Outcomes, OutcomeBPFOnly)
			plan.Decisions["pod"] = append(plan.Decisions["pod"], OutcomeBPFOnly)
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s is not loaded on every node yet; admitted with BPF protection only (spec.admission.whenNotReady)", choice.Policy))
		default:
			plan.Reject = fmt.Sprintf("%s is not loaded on every node yet (%s); its AppArmor or seccomp profile could be missing where the pod lands. Retry when it is ready, or set spec.admission.whenNotReady: AdmitBPFOnly",
				choice.Policy, readyMessage(choice.Status, choice.Generation))
			plan.Outcomes = append(plan.Outcomes, OutcomeRejectedNotReady)
			return plan, nil
		}
	}

	override := spec.Admission.OverrideProfiles
	for _, c := range containers(pod, r.EphemeralOnly) {
		if len(spec.Target.Containers) > 0 && !slices.Contains(spec.Target.Containers, c.name) {
			continue
		}
		cp := ContainerPlan{Name: c.name, Kind: c.kind}
		if wantAppArmor {
			own := ownAppArmor(pod, c)
			switch {
			case own != "" && !override:
				plan.Decisions[c.name] = append(plan.Decisions[c.name], OutcomeKeptOwnAppArmor)
				plan.Outcomes = append(plan.Outcomes, OutcomeKeptOwnAppArmor)
			case !r.AppArmorField && c.kind == Ephemeral:
				// Annotations cannot change through the ephemeralcontainers subresource.
				plan.Outcomes = append(plan.Outcomes, OutcomeAppArmorNotStored)
				plan.Warnings = append(plan.Warnings, fmt.Sprintf("container %s: this API server has no appArmorProfile field and annotations cannot change here; the debug container runs without its AppArmor profile (BPF and seccomp still apply)", c.name))
			default:
				if own != "" {
					plan.Decisions[c.name] = append(plan.Decisions[c.name], OutcomeOverrodeAppArmor)
					plan.Outcomes = append(plan.Outcomes, OutcomeOverrodeAppArmor)
				}
				name := apparmor.ProfileName(plan.ProfileID)
				cp.AppArmor = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeLocalhost, LocalhostProfile: &name}
			}
		}
		if wantSeccomp != nil {
			own := ownSeccomp(pod, c, wantSeccomp)
			switch {
			case own && !override:
				plan.Decisions[c.name] = append(plan.Decisions[c.name], OutcomeKeptOwnSeccomp)
				plan.Outcomes = append(plan.Outcomes, OutcomeKeptOwnSeccomp)
			default:
				if own {
					plan.Decisions[c.name] = append(plan.Decisions[c.name], OutcomeOverrodeSeccomp)
					plan.Outcomes = append(plan.Outcomes, OutcomeOverrodeSeccomp)
				}
				cp.Seccomp = wantSeccomp.DeepCopy()
			}
		}
		plan.Containers = append(plan.Containers, cp)
	}
	if !slices.Contains(plan.Outcomes, OutcomeBPFOnly) {
		plan.Outcomes = append(plan.Outcomes, OutcomeConfined)
	}
	return plan, nil
}

// ready reports whether the status says the policy's node profiles are loaded on every
// enforcer node at generation: a Ready condition about an older spec says nothing about
// the profiles of the current one.
func ready(s v1alpha1.PolicyStatus, generation int64) bool {
	c := metaCondition(s.Conditions, "Ready")
	return c != nil && c.Status == metav1.ConditionTrue && s.ObservedGeneration == generation
}

func readyMessage(s v1alpha1.PolicyStatus, generation int64) string {
	c := metaCondition(s.Conditions, "Ready")
	if c == nil {
		return "no Ready condition"
	}
	if s.ObservedGeneration != generation {
		return fmt.Sprintf("generation %d is not loaded yet; the status describes generation %d", generation, s.ObservedGeneration)
	}
	return fmt.Sprintf("Ready=%s, %s: %s", c.Status, c.Reason, c.Message)
}

func metaCondition(cs []metav1.Condition, t string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return nil
}

// container is a view of one container of any kind.
type container struct {
	name string
	kind ContainerKind
	sc   **corev1.SecurityContext
}

func containers(pod *corev1.Pod, ephemeralOnly bool) []container {
	var out []container
	if !ephemeralOnly {
		for i := range pod.Spec.InitContainers {
			c := &pod.Spec.InitContainers[i]
			out = append(out, container{c.Name, Init, &c.SecurityContext})
		}
		for i := range pod.Spec.Containers {
			c := &pod.Spec.Containers[i]
			out = append(out, container{c.Name, Regular, &c.SecurityContext})
		}
	}
	for i := range pod.Spec.EphemeralContainers {
		c := &pod.Spec.EphemeralContainers[i]
		out = append(out, container{c.Name, Ephemeral, &c.SecurityContext})
	}
	return out
}

// isOurs tells podarmor's own profiles, set by an earlier invocation, from the user's.
func isOursAppArmor(name string) bool { return strings.HasPrefix(name, "podarmor-") }

// ownAppArmor returns the AppArmor profile the user set for the container, "" if none
// (or podarmor's own).
func ownAppArmor(pod *corev1.Pod, c container) string {
	if sc := *c.sc; sc != nil && sc.AppArmorProfile != nil {
		if p := sc.AppArmorProfile; !(p.Type == corev1.AppArmorProfileTypeLocalhost && p.LocalhostProfile != nil && isOursAppArmor(*p.LocalhostProfile)) {
			return string(p.Type)
		}
	} else if a, ok := pod.Annotations[AppArmorAnnotationPrefix+c.name]; ok {
		if !isOursAppArmor(strings.TrimPrefix(a, "localhost/")) {
			return a
		}
	} else if psc := pod.Spec.SecurityContext; psc != nil && psc.AppArmorProfile != nil {
		return string(psc.AppArmorProfile.Type)
	}
	return ""
}

// ownSeccomp reports whether the user set a seccomp profile for the container (directly
// or for the whole pod) other than podarmor's own.
func ownSeccomp(pod *corev1.Pod, c container, want *corev1.SeccompProfile) bool {
	p := (*corev1.SeccompProfile)(nil)
	if sc := *c.sc; sc != nil && sc.SeccompProfile != nil {
		p = sc.SeccompProfile
	} else if psc := pod.Spec.SecurityContext; psc != nil {
		p = psc.SeccompProfile
	}
	if p == nil {
		return false
	}
	if p.Type == corev1.SeccompProfileTypeLocalhost && p.LocalhostProfile != nil &&
		strings.HasPrefix(*p.LocalhostProfile, seccomp.ProfileDir+"/") {
		return false
	}
	// The runtime's default is what the policy asks for in mode RuntimeDefault.
	return !(p.Type == corev1.SeccompProfileTypeRuntimeDefault && want.Type == corev1.SeccompProfileTypeRuntimeDefault)
}

// decisionsJSON renders the decisions annotation: container name -> outcomes.
func decisionsJSON(d map[string][]Outcome) (string, error) {
	b, err := json.Marshal(d) // map keys are sorted: deterministic
	return string(b), err
}
