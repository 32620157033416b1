package admission

import (
	"fmt"
	"reflect"

	corev1 "k8s.io/api/core/v1"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// Apply edits the pod so that it carries the plan, and seals it (AnnotationSeal). It is
// idempotent: applying a plan to a pod that carries it changes nothing, which makes
// webhook reinvocation safe.
func Apply(pod *corev1.Pod, plan *Plan, appArmorField, ephemeralOnly bool) error {
	if plan.Reject != "" {
		return nil // the webhooks refuse the pod; leave it as it came
	}
	if len(plan.Decisions) > 0 && !ephemeralOnly {
		d, err := decisionsJSON(plan.Decisions)
		if err != nil {
			return fmt.Errorf("record decisions: %w", err)
		}
		setAnnotation(pod, v1alpha1.AnnotationDecisions, d)
	}
	if plan.OptedOut {
		if !ephemeralOnly {
			unseal(pod)
		}
		return nil
	}
	if !ephemeralOnly {
		if pod.Labels == nil {
			pod.Labels = map[string]string{}
		}
		pod.Labels[v1alpha1.LabelProfile] = plan.ProfileID
		setAnnotation(pod, v1alpha1.AnnotationPolicy, fmt.Sprintf("%s@%d", plan.Choice.Policy, plan.Choice.Generation))
	}
	byName := map[string]*ContainerPlan{}
	for i := range plan.Containers {
		byName[plan.Containers[i].Name] = &plan.Containers[i]
	}
	for _, c := range containers(pod, ephemeralOnly) {
		cp, ok := byName[c.name]
		if !ok {
			continue
		}
		if cp.AppArmor != nil {
			annotation := AppArmorAnnotationPrefix + c.name
			if appArmorField {
				securityContext(c).AppArmorProfile = cp.AppArmor.DeepCopy()
				// The API server refuses a field and an annotation that disagree.
				if _, ok := pod.Annotations[annotation]; ok {
					setAnnotation(pod, annotation, "localhost/"+*cp.AppArmor.LocalhostProfile)
				}
			} else {
				setAnnotation(pod, annotation, "localhost/"+*cp.AppArmor.LocalhostProfile)
			}
		}
		if cp.Seccomp != nil {
			securityContext(c).SeccompProfile = cp.Seccomp.DeepCopy()
		}
	}
	if !ephemeralOnly { // annotations cannot change through the subresource
		seal(pod)
	}
	return nil
}

// Check reports how the pod falls short of the plan: a reason to refuse it, or nil.
func Check(pod *corev1.Pod, plan *Plan, appArmorField, ephemeralOnly bool) error {
	if plan.Reject != "" {
		return fmt.Errorf("%s", plan.Reject)
	}
	want := pod.DeepCopy()
	if err := Apply(want, plan, appArmorField, ephemeralOnly); err != nil {
		return err
	}
	if plan.OptedOut {
		return nil
	}
	if pod.Labels[v1alpha1.LabelProfile] != want.Labels[v1alpha1.LabelProfile] {
		return fmt.Errorf("label %s is %q, want %q: the pod was not mutated by podarmor (or its label was changed afterwards)",
			v1alpha1.LabelProfile, pod.Labels[v1alpha1.LabelProfile], want.Labels[v1alpha1.LabelProfile])
	}
	got, exp := containers(pod, ephemeralOnly), containers(want, ephemeralOnly)
	for i := range got {
		if !reflect.DeepEqual(*got[i].sc, *exp[i].sc) {
			return fmt.Errorf("%s %s does not carry the AppArmor and seccomp profiles of %s", got[i].kind, got[i].name, plan.Choice.Policy)
		}
		a := AppArmorAnnotationPrefix + got[i].name
		if pod.Annotations[a] != want.Annotations[a] {
			return fmt.Errorf("%s %s: annotation %s is %q, want %q", got[i].kind, got[i].name, a, pod.Annotations[a], want.Annotations[a])
		}
	}
	return nil
}

func securityContext(c container) *corev1.SecurityContext {
	if *c.sc == nil {
		*c.sc = &corev1.SecurityContext{}
	}
	return *c.sc
}

func setAnnotation(pod *corev1.Pod, k, v string) {
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[k] = v
}
