// Package server is the HTTP side of podarmor-webhook: kubewebhook handlers for the pod
// mutating and validating webhooks and the policy validating webhook, and the health
// endpoints. The decisions themselves are in webhook/admission and policies/validation.
//
// The pod mutating webhook is on every pod create of an opted-in namespace, so it is
// kept lean: the pod is decoded once, and the patch covers only the fields podarmor
// edits (podPatch) instead of diffing whole objects.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	kwhhttp "github.com/slok/kubewebhook/v2/pkg/http"
	"github.com/slok/kubewebhook/v2/pkg/model"
	"github.com/slok/kubewebhook/v2/pkg/webhook/validating"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "sigs.k8s.io/json"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
	"github.com/podarmor/podarmor/policies/validation"
	"github.com/podarmor/podarmor/webhook/admission"
	"github.com/podarmor/podarmor/webhook/policy"
)

// The paths the webhook configurations point at.
const (
	PathMutatePods       = "/mutate-pods"
	PathValidatePods     = "/validate-pods"
	PathValidatePolicies = "/validate-policies"
)

// Metrics records what the webhook does; webhook/metrics implements it for Prometheus.
type Metrics interface {
	// Review records one HTTP request to a webhook: how long it took and whether it was
	// answered, malformed (bad-request) or failed (error).
	Review(webhook, httpResult string, d time.Duration)
	// Decision records the answer to one admission review: the operation (create,
	// update, delete) and the result (mutated, unchanged, allowed, denied, error).
	Decision(webhook, operation, result string)
	// Outcome records what the validating webhook decided for a pod.
	Outcome(o admission.Outcome)
}

// ConflictReporter records on the policies that several ArmorPolicies select one pod.
type ConflictReporter interface {
	Report(choice policy.Choice, pod string)
}

// Config wires the server.
type Config struct {
	Planner *admission.Planner
	// Namespace returns a namespace, from the cache or, on a miss, from the API server
	// (a pod can arrive right after its namespace is labelled).
	Namespace func(ctx context.Context, name string) (*corev1.Namespace, error)
	// AppArmorField reports whether the API server has securityContext.appArmorProfile.
	AppArmorField func() bool
	// Compile is what policy validation compiles with (catalog, cluster addresses).
	Compile compile.Options
	// Ready reports whether the webhook can answer correctly (caches synced,
	// certificate loaded); /readyz serves it.
	Ready     func() bool
	Metrics   Metrics
	Conflicts ConflictReporter
	Logger    *slog.Logger
}

func (c *Config) defaults() error {
	switch {
	case c.Planner == nil:
		return errors.New("server: Planner is required")
	case c.Namespace == nil:
		return errors.New("server: Namespace is required")
	case c.AppArmorField == nil:
		return errors.New("server: AppArmorField is required")
	case c.Ready == nil:
		return errors.New("server: Ready is required")
	case c.Metrics == nil:
		return errors.New("server: Metrics is required")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Conflicts == nil {
		c.Conflicts = noConflicts{}
	}
	return nil
}

type noConflicts struct{}

func (noConflicts) Report(policy.Choice, string) {}

type server struct{ Config }

// New returns the webhook's HTTP handler: the three webhooks, /healthz and /readyz.
func New(cfg Config) (http.Handler, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &server{cfg}
	log := slogger{l: cfg.Logger}
	mutate := podMutator{s}
	validatePods := objectValidator{s: s, id: "validate-pods", decode: decodePod, validate: s.validatePod}
	validatePolicies := objectValidator{s: s, id: "validate-policies", decode: decodeUnstructured, validate: s.validatePolicy}
	mux := http.NewServeMux()
	for path, wh := range map[string]any{PathMutatePods: mutate, PathValidatePods: validatePods, PathValidatePolicies: validatePolicies} {
		h, err := kwhhttp.HandlerFor(kwhhttp.HandlerConfig{Webhook: wh.(interface {
			ID() string
			Kind() model.WebhookKind
			Review(context.Context, model.AdmissionReview) (model.AdmissionResponse, error)
		}), Logger: log})
		if err != nil {
			return nil, fmt.Errorf("handler %s: %w", path, err)
		}
		mux.Handle(path, s.measure(path, guard(h)))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready: caches not synced or no certificate yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux, nil
}

// request turns an admission review of a pod into an admission.Request.
func (s *server) request(ctx context.Context, ar *model.AdmissionReview, pod *corev1.Pod) (admission.Request, error) {
	ns, err := s.Namespace(ctx, ar.Namespace)
	if err != nil {
		return admission.Request{}, fmt.Errorf("namespace %s: %w", ar.Namespace, err)
	}
	return admission.Request{
		Pod:           pod,
		Namespace:     ns,
		EphemeralOnly: subResource(ar) == "ephemeralcontainers",
		AppArmorField: s.AppArmorField(),
	}, nil
}

func subResource(ar *model.AdmissionReview) string {
	if r, ok := ar.OriginalAdmissionReview.(*admissionv1.AdmissionReview); ok && r.Request != nil {
		return r.Request.SubResource
	}
	return ""
}

// podMutator is the pod mutating webhook. It is a kubewebhook webhook of its own rather
// than kubewebhook's mutating webhook, which can neither refuse a pod nor patch less
// than the whole object (see podPatch).
type podMutator struct{ s *server }

func (podMutator) ID() string              { return "mutate-pods" }
func (podMutator) Kind() model.WebhookKind { return model.WebhookKindMutating }

// Review plans the pod and applies the plan, or refuses the pod with the plan's reason.
// It answers every pod of an opted-in namespace, so the refusal reaches the client here,
// before any other webhook runs. An error fails the review, and with failurePolicy Fail
// the API server refuses the pod.
func (m podMutator) Review(ctx context.Context, ar model.AdmissionReview) (res model.AdmissionResponse, err error) {
	s := m.s
	result := "error"
	defer func() { s.Metrics.Decision("mutate-pods", string(ar.Operation), result) }()
	obj, err := decodePod(ar.NewObjectRaw)
	if err != nil {
		result = "denied"
		return &model.ValidatingAdmissionResponse{ID: ar.ID, Allowed: false, Message: "podarmor: " + err.Error()}, nil
	}
	pod := obj.(*corev1.Pod)
	req, err := s.request(ctx, &ar, pod)
	if err != nil {
		return nil, err
	}
	plan, err := s.Planner.Plan(req)
	if err != nil {
		return nil, err
	}
	// Outcomes are counted once per pod: at the first invocation, not when the API
	// server invokes the webhook again because another one changed the pod after it (the
	// pod then carries podarmor's seal), nor for dry runs.
	if !ar.DryRun && (req.EphemeralOnly || pod.Annotations[admission.AnnotationSeal] == "") {
		s.record(plan, &ar, pod)
	}
	if plan.Reject != "" {
		result = "denied"
		return &model.ValidatingAdmissionResponse{ID: ar.ID, Allowed: false, Message: "podarmor: " + plan.Reject, Warnings: plan.Warnings}, nil
	}
	before := pod.DeepCopy()
	if err := admission.Apply(pod, plan, req.AppArmorField, req.EphemeralOnly); err != nil {
		return nil, err
	}
	// The API server would refuse the pod for it, with a message that does not say why.
	if err := apivalidation.ValidateAnnotationsSize(pod.Annotations); err != nil {
		result = "denied"
		return &model.ValidatingAdmissionResponse{ID: ar.ID, Allowed: false, Warnings: plan.Warnings,
			Message: fmt.Sprintf("podarmor cannot confine this pod: metadata.annotations: with the profiles of its %d containers, %v", len(pod.Spec.InitContainers)+len(pod.Spec.Containers)+len(pod.Spec.EphemeralContainers), err)}, nil
	}
	ops := podPatch(before, pod)
	result = "mutated"
	if len(ops) == 0 {
		// kubewebhook always sends a patch type, and the API server wants a patch
		// with it: an empty one.
		result, ops = "unchanged", []operation{}
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encode patch: %w", err)
	}
	return &model.MutatingAdmissionResponse{ID: ar.ID, JSONPatchPatch: patch, Warnings: plan.Warnings}, nil
}

// objectValidator is a validating webhook that decodes the review's object itself:
// kubewebhook's validating webhook fails the review (HTTP 500) when the object does not
// decode, where a refusal that says what is wrong with it is the answer.
type objectValidator struct {
	s        *server
	id       string
	decode   func(raw []byte) (metav1.Object, error)
	validate validating.ValidatorFunc
}

func (v objectValidator) ID() string            { return v.id }
func (objectValidator) Kind() model.WebhookKind { return model.WebhookKindValidating }

// Review decodes the object (the old one on delete, when the new one is gone), refuses it
// when it does not decode, and otherwise answers what validate says.
func (v objectValidator) Review(ctx context.Context, ar model.AdmissionReview) (model.AdmissionResponse, error) {
	raw := ar.NewObjectRaw
	if ar.Operation == model.OperationDelete {
		raw = ar.OldObjectRaw
	}
	obj, err := v.decode(raw)
	if err != nil {
		v.s.Metrics.Decision(v.id, string(ar.Operation), "denied")
		return &model.ValidatingAdmissionResponse{ID: ar.ID, Allowed: false, Message: "podarmor: " + err.Error()}, nil
	}
	res, err := v.validate(ctx, &ar, obj)
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, fmt.Errorf("%s: no result", v.id)
	}
	return &model.ValidatingAdmissionResponse{ID: ar.ID, Allowed: res.Valid, Message: res.Message, Warnings: res.Warnings}, nil
}

// decodePod decodes a review's object as a pod, as the API server encodes it.
func decodePod(raw []byte) (metav1.Object, error) {
	pod := &corev1.Pod{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, pod); err != nil {
		return nil, fmt.Errorf("the review's object is not a pod: %w", err)
	}
	return pod, nil
}

// decodeUnstructured decodes a review's object as any Kubernetes object.
func decodeUnstructured(raw []byte) (metav1.Object, error) {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("the review's object is not a Kubernetes object: %w", err)
	}
	return u, nil
}

// record counts a plan's outcomes and reports a conflict between policies.
func (s *server) record(plan *admission.Plan, ar *model.AdmissionReview, pod *corev1.Pod) {
	for _, o := range plan.Outcomes {
		s.Metrics.Outcome(o)
	}
	if len(plan.Choice.Conflicts) > 0 {
		s.Conflicts.Report(plan.Choice, ar.Namespace+"/"+podName(ar, pod))
	}
}

// validatePod refuses a pod that does not carry what its policy asks for. The API
// server calls it only for a pod whose confinement differs from the seal the mutating
// webhook wrote (see webhook/registration): another webhook or policy changed the pod
// after podarmor, or added a debug container.
func (s *server) validatePod(ctx context.Context, ar *model.AdmissionReview, obj metav1.Object) (res *validating.ValidatorResult, err error) {
	defer func() { s.Metrics.Decision("validate-pods", string(ar.Operation), verdict(res, err)) }()
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, fmt.Errorf("not a pod: %T", obj)
	}
	req, err := s.request(ctx, ar, pod)
	if err != nil {
		return deny("podarmor cannot confine this pod: %v", err), nil
	}
	plan, err := s.Planner.Plan(req)
	if err != nil {
		return deny("podarmor cannot confine this pod: %v", err), nil
	}
	if plan.Reject != "" {
		// The mutating webhook refuses such a pod first, unless the pod or the
		// policies changed since.
		if !ar.DryRun {
			s.record(plan, ar, pod)
		}
		return deny("podarmor: %s", plan.Reject), nil
	}
	if err := admission.Check(pod, plan, req.AppArmorField, req.EphemeralOnly); err != nil {
		if !ar.DryRun {
			s.Metrics.Outcome(admission.OutcomeRejectedUnconfined)
		}
		return deny("podarmor: %v", err), nil
	}
	return &validating.ValidatorResult{Valid: true}, nil
}

func podName(ar *model.AdmissionReview, pod *corev1.Pod) string {
	switch {
	case ar.Name != "":
		return ar.Name
	case pod.GenerateName != "":
		return pod.GenerateName + "*"
	}
	return pod.Name
}

// validatePolicy runs the one policy validation and answers with its field paths.
func (s *server) validatePolicy(_ context.Context, ar *model.AdmissionReview, obj metav1.Object) (res *validating.ValidatorResult, err error) {
	defer func() { s.Metrics.Decision("validate-policies", string(ar.Operation), verdict(res, err)) }()
	if ar.Operation == model.OperationDelete {
		return &validating.ValidatorResult{Valid: true}, nil
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("not an unstructured object: %T", obj)
	}
	var vr validation.Result
	switch kind := u.GetKind(); kind {
	case "ArmorPolicy":
		var p v1alpha1.ArmorPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			return deny("decode ArmorPolicy: %v", err), nil
		}
		vr = validation.ArmorPolicy(&p, s.Compile)
	case "ClusterArmorPolicy":
		var p v1alpha1.ClusterArmorPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			return deny("decode ClusterArmorPolicy: %v", err), nil
		}
		vr = validation.ClusterArmorPolicy(&p, s.Compile)
	default:
		return deny("kind %q is not a podarmor policy", kind), nil
	}
	if len(vr.Errors) > 0 {
		msgs := make([]string, len(vr.Errors))
		for i, e := range vr.Errors {
			msgs[i] = e.Error()
		}
		return &validating.ValidatorResult{Valid: false, Message: strings.Join(msgs, "; "), Warnings: vr.Warnings}, nil
	}
	return &validating.ValidatorResult{Valid: true, Warnings: vr.Warnings}, nil
}

func verdict(res *validating.ValidatorResult, err error) string {
	switch {
	case err != nil:
		return "error"
	case res.Valid:
		return "allowed"
	}
	return "denied"
}

func deny(format string, args ...any) *validating.ValidatorResult {
	return &validating.ValidatorResult{Valid: false, Message: fmt.Sprintf(format, args...)}
}

// measure records every review's path, operation, result and latency.
func (s *server) measure(path string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		result := "answered"
		switch {
		case rec.status >= 500:
			result = "error"
		case rec.status >= 400:
			result = "bad-request"
		}
		s.Metrics.Review(strings.TrimPrefix(path, "/"), result, time.Since(start))
	})
}

// GCPercent is the garbage collector's target percentage podarmor-webhook runs with
// (--gc-percent). The webhook's live heap is small and every review allocates, so with
// Go's default of 100 a collection starts every hundred-odd reviews, and the reviews
// that meet one make the tail: p99 1.1-1.4 ms against 0.3 ms at 400 in the handler
// benchmark on 2 CPUs. The price is a heap up to five times the live data instead of
// twice, a few tens of MB; set GOMEMLIMIT too under a tight memory limit.
const GCPercent = 400

// MaxReviewBytes bounds the body of an admission review: the API server's own request
// limit (3 MiB) plus room for the old object of an update.
const MaxReviewBytes = 8 << 20

// guard reads the body (413 over MaxReviewBytes) and turns a panic anywhere below into
// an answer instead of a dead connection: 400 when the body is no AdmissionReview with a
// request, 500 otherwise. kubewebhook answers 400 to a body that is not JSON or not an
// AdmissionReview, but dereferences a missing request; that is the panic this catches.
// The body is parsed here only after a panic: parsing every review up front cost a
// quarter of the handler's time.
func guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "admission reviews are POSTed", http.StatusMethodNotAllowed)
			return
		}
		body, err := readBody(r)
		if err != nil {
			http.Error(w, fmt.Sprintf("read body: %v", err), http.StatusBadRequest)
			return
		}
		if len(body) > MaxReviewBytes {
			http.Error(w, fmt.Sprintf("body over %d bytes", MaxReviewBytes), http.StatusRequestEntityTooLarge)
			return
		}
		defer func() {
			if p := recover(); p != nil {
				if msg := malformed(body); msg != "" {
					http.Error(w, msg, http.StatusBadRequest)
					return
				}
				http.Error(w, fmt.Sprintf("internal error: %v", p), http.StatusInternalServerError)
			}
		}()
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

// readBody reads up to MaxReviewBytes+1 bytes of the body into one buffer of the
// announced length.
func readBody(r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	if n := r.ContentLength; n > 0 && n <= MaxReviewBytes {
		buf.Grow(int(n) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(io.LimitReader(r.Body, MaxReviewBytes+1))
	return buf.Bytes(), err
}

// malformed says why body is not an AdmissionReview with a request, or "" if it is one.
func malformed(body []byte) string {
	var head struct {
		APIVersion string           `json:"apiVersion"`
		Kind       string           `json:"kind"`
		Request    *json.RawMessage `json:"request"`
	}
	switch err := json.Unmarshal(body, &head); {
	case err != nil:
		return fmt.Sprintf("not a JSON AdmissionReview: %v", err)
	case head.Kind != "AdmissionReview" || (head.APIVersion != "admission.k8s.io/v1" && head.APIVersion != "admission.k8s.io/v1beta1"):
		return fmt.Sprintf("want an admission.k8s.io/v1 AdmissionReview, got %s %s", head.APIVersion, head.Kind)
	case head.Request == nil:
		return "AdmissionReview without a request"
	}
	return ""
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}
