package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/webhook/admission"
)

type store struct{ armor []*v1alpha1.ArmorPolicy }

func (s store) ArmorPolicies(string) []*v1alpha1.ArmorPolicy                   { return s.armor }
func (s store) ClusterArmorPolicies() []*v1alpha1.ClusterArmorPolicy           { return nil }
func (s store) ClusterArmorPolicy(string) (*v1alpha1.ClusterArmorPolicy, bool) { return nil, false }
func (s store) Namespace(string) (*corev1.Namespace, bool)                     { return nil, false }

type countingMetrics struct {
	mu        sync.Mutex
	decisions map[string]int
}

func (m *countingMetrics) Review(string, string, time.Duration) {}
func (m *countingMetrics) Decision(webhook, op, result string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.decisions[webhook+" "+op+" "+result]++
}
func (m *countingMetrics) Outcome(admission.Outcome) {}

func testServer(t testing.TB) (http.Handler, *countingMetrics) {
	t.Helper()
	p := &v1alpha1.ArmorPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Generation: 1},
		Spec: v1alpha1.ArmorPolicySpec{
			Target:    v1alpha1.Target{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
			Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor, v1alpha1.EnforcerSeccomp},
			Mode:      v1alpha1.ModeEnhanceProtect,
		},
		Status: v1alpha1.PolicyStatus{ObservedGeneration: 1, Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue}}},
	}
	m := &countingMetrics{decisions: map[string]int{}}
	h, err := New(Config{
		Planner: &admission.Planner{Store: store{armor: []*v1alpha1.ArmorPolicy{p}}},
		Namespace: func(_ context.Context, name string) (*corev1.Namespace, error) {
			return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, nil
		},
		AppArmorField: func() bool { return true },
		Ready:         func() bool { return true },
		Metrics:       m,
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, m
}

func review(t testing.TB, op admissionv1.Operation, obj runtime.Object, kind metav1.GroupVersionKind) []byte {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	ar := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "1", Kind: kind, Operation: op, Namespace: "shop",
			Object: runtime.RawExtension{Raw: raw},
		},
	}
	body, err := json.Marshal(ar)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func post(t testing.TB, h http.Handler, path string, body []byte) (int, admissionv1.AdmissionReview) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
	var out admissionv1.AdmissionReview
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("decode response: %v\n%s", err, rec.Body)
		}
	}
	return rec.Code, out
}

var podGVK = metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}

func webPod() *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "busybox"}}},
	}
}

func TestMutateAndValidatePod(t *testing.T) {
	h, m := testServer(t)
	code, resp := post(t, h, PathMutatePods, review(t, admissionv1.Create, webPod(), podGVK))
	if code != http.StatusOK || !resp.Response.Allowed {
		t.Fatalf("mutate: %d %+v", code, resp.Response)
	}
	patch := string(resp.Response.Patch)
	for _, want := range []string{`"path":"/metadata/labels/podarmor.io~1profile","value":"ap.shop.web"`, `podarmor-ap.shop.web`, `podarmor/ap.shop.web.json`} {
		if !strings.Contains(patch, want) {
			t.Errorf("patch lacks %s:\n%s", want, patch)
		}
	}
	code, resp = post(t, h, PathValidatePods, review(t, admissionv1.Create, webPod(), podGVK))
	if code != http.StatusOK || resp.Response.Allowed {
		t.Fatalf("an unmutated pod must be refused: %d %+v", code, resp.Response)
	}
	if msg := resp.Response.Result.Message; !strings.Contains(msg, "podarmor.io/profile") {
		t.Errorf("refusal does not say why: %s", msg)
	}
	if m.decisions["mutate-pods create mutated"] != 1 || m.decisions["validate-pods create denied"] != 1 {
		t.Errorf("decisions %v", m.decisions)
	}
}

func TestMalformedReviewIsBadRequest(t *testing.T) {
	h, _ := testServer(t)
	for name, body := range map[string][]byte{
		"not JSON":       []byte("{{{"),
		"empty body":     nil,
		"no request":     []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`),
		"wrong kind":     []byte(`{"apiVersion":"v1","kind":"Pod"}`),
		"binary garbage": []byte{0xff, 0x00, 0x13},
	} {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{PathMutatePods, PathValidatePods, PathValidatePolicies} {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
				if rec.Code < 400 || rec.Code >= 500 {
					b, _ := io.ReadAll(rec.Body)
					t.Errorf("%s: status %d, want 4xx: %s", path, rec.Code, b)
				}
			}
		})
	}
}

func TestValidatePolicyNamesTheField(t *testing.T) {
	h, _ := testServer(t)
	bad := map[string]any{
		"apiVersion": "podarmor.io/v1alpha1", "kind": "ArmorPolicy",
		"metadata": map[string]any{"name": "bad", "namespace": "shop"},
		"spec": map[string]any{
			"target": map[string]any{"selector": map[string]any{}}, "enforcers": []any{"BPF"}, "mode": "EnhanceProtect",
			"customRules": map[string]any{"files": []any{map[string]any{"paths": []any{"/a//b"}, "permissions": []any{"read"}}}},
		},
	}
	raw, _ := json.Marshal(bad)
	body, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "2", Operation: admissionv1.Create, Namespace: "shop",
			Kind:   metav1.GroupVersionKind{Group: "podarmor.io", Version: "v1alpha1", Kind: "ArmorPolicy"},
			Object: runtime.RawExtension{Raw: raw}},
	})
	code, resp := post(t, h, PathValidatePolicies, body)
	if code != http.StatusOK || resp.Response.Allowed {
		t.Fatalf("%d %+v", code, resp.Response)
	}
	if msg := resp.Response.Result.Message; !strings.Contains(msg, "spec.customRules.files[0].paths[0]") {
		t.Errorf("message does not name the field: %s", msg)
	}
}

func TestReadyz(t *testing.T) {
	for name, tc := range map[string]struct {
		ready bool
		code  int
	}{
		"ready once caches and certificate are there": {true, http.StatusOK},
		"not ready before":                            {false, http.StatusServiceUnavailable},
	} {
		t.Run(name, func(t *testing.T) {
			h, err := New(Config{
				Planner:       &admission.Planner{Store: store{}},
				Namespace:     func(context.Context, string) (*corev1.Namespace, error) { return nil, nil },
				AppArmorField: func() bool { return true },
				Ready:         func() bool { return tc.ready },
				Metrics:       &countingMetrics{decisions: map[string]int{}},
			})
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != tc.code {
				t.Errorf("readyz %d, want %d", rec.Code, tc.code)
			}
		})
	}
}

// benchReviews are the reviews the handler benchmarks answer: "bare-pod", a hand-made
// pod with two containers and an init container and nothing else (the figures before
// November 2026 used it), and "apiserver-review", the review kube-apiserver v1.37.2
// sends for the end-to-end benchmark's pod (an init container and a container, with the
// server's defaults, managed fields and service-account volume), which is what the
// webhook really decodes.
func benchReviews(b *testing.B) []struct {
	name string
	body []byte
} {
	p := webPod()
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "sidecar", Image: "envoy"})
	p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox"}}
	fromAPIServer, err := os.ReadFile("testdata/pod-review.json")
	if err != nil {
		b.Fatal(err)
	}
	return []struct {
		name string
		body []byte
	}{{"bare-pod", review(b, admissionv1.Create, p, podGVK)}, {"apiserver-review", fromAPIServer}}
}

// shippedGC runs the benchmark with the garbage collector set as podarmor-webhook sets
// it, unless GOGC asks otherwise.
func shippedGC(b *testing.B) {
	if _, set := os.LookupEnv("GOGC"); !set {
		old := debug.SetGCPercent(GCPercent)
		b.Cleanup(func() { debug.SetGCPercent(old) })
	}
}

// BenchmarkMutatePod measures the whole handler for a typical pod: decoding the review,
// choosing the policy, mutating, computing the JSON patch and encoding the answer.
func BenchmarkMutatePod(b *testing.B) {
	shippedGC(b)
	h, _ := testServer(b)
	for _, r := range benchReviews(b) {
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, PathMutatePods, bytes.NewReader(r.body)))
				if rec.Code != http.StatusOK {
					b.Fatal(rec.Code)
				}
			}
		})
	}
}

// BenchmarkMutatePodLatency reports the handler's latency percentiles and throughput
// for a typical pod, one review at a time ("serial") and with one in flight per CPU
// ("parallel"), for `make bench`.
func BenchmarkMutatePodLatency(b *testing.B) {
	shippedGC(b)
	h, _ := testServer(b)
	for _, r := range benchReviews(b) {
		b.Run(r.name, func(b *testing.B) { latency(b, h, r.body) })
	}
}

func latency(b *testing.B, h http.Handler, body []byte) {
	one := func() time.Duration {
		t0 := time.Now()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, PathMutatePods, bytes.NewReader(body)))
		if rec.Code != http.StatusOK {
			b.Error(rec.Code)
		}
		return time.Since(t0)
	}
	report := func(b *testing.B, latencies []time.Duration, elapsed time.Duration) {
		slices.Sort(latencies)
		pct := func(q float64) float64 { return float64(latencies[int(q*float64(len(latencies)-1))].Microseconds()) }
		b.ReportMetric(pct(0.50), "p50-µs")
		b.ReportMetric(pct(0.99), "p99-µs")
		b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "reviews/s")
	}
	b.Run("serial", func(b *testing.B) {
		var latencies []time.Duration
		start := time.Now()
		for b.Loop() {
			latencies = append(latencies, one())
		}
		report(b, latencies, time.Since(start))
	})
	b.Run("parallel", func(b *testing.B) {
		var mu sync.Mutex
		var latencies []time.Duration
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			var local []time.Duration
			for pb.Next() {
				local = append(local, one())
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		})
		report(b, latencies, time.Since(start))
	})
}

func TestPolicyRefusalComesFromTheMutatingWebhook(t *testing.T) {
	h, m := testServer(t)
	p := webPod()
	p.Labels["app"] = "nothing-selects-this"
	code, resp := post(t, h, PathMutatePods, review(t, admissionv1.Create, p, podGVK))
	if code != http.StatusOK || resp.Response.Allowed {
		t.Fatalf("a pod no policy selects must be refused: %d %+v", code, resp.Response)
	}
	if msg := resp.Response.Result.Message; !strings.Contains(msg, "no podarmor policy selects the pod") {
		t.Errorf("refusal does not say why: %s", msg)
	}
	if m.decisions["mutate-pods create denied"] != 1 {
		t.Errorf("decisions %v", m.decisions)
	}
}

func TestObjectThatDoesNotDecodeIsRefused(t *testing.T) {
	h, _ := testServer(t)
	tests := map[string]struct {
		path, object, want string
	}{
		"a number as the pod":                 {PathMutatePods, `5`, "the review's object is not a pod"},
		"no object at all":                    {PathValidatePods, ``, "the review's object is not a pod"},
		"a pod whose containers are a string": {PathValidatePods, `{"spec":{"containers":"x"}}`, "the review's object is not a pod"},
		"an object without a kind":            {PathValidatePolicies, `{"spec":{}}`, "the review's object is not a Kubernetes object"},
		"a pod sent to the policy webhook":    {PathValidatePolicies, `{"apiVersion":"v1","kind":"Pod"}`, `kind "Pod" is not a podarmor policy`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			body := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","namespace":"shop"`
			if tc.object != "" {
				body += `,"object":` + tc.object
			}
			code, resp := post(t, h, tc.path, []byte(body+"}}"))
			if code != http.StatusOK || resp.Response == nil || resp.Response.Allowed || resp.Response.UID != "u" {
				t.Fatalf("status %d, answer %+v; want a refusal of request u", code, resp.Response)
			}
			if msg := resp.Response.Result.Message; !strings.Contains(msg, tc.want) {
				t.Errorf("refusal %q does not say %q", msg, tc.want)
			}
		})
	}
}
