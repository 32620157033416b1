package server

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// operation is one JSON patch operation (RFC 6902).
type operation struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitzero"`
}

// podPatch is the JSON patch from before to after for what admission.Apply edits in a
// typed pod: labels, annotations, and each container's seccomp and AppArmor profiles
// (with a whole securityContext where the container had none). Apply never adds or
// removes containers.
//
// kubewebhook's mutating webhook instead marshals the whole mutated pod and diffs it
// against the review's JSON. That costs more than the rest of the review put together,
// and it removes every field the webhook's k8s.io/api does not know: a newer API server's
// pod fields would silently disappear. Patching only the fields podarmor owns keeps them.
// TestPodPatch checks, for every case of the admission tests, that the patch applied by
// the API server's own JSON patch library gives exactly the mutated pod.
func podPatch(before, after *corev1.Pod) []operation {
	var ops []operation
	ops = mapPatch(ops, "/metadata/labels", before.Labels, after.Labels)
	ops = mapPatch(ops, "/metadata/annotations", before.Annotations, after.Annotations)
	lists := []struct {
		path          string
		before, after []*corev1.SecurityContext
	}{
		{"/spec/initContainers/", securityContexts(before.Spec.InitContainers), securityContexts(after.Spec.InitContainers)},
		{"/spec/containers/", securityContexts(before.Spec.Containers), securityContexts(after.Spec.Containers)},
		{"/spec/ephemeralContainers/", ephemeralSecurityContexts(before.Spec.EphemeralContainers), ephemeralSecurityContexts(after.Spec.EphemeralContainers)},
	}
	for _, l := range lists {
		for i, a := range l.after {
			b := l.before[i]
			path := l.path + strconv.Itoa(i) + "/securityContext"
			switch {
			case a == nil || equality.Semantic.DeepEqual(a, b):
			case b == nil:
				ops = append(ops, op("add", path, a))
			default:
				if !equality.Semantic.DeepEqual(a.SeccompProfile, b.SeccompProfile) {
					ops = append(ops, setOrRemove(path+"/seccompProfile", a.SeccompProfile, a.SeccompProfile == nil))
				}
				if !equality.Semantic.DeepEqual(a.AppArmorProfile, b.AppArmorProfile) {
					ops = append(ops, setOrRemove(path+"/appArmorProfile", a.AppArmorProfile, a.AppArmorProfile == nil))
				}
			}
		}
	}
	return ops
}

// mapPatch adds the operations that turn the string map at path from before into after,
// keys in order.
func mapPatch(ops []operation, path string, before, after map[string]string) []operation {
	switch {
	case maps.Equal(before, after):
		return ops
	case before == nil: // the member is absent from the pod's JSON
		return append(ops, op("add", path, after))
	}
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[k]; !ok {
			ops = append(ops, op("remove", path+"/"+pointerEscape.Replace(k), nil))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if v, ok := before[k]; !ok || v != after[k] {
			ops = append(ops, op("add", path+"/"+pointerEscape.Replace(k), after[k]))
		}
	}
	return ops
}

// setOrRemove sets the member at path (JSON patch "add" replaces an existing member) or
// removes it.
func setOrRemove(path string, value any, remove bool) operation {
	if remove {
		return op("remove", path, nil)
	}
	return op("add", path, value)
}

func op(o, path string, value any) operation { return operation{Op: o, Path: path, Value: value} }

// pointerEscape escapes a key for a JSON pointer (RFC 6901).
var pointerEscape = strings.NewReplacer("~", "~0", "/", "~1")

func securityContexts(cs []corev1.Container) []*corev1.SecurityContext {
	out := make([]*corev1.SecurityContext, len(cs))
	for i := range cs {
		out[i] = cs[i].SecurityContext
	}
	return out
}

func ephemeralSecurityContexts(cs []corev1.EphemeralContainer) []*corev1.SecurityContext {
	out := make([]*corev1.SecurityContext, len(cs))
	for i := range cs {
		out[i] = cs[i].SecurityContext
	}
	return out
}
