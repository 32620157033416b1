package server

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/webhook/admission"
)

// TestPodPatch checks that the mutating webhook's patch, applied with the API server's
// JSON patch library, turns the pod into exactly what admission.Apply makes of it, and
// leaves alone the fields it does not own, even those this module does not know.
func TestPodPatch(t *testing.T) {
	policy := func(mut func(*v1alpha1.ArmorPolicy)) *v1alpha1.ArmorPolicy {
		p := &v1alpha1.ArmorPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Generation: 3},
			Spec: v1alpha1.ArmorPolicySpec{
				Target:    v1alpha1.Target{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
				Enforcers: v1alpha1.Enforcers,
				Mode:      v1alpha1.ModeEnhanceProtect,
			},
			Status: v1alpha1.PolicyStatus{ObservedGeneration: 3, Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue}}},
		}
		if mut != nil {
			mut(p)
		}
		return p
	}
	pod := func(mut func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
				Containers:     []corev1.Container{{Name: "main", Image: "busybox"}, {Name: "side/car~", Image: "envoy"}},
			},
		}
		if mut != nil {
			mut(p)
		}
		return p
	}
	tests := map[string]struct {
		policy    *v1alpha1.ArmorPolicy
		pod       *corev1.Pod
		field     bool
		ephemeral bool
	}{
		"a plain pod":                        {policy: policy(nil), pod: pod(nil), field: true},
		"a plain pod before Kubernetes 1.30": {policy: policy(nil), pod: pod(nil)},
		"a pod with annotations and a securityContext of its own": {
			policy: policy(nil), field: true,
			pod: pod(func(p *corev1.Pod) {
				p.Annotations = map[string]string{"a/b~c": "d"}
				p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To(int64(1000))}
				p.Spec.Containers[1].SecurityContext = &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}
			}),
		},
		"profiles overridden, the annotation kept in step": {
			policy: policy(func(p *v1alpha1.ArmorPolicy) { p.Spec.Admission.OverrideProfiles = true }), field: true,
			pod: pod(func(p *corev1.Pod) {
				p.Annotations = map[string]string{admission.AppArmorAnnotationPrefix + "main": "unconfined"}
				p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
					SeccompProfile:  &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined},
					AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined},
				}
			}),
		},
		"an opt-out removes a seal the client wrote": {
			policy: policy(func(p *v1alpha1.ArmorPolicy) { p.Spec.Admission.AllowOptOut = true }), field: true,
			pod: pod(func(p *corev1.Pod) {
				p.Annotations = map[string]string{v1alpha1.AnnotationOptOut: "true", admission.AnnotationSeal: "forged"}
			}),
		},
		"a pod without labels of its own but selected by an empty selector": {
			policy: policy(func(p *v1alpha1.ArmorPolicy) { p.Spec.Target.Selector = metav1.LabelSelector{} }), field: true,
			pod: pod(func(p *corev1.Pod) { p.Labels = nil }),
		},
		"a pod podarmor confined already, as when the API server invokes the webhook again": {
			policy: policy(nil), field: true,
			pod: pod(func(p *corev1.Pod) {
				pl := &admission.Planner{Store: store{armor: []*v1alpha1.ArmorPolicy{policy(nil)}}}
				plan, err := pl.Plan(admission.Request{Pod: p, Namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, AppArmorField: true})
				if err != nil {
					t.Fatal(err)
				}
				if err := admission.Apply(p, plan, true, false); err != nil {
					t.Fatal(err)
				}
			}),
		},
		"a debug container": {
			policy: policy(nil), field: true, ephemeral: true,
			pod: pod(func(p *corev1.Pod) {
				p.Labels[v1alpha1.LabelProfile] = "ap.shop.web"
				p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger"}}}
			}),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := handlerWith(t, []*v1alpha1.ArmorPolicy{tc.policy}, tc.field)
			raw, err := json.Marshal(tc.pod)
			if err != nil {
				t.Fatal(err)
			}
			// A field of a newer API server, unknown to this module's k8s.io/api.
			var obj map[string]any
			if err := json.Unmarshal(raw, &obj); err != nil {
				t.Fatal(err)
			}
			obj["spec"].(map[string]any)["futureField"] = "kept"
			if raw, err = json.Marshal(obj); err != nil {
				t.Fatal(err)
			}
			op, sub := admissionv1.Create, ""
			if tc.ephemeral {
				op, sub = admissionv1.Update, "ephemeralcontainers"
			}
			body, err := json.Marshal(admissionv1.AdmissionReview{
				TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
				Request: &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: op, SubResource: sub, Namespace: "shop",
					Object: runtime.RawExtension{Raw: raw}},
			})
			if err != nil {
				t.Fatal(err)
			}
			code, resp := post(t, h, PathMutatePods, body)
			if code != http.StatusOK || !resp.Response.Allowed {
				t.Fatalf("%d %+v", code, resp.Response)
			}

			if resp.Response.PatchType != nil && len(resp.Response.Patch) == 0 {
				t.Fatal("a patch type without a patch, which the API server refuses")
			}
			patched := raw
			if len(resp.Response.Patch) > 0 {
				patch, err := jsonpatch.DecodePatch(resp.Response.Patch)
				if err != nil {
					t.Fatalf("decode patch %s: %v", resp.Response.Patch, err)
				}
				if patched, err = patch.Apply(raw); err != nil {
					t.Fatalf("apply patch %s: %v", resp.Response.Patch, err)
				}
			}
			var got corev1.Pod
			if err := json.Unmarshal(patched, &got); err != nil {
				t.Fatal(err)
			}
			want := tc.pod.DeepCopy()
			plan, err := (&admission.Planner{Store: store{armor: []*v1alpha1.ArmorPolicy{tc.policy}}}).Plan(admission.Request{
				Pod: want, Namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, EphemeralOnly: tc.ephemeral, AppArmorField: tc.field,
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := admission.Apply(want, plan, tc.field, tc.ephemeral); err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(&got, want) {
				t.Errorf("patch %s\ngives %v\nwant  %v", resp.Response.Patch, got.String(), want.String())
			}
			var after map[string]any
			if err := json.Unmarshal(patched, &after); err != nil {
				t.Fatal(err)
			}
			if after["spec"].(map[string]any)["futureField"] != "kept" {
				t.Errorf("the patch %s removed a field this module does not know", resp.Response.Patch)
			}
		})
	}
}

// handlerWith is the webhook's handler over fixed ArmorPolicies of namespace shop.
func handlerWith(t testing.TB, policies []*v1alpha1.ArmorPolicy, appArmorField bool) http.Handler {
	t.Helper()
	h, err := New(Config{
		Planner: &admission.Planner{Store: store{armor: policies}},
		Namespace: func(_ context.Context, name string) (*corev1.Namespace, error) {
			return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, nil
		},
		AppArmorField: func() bool { return appArmorField },
		Ready:         func() bool { return true },
		Metrics:       &countingMetrics{decisions: map[string]int{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}
