package framework

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MutatingWebhookOptions describe a mutating webhook for pod creation served by the test
// itself, to stand for another admission webhook of a cluster.
type MutatingWebhookOptions struct {
	// Name of the MutatingWebhookConfiguration; its webhook is Name + ".e2e.podarmor.io".
	// The API server calls configurations in the order of their names ("podarmor" is
	// podarmor's own). Required.
	Name string
	// NamespaceLabels select the namespaces whose pods reach the webhook. Required, so
	// that the webhook cannot reach other tests' pods.
	NamespaceLabels map[string]string
	// Reinvoke sets reinvocationPolicy IfNeeded: the API server calls the webhook again
	// when a later webhook changed the pod.
	Reinvoke bool
	// Mutate returns a JSON patch (RFC 6902) for a pod, or nil to leave it alone.
	Mutate func(pod *corev1.Pod) ([]byte, error)
}

// StartMutatingWebhook serves opts.Mutate over HTTPS (HTTP/1.1) from the test process
// and registers it for pod creation, failurePolicy Fail. The API server picks the
// configuration up within a second or so: wait for its effect with WaitFor.
// t.Cleanup deletes the configuration and stops the server.
func (cp *ControlPlane) StartMutatingWebhook(t testing.TB, opts MutatingWebhookOptions) {
	t.Helper()
	if opts.Name == "" || len(opts.NamespaceLabels) == 0 || opts.Mutate == nil {
		t.Fatal("StartMutatingWebhook: Name, NamespaceLabels and Mutate are required")
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		body, err := io.ReadAll(r.Body)
		if err == nil {
			err = json.Unmarshal(body, &review)
		}
		if err != nil || review.Request == nil {
			http.Error(w, fmt.Sprintf("not an admission review: %v", err), http.StatusBadRequest)
			return
		}
		resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		var pod corev1.Pod
		err = json.Unmarshal(review.Request.Object.Raw, &pod)
		if err == nil {
			resp.Patch, err = opts.Mutate(&pod)
		}
		if err != nil {
			resp.Allowed, resp.Result = false, &metav1.Status{Message: err.Error(), Code: http.StatusInternalServerError}
		} else if resp.Patch != nil {
			pt := admissionv1.PatchTypeJSONPatch
			resp.PatchType = &pt
		}
		review.Request, review.Response = nil, resp
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&review)
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)

	url := srv.URL + "/mutate"
	scope := admissionregistrationv1.NamespacedScope
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	reinvoke := admissionregistrationv1.NeverReinvocationPolicy
	if opts.Reinvoke {
		reinvoke = admissionregistrationv1.IfNeededReinvocationPolicy
	}
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: opts.Name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: opts.Name + ".e2e.podarmor.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL:      &url,
				CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}, Scope: &scope},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: opts.NamespaceLabels},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			ReinvocationPolicy:      &reinvoke,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	configs := cp.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := configs.Create(context.Background(), cfg, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create MutatingWebhookConfiguration %s: %v", opts.Name, err)
	}
	t.Cleanup(func() {
		if err := configs.Delete(context.Background(), opts.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete MutatingWebhookConfiguration %s: %v", opts.Name, err)
		}
	})
}
