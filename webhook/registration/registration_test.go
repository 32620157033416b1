package registration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apiserver/pkg/admission"
	celplugin "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/utils/ptr"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	podadmission "github.com/podarmor/podarmor/webhook/admission"
	"github.com/podarmor/podarmor/webhook/policy"
)

// notSealed compiles the validating pod webhook's matchCondition the way an API server
// of the given CEL compatibility version does for a new configuration, and returns the
// function that says whether the API server calls the webhook for a pod.
func notSealed(t *testing.T, compatibility *version.Version) func(t *testing.T, p *corev1.Pod, subresource string) bool {
	t.Helper()
	compiler, err := celplugin.NewCompositedCompiler(environment.MustBaseEnvSet(compatibility))
	if err != nil {
		t.Fatal(err)
	}
	fail := admissionregistrationv1.Fail
	evaluator := compiler.CompileCondition(
		[]celplugin.ExpressionAccessor{&matchconditions.MatchCondition{Name: NotSealedCondition, Expression: NotSealedExpression}},
		celplugin.OptionalVariableDeclarations{HasAuthorizer: true},
		environment.NewExpressions,
	)
	if errs := evaluator.CompilationErrors(); len(errs) > 0 {
		t.Fatalf("matchCondition does not compile for CEL compatibility %s: %v", compatibility, errs)
	}
	matcher := matchconditions.NewMatcher(evaluator, &fail, "webhook", "validating", "pods.podarmor.io")
	gvk := schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
	return func(t *testing.T, p *corev1.Pod, subresource string) bool {
		t.Helper()
		op, opts := admission.Create, runtime.Object(&metav1.CreateOptions{})
		if subresource != "" {
			op, opts = admission.Update, &metav1.UpdateOptions{}
		}
		attr := admission.NewAttributesRecord(p, p, gvk, p.Namespace, p.Name,
			schema.GroupVersionResource{Version: "v1", Resource: "pods"}, subresource, op, opts, false, nil)
		r := matcher.Match(context.Background(), &admission.VersionedAttributes{Attributes: attr, VersionedObject: p, VersionedKind: gvk}, nil, nil)
		if r.Error != nil {
			t.Fatalf("matchCondition: %v", r.Error)
		}
		return r.Matches
	}
}

type store struct {
	cluster []*v1alpha1.ClusterArmorPolicy
}

func (s store) ArmorPolicies(string) []*v1alpha1.ArmorPolicy                   { return nil }
func (s store) ClusterArmorPolicies() []*v1alpha1.ClusterArmorPolicy           { return s.cluster }
func (s store) ClusterArmorPolicy(string) (*v1alpha1.ClusterArmorPolicy, bool) { return nil, false }
func (s store) Namespace(string) (*corev1.Namespace, bool)                     { return nil, false }

var _ policy.Store = store{}

// mutated is a pod as podarmor's mutating webhook leaves it under a ClusterArmorPolicy
// of mode and enforcers, with the API server's AppArmor field (1.30+) or without.
func mutated(t *testing.T, field bool, mode v1alpha1.Mode, mut func(*v1alpha1.ClusterArmorPolicy), pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	p := &v1alpha1.ClusterArmorPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "baseline", Generation: 1},
		Spec: v1alpha1.ClusterArmorPolicySpec{ArmorPolicySpec: v1alpha1.ArmorPolicySpec{
			Enforcers: v1alpha1.Enforcers, Mode: mode,
		}},
		Status: v1alpha1.PolicyStatus{ObservedGeneration: 1, Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue}}},
	}
	if mut != nil {
		mut(p)
	}
	planner := &podadmission.Planner{Store: store{cluster: []*v1alpha1.ClusterArmorPolicy{p}}}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	plan, err := planner.Plan(podadmission.Request{Pod: pod, Namespace: ns, AppArmorField: field})
	if err != nil || plan.Reject != "" {
		t.Fatalf("plan: %v %s", err, plan.Reject)
	}
	if err := podadmission.Apply(pod, plan, field, false); err != nil {
		t.Fatal(err)
	}
	if field {
		syncAppArmor(pod)
	}
	return pod
}

// syncAppArmor does what an API server from 1.30 does after mutating admission: copy
// each container's AppArmor field into the deprecated annotation.
func syncAppArmor(p *corev1.Pod) {
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.SecurityContext == nil || c.SecurityContext.AppArmorProfile == nil {
			continue
		}
		if _, ok := p.Annotations[podadmission.AppArmorAnnotationPrefix+c.Name]; !ok {
			p.Annotations[podadmission.AppArmorAnnotationPrefix+c.Name] = "localhost/" + *c.SecurityContext.AppArmorProfile.LocalhostProfile
		}
	}
}

func newPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
			Containers:     []corev1.Container{{Name: "main", Image: "busybox"}, {Name: "sidecar", Image: "envoy"}},
		},
	}
}

func TestValidatingPodWebhookIsSkippedOnlyForSealedPods(t *testing.T) {
	tests := map[string]struct {
		pod  func(t *testing.T, field bool) *corev1.Pod
		call bool // the API server calls the validating webhook
	}{
		"a pod as podarmor confined it": {
			pod: func(t *testing.T, field bool) *corev1.Pod {
				return mutated(t, field, v1alpha1.ModeEnhanceProtect, nil, newPod())
			},
		},
		"a pod confined in mode RuntimeDefault": {
			pod: func(t *testing.T, field bool) *corev1.Pod {
				return mutated(t, field, v1alpha1.ModeRuntimeDefault, nil, newPod())
			},
		},
		"a pod of a policy that targets one container": {
			pod: func(t *testing.T, field bool) *corev1.Pod {
				return mutated(t, field, v1alpha1.ModeEnhanceProtect, func(p *v1alpha1.ClusterArmorPolicy) {
					p.Spec.Target.Containers = []string{"main"}
				}, newPod())
			},
		},
		"a pod whose container kept its own profiles": {
			pod: func(t *testing.T, field bool) *corev1.Pod {
				p := newPod()
				p.Spec.Containers[1].SecurityContext = &corev1.SecurityContext{
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined},
				}
				p.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
				return mutated(t, field, v1alpha1.ModeEnhanceProtect, nil, p)
			},
		},
		"a pod admitted with BPF only": {
			pod: func(t *testing.T, field bool) *corev1.Pod {
				return mutated(t, field, v1alpha1.ModeEnhanceProtect, func(p *v1alpha1.ClusterArmorPolicy) {
					p.Status = v1alpha1.PolicyStatus{}
					p.Spec.Admission.WhenNotReady = v1alpha1.NotReadyAdmitBPFOnly
				}, newPod())
			},
		},
		"a pod that was never mutated": {
			pod:  func(*testing.T, bool) *corev1.Pod { return newPod() },
			call: true,
		},
		"a pod whose client wrote a seal itself": {
			pod: func(*testing.T, bool) *corev1.Pod {
				p := newPod()
				p.Annotations = map[string]string{podadmission.AnnotationSeal: "|||||"}
				return p
			},
			call: true,
		},
		"a container's seccomp profile removed after podarmor": {
			pod: func(t *testing.T, field bool) *corev1.Pod {
				p := mutated(t, field, v1alpha1.ModeEnhanceProtect, nil, newPod())
				p.Spec.Containers[0].SecurityContext.SeccompProfile = nil
				return p
			},
			call: true,
		},
		"a container's seccomp profile replaced after podarmor": {
			pod: func(t *testing.T, field bool) *corev1.Pod {
				p := mutated(t, field, v1alpha1.ModeEnhanceProtect, nil, newPod())
				p.Spec.Containers[1].SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
				return p
			},
			call: true,
		},
		"an AppArmor profile replaced after podarmor": {
			pod: func(t *testing.T, field bool) *corev1.Pod {
				p := mutated(t, field, v1alpha1.ModeEnhanceProtect, nil, newPod())
				if field {
					p.Spec.InitContainers[0].SecurityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
				} else {
					p.Annotations[podadmission.AppArmorAnnotationPrefix+"init"] = "unconfined"
				}
				return p
			},
			call: true,
		},
		"a container added after podarmor": {
			pod: func(t *testing.T, field bool) *corev1.Pod {
				p := mutated(t, field, v1alpha1.ModeEnhanceProtect, nil, newPod())
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "proxy", Image: "envoy"})
				return p
			},
			call: true,
		},
		"a debug container added to a sealed pod": {
			pod: func(t *testing.T, field bool) *corev1.Pod {
				p := mutated(t, field, v1alpha1.ModeEnhanceProtect, nil, newPod())
				p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger"}}}
				return p
			},
			call: true,
		},
		"the profile label changed after podarmor": {
			pod: func(t *testing.T, field bool) *corev1.Pod {
				p := mutated(t, field, v1alpha1.ModeEnhanceProtect, nil, newPod())
				p.Labels[v1alpha1.LabelProfile] = "cap.other"
				return p
			},
			call: true,
		},
		"the pod's seccomp profile changed after podarmor": {
			pod: func(t *testing.T, field bool) *corev1.Pod {
				p := mutated(t, field, v1alpha1.ModeEnhanceProtect, func(p *v1alpha1.ClusterArmorPolicy) {
					p.Spec.Target.Containers = []string{"main"}
				}, newPod())
				p.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}
				return p
			},
			call: true,
		},
		"a value with a separator is never sealed": {
			pod: func(t *testing.T, field bool) *corev1.Pod {
				p := newPod()
				p.Spec.Containers[1].SecurityContext = &corev1.SecurityContext{
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptr.To("a|b;c")},
				}
				return mutated(t, field, v1alpha1.ModeEnhanceProtect, nil, p)
			},
			call: true,
		},
	}
	// 1.28 is the CEL compatibility version of a 1.29 API server; the default is this
	// module's own.
	for _, compatibility := range []*version.Version{version.MajorMinor(1, 28), environment.DefaultCompatibilityVersion()} {
		call := notSealed(t, compatibility)
		for _, field := range []bool{true, false} {
			for name, tc := range tests {
				t.Run(name, func(t *testing.T) {
					p := tc.pod(t, field)
					if got := call(t, p, ""); got != tc.call {
						t.Errorf("CEL %s, AppArmor field %v: webhook called %v, want %v; seal %q, pod's %q",
							compatibility, field, got, tc.call, p.Annotations[podadmission.AnnotationSeal], sealOf(p))
					}
					// The CEL and the Go seal agree.
					s, ok := podadmission.Seal(p)
					if want := !ok || s != p.Annotations[podadmission.AnnotationSeal]; call(t, p, "") != want {
						t.Errorf("CEL says called=%v, Seal says %v", call(t, p, ""), want)
					}
					if !call(t, p, "ephemeralcontainers") {
						t.Error("a debug container skipped the webhook")
					}
				})
			}
		}
	}
}

func sealOf(p *corev1.Pod) string {
	s, _ := podadmission.Seal(p)
	return s
}

func TestMatchConditionCost(t *testing.T) {
	call := notSealed(t, environment.DefaultCompatibilityVersion())
	p := mutated(t, true, v1alpha1.ModeEnhanceProtect, nil, newPod())
	for i := range 50 {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "c" + time.Duration(i).String()})
	}
	if !call(t, p, "") { // unsealed containers: called, and within the cost budget (Match fails otherwise)
		t.Error("a pod with containers added after podarmor skipped the webhook")
	}
}

// TestMatchConditionCostHundredsOfContainers evaluates the matchCondition on a pod of
// 300 init containers and 300 containers with names of 63 bytes, sealed, then with one
// profile changed: both within the API server's CEL cost budget (Match fails otherwise).
func TestMatchConditionCostHundredsOfContainers(t *testing.T) {
	call := notSealed(t, environment.DefaultCompatibilityVersion())
	p := newPod()
	p.Spec.InitContainers, p.Spec.Containers = nil, nil
	for i := range 300 {
		name := fmt.Sprintf("%s-%03d", strings.Repeat("x", 59), i)
		p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: "i" + name[1:], Image: "busybox"})
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "c" + name[1:], Image: "busybox"})
	}
	p = mutated(t, true, v1alpha1.ModeEnhanceProtect, nil, p)
	if call(t, p, "") {
		t.Error("a sealed pod of 600 containers was sent to the webhook")
	}
	p.Spec.Containers[299].SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
	if !call(t, p, "") {
		t.Error("a pod whose last container lost its profile skipped the webhook")
	}
}
