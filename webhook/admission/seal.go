package admission

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// AnnotationSeal records a pod's confinement as podarmor's mutating webhook left it: the
// profile label, and the seccomp and AppArmor profiles of the pod and of every container.
// The validating webhook's matchCondition (webhook/registration) recomputes the same
// record from the pod the API server is about to store; when they agree, nothing changed
// the confinement after podarmor, and the API server does not call the validating
// webhook at all. When anything differs (another webhook or admission policy changed a
// profile, added a container, removed the label or the seal), the webhook is called and
// checks the pod in full. The seal is a shortcut around a second webhook call, never a
// way in: a pod without it, or with one that does not match, gets the full check.
const AnnotationSeal = "podarmor.io/seal"

// The seal's separators: between entries (the pod, then each container) and between the
// fields of an entry. No value that contains one is sealed.
const (
	sealEntrySep = ";"
	sealFieldSep = "|"
)

// Seal renders the seal of pod. The first entry is the pod:
//
//	<podarmor.io/profile label>|<seccomp type>|<seccomp localhost>|<AppArmor type>|<AppArmor localhost>
//
// from the pod's securityContext; then one entry per container, init containers first,
// then containers, then ephemeral containers:
//
//	<i, c or e>|<name>|<seccomp type>|<seccomp localhost>|<AppArmor type>|<AppArmor localhost>|<AppArmor annotation>
//
// from the container's securityContext, with the container's AppArmor annotation only
// when its appArmorProfile field is unset: from 1.30 the API server copies the field into
// the annotation after mutation, and the two must agree, so the field is what counts.
// Missing values are empty. ok is false when a value contains a separator; such a pod
// is not sealed and always gets the full check.
//
// SealExpression in webhook/registration is the same function in CEL; a test there keeps
// the two in step.
func Seal(pod *corev1.Pod) (seal string, ok bool) {
	var entries []string
	fields := func(f ...string) bool {
		for _, s := range f {
			if strings.Contains(s, sealEntrySep) || strings.Contains(s, sealFieldSep) {
				return false
			}
		}
		entries = append(entries, strings.Join(f, sealFieldSep))
		return true
	}
	var psc *corev1.PodSecurityContext
	if pod.Spec.SecurityContext != nil {
		psc = pod.Spec.SecurityContext
	} else {
		psc = &corev1.PodSecurityContext{}
	}
	st, sl := seccompFields(psc.SeccompProfile)
	at, al := appArmorFields(psc.AppArmorProfile)
	if !fields(pod.Labels[v1alpha1.LabelProfile], st, sl, at, al) {
		return "", false
	}
	for _, c := range containers(pod, false) {
		sc := *c.sc
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		st, sl := seccompFields(sc.SeccompProfile)
		at, al := appArmorFields(sc.AppArmorProfile)
		annotation := ""
		if sc.AppArmorProfile == nil {
			annotation = pod.Annotations[AppArmorAnnotationPrefix+c.name]
		}
		if !fields(sealKind[c.kind], c.name, st, sl, at, al, annotation) {
			return "", false
		}
	}
	return strings.Join(entries, sealEntrySep), true
}

// sealKind is the letter of a container kind in the seal.
var sealKind = map[ContainerKind]string{Init: "i", Regular: "c", Ephemeral: "e"}

func seccompFields(p *corev1.SeccompProfile) (typ, localhost string) {
	if p == nil {
		return "", ""
	}
	if p.LocalhostProfile != nil {
		localhost = *p.LocalhostProfile
	}
	return string(p.Type), localhost
}

func appArmorFields(p *corev1.AppArmorProfile) (typ, localhost string) {
	if p == nil {
		return "", ""
	}
	if p.LocalhostProfile != nil {
		localhost = *p.LocalhostProfile
	}
	return string(p.Type), localhost
}

// seal writes the pod's seal, or removes a seal the pod cannot carry (or that a client
// wrote itself), so that only a pod as podarmor confined it skips the full check.
// The seal grows with the containers (a pod of 2,000 containers with 63-byte names has
// a seal of 200 KiB), and is only a shortcut: a pod whose annotations it would push over
// the API server's limit goes without, and gets the full check.
func seal(pod *corev1.Pod) {
	if s, ok := Seal(pod); ok {
		setAnnotation(pod, AnnotationSeal, s)
		if apivalidation.ValidateAnnotationsSize(pod.Annotations) == nil {
			return
		}
	}
	unseal(pod)
}

func unseal(pod *corev1.Pod) {
	delete(pod.Annotations, AnnotationSeal)
}
