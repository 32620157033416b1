package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "sigs.k8s.io/json"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/webhook/admission"
)

// fuzzPolicy is the ArmorPolicy of the fuzz targets: every enforcer, so that every
// container gets both profiles, and opt-outs allowed, so that the opt-out path is
// reachable from a pod's annotations.
func fuzzPolicy() *v1alpha1.ArmorPolicy {
	return &v1alpha1.ArmorPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Generation: 1},
		Spec: v1alpha1.ArmorPolicySpec{
			Target:    v1alpha1.Target{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
			Enforcers: v1alpha1.Enforcers,
			Mode:      v1alpha1.ModeEnhanceProtect,
			Admission: v1alpha1.AdmissionOptions{AllowOptOut: true},
		},
		Status: v1alpha1.PolicyStatus{ObservedGeneration: 1, Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue}}},
	}
}

// fuzzHandler is the webhook's handler over one ArmorPolicy of namespace shop, logging
// nowhere: kubewebhook logs every failed review, which would drown the fuzzer's output.
func fuzzHandler(f *testing.F, p *v1alpha1.ArmorPolicy) http.Handler {
	h, err := New(Config{
		Planner: &admission.Planner{Store: store{armor: []*v1alpha1.ArmorPolicy{p}}},
		Namespace: func(_ context.Context, name string) (*corev1.Namespace, error) {
			return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, nil
		},
		AppArmorField: func() bool { return true },
		Ready:         func() bool { return true },
		Metrics:       &countingMetrics{decisions: map[string]int{}},
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		f.Fatal(err)
	}
	return h
}

// reviewSeeds are real review bodies: the one kube-apiserver sent for the end-to-end
// benchmark's pod, and those the tests of this package build.
func reviewSeeds(f *testing.F) [][]byte {
	fromAPIServer, err := os.ReadFile("testdata/pod-review.json")
	if err != nil {
		f.Fatal(err)
	}
	p := webPod()
	p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox"}}
	p.Annotations = map[string]string{admission.AppArmorAnnotationPrefix + "main": "unconfined", v1alpha1.AnnotationOptOut: "true"}
	eph := webPod()
	eph.Labels[v1alpha1.LabelProfile] = "ap.shop.web"
	eph.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger"}}}
	ephReview := review(f, admissionv1.Update, eph, podGVK)
	ephReview = bytes.Replace(ephReview, []byte(`"operation":"UPDATE"`), []byte(`"operation":"UPDATE","subResource":"ephemeralcontainers"`), 1)
	policy, err := json.Marshal(map[string]any{
		"apiVersion": "podarmor.io/v1alpha1", "kind": "ArmorPolicy",
		"metadata": map[string]any{"name": "p", "namespace": "shop"},
		"spec": map[string]any{
			"target": map[string]any{"selector": map[string]any{}}, "enforcers": []any{"BPF", "AppArmor"}, "mode": "EnhanceProtect",
			"customRules": map[string]any{"files": []any{map[string]any{"paths": []any{"/etc/**"}, "permissions": []any{"read"}}}},
		},
	})
	if err != nil {
		f.Fatal(err)
	}
	policyReview, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "3", Operation: admissionv1.Create, Namespace: "shop",
			Kind:   metav1.GroupVersionKind{Group: "podarmor.io", Version: "v1alpha1", Kind: "ArmorPolicy"},
			Object: runtime.RawExtension{Raw: policy}},
	})
	if err != nil {
		f.Fatal(err)
	}
	return [][]byte{fromAPIServer, review(f, admissionv1.Create, p, podGVK), ephReview, policyReview}
}

// FuzzReview posts arbitrary bodies to each of the webhook's paths, through the real
// handler. A body that is no JSON AdmissionReview with a request gets a 4xx; one that
// is gets 200 and an AdmissionReview answering its request; nothing panics (the
// handler's own recover answers 500 "internal error", which fails here).
func FuzzReview(f *testing.F) {
	for _, s := range reviewSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","object":5}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"1","operation":"DELETE"}}`))
	h := fuzzHandler(f, fuzzPolicy())
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, path := range []string{PathMutatePods, PathValidatePods, PathValidatePolicies} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
			var ar admissionv1.AdmissionReview
			wellFormed := malformed(body) == "" && json.Unmarshal(body, &ar) == nil && ar.Request != nil
			switch {
			case rec.Code == http.StatusOK:
				checkAnswer(t, path, body, rec.Body.Bytes())
			case wellFormed:
				t.Fatalf("%s: status %d for an AdmissionReview with a request: %s\nbody %q", path, rec.Code, rec.Body, body)
			case rec.Code < 400 || rec.Code >= 500:
				t.Fatalf("%s: status %d for a malformed review, want 4xx: %s\nbody %q", path, rec.Code, rec.Body, body)
			}
		}
	})
}

// checkAnswer checks that resp is an AdmissionReview answering the request in body: the
// same UID, and a message on every refusal.
func checkAnswer(t *testing.T, path string, body, resp []byte) {
	t.Helper()
	var in, out struct {
		APIVersion string                        `json:"apiVersion"`
		Kind       string                        `json:"kind"`
		Request    *admissionv1.AdmissionRequest `json:"request"`
		Response   *admissionv1.AdmissionResponse
	}
	if err := json.Unmarshal(resp, &out); err != nil || out.Kind != "AdmissionReview" || out.Response == nil {
		t.Fatalf("%s: answer %s is no AdmissionReview with a response (%v)\nbody %q", path, resp, err, body)
	}
	// The UID comes back as the handler read it; a body the standard decoder refuses
	// (kubewebhook's decoder is more lenient) has no UID to compare.
	if json.Unmarshal(body, &in) == nil && in.Request != nil && out.Response.UID != in.Request.UID {
		t.Fatalf("%s: answer UID %q, request UID %q", path, out.Response.UID, in.Request.UID)
	}
	if !out.Response.Allowed && (out.Response.Result == nil || out.Response.Result.Message == "") {
		t.Fatalf("%s: a refusal without a message: %s", path, resp)
	}
	if out.Response.Allowed && path != PathMutatePods && len(out.Response.Patch) > 0 {
		t.Fatalf("%s: a validating webhook answered a patch: %s", path, resp)
	}
}

// FuzzPod posts a well-formed review of an arbitrary pod (any JSON object) to the
// mutating webhook, on create and for the ephemeral containers subresource. It must get
// a well-formed answer: a refusal with a message, or an admission whose JSON patch
// applies to the pod as the API server applies it and gives exactly what
// admission.Apply makes of the pod; and the validating webhook must then let the
// patched pod through.
func FuzzPod(f *testing.F) {
	for _, s := range reviewSeeds(f) {
		var ar admissionv1.AdmissionReview
		if err := json.Unmarshal(s, &ar); err != nil {
			f.Fatal(err)
		}
		if ar.Request.Kind.Kind == "Pod" {
			f.Add(ar.Request.Object.Raw, ar.Request.SubResource == "ephemeralcontainers")
		}
	}
	big := webPod()
	for i := range 5 {
		big.Spec.Containers = append(big.Spec.Containers, corev1.Container{Name: strings.Repeat("c", i+1)})
	}
	raw, err := json.Marshal(big)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw, false)
	f.Add([]byte(`{"metadata":{"labels":{"app":"web"},"annotations":{"podarmor.io/seal":"x|y"}},"spec":{"containers":[{"name":"a|b"}]}}`), false)
	f.Add([]byte(`{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"a"},{"name":"a"}]}}`), false)
	policy := fuzzPolicy()
	h := fuzzHandler(f, policy)
	planner := &admission.Planner{Store: store{armor: []*v1alpha1.ArmorPolicy{policy}}}
	f.Fuzz(func(t *testing.T, pod []byte, ephemeral bool) {
		if !json.Valid(pod) {
			return // the review itself would not be JSON; FuzzReview covers that
		}
		op, sub := admissionv1.Create, ""
		if ephemeral {
			op, sub = admissionv1.Update, "ephemeralcontainers"
		}
		reviewOf := func(obj []byte) []byte {
			b, err := json.Marshal(admissionv1.AdmissionReview{
				TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
				Request: &admissionv1.AdmissionRequest{UID: "f", Kind: podGVK, Operation: op, SubResource: sub, Namespace: "shop",
					Object: runtime.RawExtension{Raw: obj}},
			})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		code, resp := postRaw(t, h, PathMutatePods, reviewOf(pod))
		if code != http.StatusOK {
			t.Fatalf("mutate: status %d for a well-formed review of %s", code, pod)
		}
		r := resp.Response
		if r == nil || r.UID != "f" {
			t.Fatalf("mutate: answer %+v does not answer request f", resp)
		}
		if !r.Allowed {
			if r.Result == nil || !strings.HasPrefix(r.Result.Message, "podarmor") {
				t.Fatalf("mutate: a refusal without podarmor's reason: %+v", r.Result)
			}
			return
		}
		patch, err := jsonpatch.DecodePatch(r.Patch)
		if err != nil {
			t.Fatalf("mutate: patch %s does not decode: %v", r.Patch, err)
		}
		patched, err := patch.Apply(pod)
		if err != nil {
			t.Fatalf("mutate: patch %s does not apply to %s: %v", r.Patch, pod, err)
		}
		var got, want corev1.Pod
		if err := kjson.UnmarshalCaseSensitivePreserveInts(patched, &got); err != nil {
			t.Fatalf("the patched pod %s does not decode: %v", patched, err)
		}
		if err := kjson.UnmarshalCaseSensitivePreserveInts(pod, &want); err != nil {
			t.Fatalf("the webhook admitted a pod that does not decode: %v\n%s", err, pod)
		}
		req := admission.Request{Pod: &want, Namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
			EphemeralOnly: ephemeral, AppArmorField: true}
		plan, err := planner.Plan(req)
		if err != nil {
			t.Fatal(err)
		}
		if err := admission.Apply(&want, plan, true, ephemeral); err != nil {
			t.Fatal(err)
		}
		canonicalFields(t, &got)
		canonicalFields(t, &want)
		if !equality.Semantic.DeepEqual(&got, &want) {
			t.Fatalf("patch %s gives a pod other than admission.Apply's (-want +got):\n%s", r.Patch, cmp.Diff(&want, &got))
		}
		code, resp = postRaw(t, h, PathValidatePods, reviewOf(patched))
		if code != http.StatusOK || resp.Response == nil {
			t.Fatalf("validate: status %d for the patched pod %s", code, patched)
		}
		if !resp.Response.Allowed {
			t.Fatalf("validate: the pod as podarmor mutated it is refused: %s\npod %s", resp.Response.Result.Message, patched)
		}
	})
}

// canonicalFields rewrites the raw JSON of the pod's managed fields with sorted keys and
// no spaces, as a JSON patch library re-encodes them: the same fields, other bytes.
func canonicalFields(t *testing.T, p *corev1.Pod) {
	for i, m := range p.ManagedFields {
		if m.FieldsV1 == nil {
			continue
		}
		var v any
		if err := json.Unmarshal(m.FieldsV1.Raw, &v); err != nil {
			t.Fatalf("managed fields %s: %v", m.FieldsV1.Raw, err)
		}
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		p.ManagedFields[i].FieldsV1 = &metav1.FieldsV1{Raw: raw}
	}
}

// postRaw is post without failing on an answer that does not decode: that is a finding.
func postRaw(t *testing.T, h http.Handler, path string, body []byte) (int, admissionv1.AdmissionReview) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
	var out admissionv1.AdmissionReview
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s: answer does not decode: %v\n%s", path, err, rec.Body)
		}
	} else {
		t.Logf("%s: %d %s", path, rec.Code, rec.Body)
	}
	return rec.Code, out
}
