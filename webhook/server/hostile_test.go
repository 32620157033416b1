package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/webhook/admission"
)

// containerName is the i-th of n container names of the given length (a DNS label, at
// most 63 bytes): a prefix padded with 'x' and ending in the index.
func containerName(prefix string, i, length int) string {
	suffix := fmt.Sprintf("-%d", i)
	return prefix + strings.Repeat("x", length-len(prefix)-len(suffix)) + suffix
}

// TestHostilePods sends valid pods built to stress the mutating webhook: hundreds of
// containers of every kind, names at Kubernetes' length limits, and control characters
// and invalid UTF-8 in annotations and paths. Each must be confined exactly as
// admission.Apply says (TestPodPatch's check), with a patch the API server's JSON patch
// library applies, and what podarmor adds must pass the API server's own limits on
// labels and annotations (256 KiB for all annotations together).
func TestHostilePods(t *testing.T) {
	many := func(init, regular, ephemeral, nameLen int) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Spec.InitContainers, p.Spec.Containers, p.Spec.EphemeralContainers = nil, nil, nil
			for i := range init {
				p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: containerName("i", i, nameLen), Image: "busybox"})
			}
			for i := range regular {
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: containerName("c", i, nameLen), Image: "busybox"})
			}
			for i := range ephemeral {
				p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, corev1.EphemeralContainer{
					EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: containerName("e", i, nameLen), Image: "busybox"}})
			}
		}
	}
	tests := map[string]struct {
		mut       func(*corev1.Pod)
		ephemeral bool
		noField   bool   // an API server before 1.30: AppArmor in annotations
		refused   string // the refusal expected, when the pod cannot be confined
		unsealed  bool   // the pod goes without the seal
	}{
		"300 containers, 300 init containers and 300 ephemeral containers": {mut: many(300, 300, 300, 8)},
		"300 of each kind with names of 63 bytes":                          {mut: many(300, 300, 300, validation.DNS1123LabelMaxLength)},
		"300 ephemeral containers added through the subresource": {
			ephemeral: true,
			mut: func(p *corev1.Pod) {
				many(1, 300, 300, validation.DNS1123LabelMaxLength)(p)
				p.Labels[v1alpha1.LabelProfile] = "ap.shop.web"
			},
			unsealed: true, // annotations cannot change through the subresource
		},
		"2,000 containers with names of 63 bytes, whose seal would not fit in the annotations": {
			mut: many(0, 2000, 0, validation.DNS1123LabelMaxLength), unsealed: true,
		},
		"before 1.30, 2,000 containers whose AppArmor annotations would not fit": {
			mut: many(0, 2000, 0, validation.DNS1123LabelMaxLength), noField: true,
			refused: "podarmor cannot confine this pod: metadata.annotations: with the profiles of its 2000 containers, annotations size",
		},
		"a name of 253 bytes and labels at their limits": {mut: func(p *corev1.Pod) {
			p.Name = strings.Repeat("a", validation.DNS1123SubdomainMaxLength)
			p.Labels["k"] = strings.Repeat("v", validation.LabelValueMaxLength)
		}},
		"control characters, invalid UTF-8 and JSON pointer bytes in annotations and paths": {mut: func(p *corev1.Pod) {
			p.Annotations = map[string]string{
				"example.com/ctl":                        "a\x00b\x01\x1b[31m\r\n\t\x7f",
				"example.com/utf8":                       "\xff\xfe\xc3",
				"example.com/x.y_z":                      "~0~1/",
				admission.AppArmorAnnotationPrefix + "x": "localhost/\x00\n",
				admission.AnnotationSeal:                 "forged|;\x00",
			}
			p.Spec.Containers[0].WorkingDir = "/w\x00\xff\n"
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/m\t\xfe/../\x01"}}
			p.Spec.Containers[0].Command = []string{"/bin/\xffsh", "-c", "\x00"}
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pod := webPod()
			tc.mut(pod)
			raw, err := json.Marshal(pod)
			if err != nil {
				t.Fatal(err)
			}
			op, sub := admissionv1.Create, ""
			if tc.ephemeral {
				op, sub = admissionv1.Update, "ephemeralcontainers"
			}
			body, err := json.Marshal(admissionv1.AdmissionReview{
				TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
				Request: &admissionv1.AdmissionRequest{UID: "h", Kind: podGVK, Operation: op, SubResource: sub, Namespace: "shop",
					Object: runtime.RawExtension{Raw: raw}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(body) > MaxReviewBytes {
				t.Fatalf("the review is %d bytes, over what the webhook reads", len(body))
			}
			h := handlerWith(t, []*v1alpha1.ArmorPolicy{fuzzPolicy()}, !tc.noField)
			code, resp := post(t, h, PathMutatePods, body)
			if tc.refused != "" {
				if code != http.StatusOK || resp.Response == nil || resp.Response.Allowed || !strings.Contains(resp.Response.Result.Message, tc.refused) {
					t.Fatalf("status %d, answer %+v; want a refusal with %q", code, resp.Response, tc.refused)
				}
				return
			}
			if code != http.StatusOK || resp.Response == nil || !resp.Response.Allowed {
				t.Fatalf("status %d, answer %+v", code, resp.Response)
			}
			patch, err := jsonpatch.DecodePatch(resp.Response.Patch)
			if err != nil {
				t.Fatal(err)
			}
			patched, err := patch.Apply(raw)
			if err != nil {
				t.Fatalf("the patch does not apply: %v", err)
			}
			var got corev1.Pod
			if err := json.Unmarshal(patched, &got); err != nil {
				t.Fatal(err)
			}
			want := checkApplied(t, raw, &got, tc.ephemeral)
			for _, c := range want {
				if c.sc == nil || c.sc.SeccompProfile == nil || c.sc.AppArmorProfile == nil {
					t.Fatalf("%s is not confined: %+v", c.name, c.sc)
				}
			}
			if errs := apivalidation.ValidateAnnotations(got.Annotations, field.NewPath("metadata", "annotations")); len(errs) > 0 {
				t.Errorf("the API server would refuse the mutated pod's annotations: %v", errs.ToAggregate())
			}
			if _, sealed := got.Annotations[admission.AnnotationSeal]; sealed == tc.unsealed {
				t.Errorf("sealed: %v, want %v", sealed, !tc.unsealed)
			}
			for _, msg := range validation.IsValidLabelValue(got.Labels[v1alpha1.LabelProfile]) {
				t.Errorf("profile label: %s", msg)
			}
			t.Logf("%d containers: review %d bytes, patch %d bytes, %d operations, annotations %d bytes",
				len(want), len(body), len(resp.Response.Patch), len(patch), annotationBytes(got.Annotations))

			code, vresp := post(t, h, PathValidatePods, reviewWith(t, op, sub, patched))
			if code != http.StatusOK || vresp.Response == nil || !vresp.Response.Allowed {
				t.Fatalf("the validating webhook refuses the pod podarmor mutated: %d %+v", code, vresp.Response)
			}
		})
	}
}

type confinedContainer struct {
	name string
	sc   *corev1.SecurityContext
}

// checkApplied compares got with what admission.Apply makes of the pod in raw, and
// returns the containers the review was about.
func checkApplied(t *testing.T, raw []byte, got *corev1.Pod, ephemeral bool) []confinedContainer {
	t.Helper()
	var want corev1.Pod
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	planner := &admission.Planner{Store: store{armor: []*v1alpha1.ArmorPolicy{fuzzPolicy()}}}
	plan, err := planner.Plan(admission.Request{Pod: &want, Namespace: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		EphemeralOnly: ephemeral, AppArmorField: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := admission.Apply(&want, plan, true, ephemeral); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got, &want) {
		t.Fatal("the patched pod differs from what admission.Apply makes of it")
	}
	var out []confinedContainer
	if !ephemeral {
		for _, c := range append(got.Spec.InitContainers, got.Spec.Containers...) {
			out = append(out, confinedContainer{c.Name, c.SecurityContext})
		}
	}
	for _, c := range got.Spec.EphemeralContainers {
		out = append(out, confinedContainer{c.Name, c.SecurityContext})
	}
	return out
}

func reviewWith(t *testing.T, op admissionv1.Operation, sub string, raw []byte) []byte {
	t.Helper()
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "v", Kind: podGVK, Operation: op, SubResource: sub, Namespace: "shop",
			Object: runtime.RawExtension{Raw: raw}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func annotationBytes(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n
}
