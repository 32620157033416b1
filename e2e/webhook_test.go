package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// webhookEnv is a control plane with podarmor-webhook registered.
type webhookEnv struct {
	cp         *framework.ControlPlane
	wh         *framework.Webhook
	fieldAware bool // the API server has securityContext.appArmorProfile (1.30+)
}

// startWebhookEnv starts a control plane and the webhook. The webhook does not
// aggregate node reports into policy status here: these tests write the status
// themselves (status_test.go tests the aggregation).
func startWebhookEnv(t *testing.T, version string, args ...string) *webhookEnv {
	cp := framework.StartControlPlane(t, framework.Options{Version: version})
	wh := cp.StartWebhook(t, framework.WebhookOptions{Args: append([]string{"--aggregate-policy-status=false"}, args...)})
	return &webhookEnv{cp: cp, wh: wh, fieldAware: !strings.HasPrefix(version, "v1.29")}
}

var ready = v1alpha1.PolicyStatus{Conditions: []metav1.Condition{{
	Type: "Ready", Status: metav1.ConditionTrue, Reason: "LoadedOnAllNodes", Message: "set by the e2e test",
	LastTransitionTime: metav1.Now(),
}}}

func enhanceSpec(app string) v1alpha1.ArmorPolicySpec {
	return v1alpha1.ArmorPolicySpec{
		Target:       v1alpha1.Target{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}},
		Enforcers:    []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor, v1alpha1.EnforcerSeccomp},
		Mode:         v1alpha1.ModeEnhanceProtect,
		BuiltinRules: []v1alpha1.BuiltinRule{{Name: "disallow-write-core-pattern"}},
	}
}

// createPolicy creates an ArmorPolicy and, when status is set, writes it the way the
// enforcers will (the status subresource).
func (e *webhookEnv) createPolicy(t *testing.T, p *v1alpha1.ArmorPolicy, status *v1alpha1.PolicyStatus) *v1alpha1.ArmorPolicy {
	t.Helper()
	if err := e.cp.Client.Create(t.Context(), p); err != nil {
		t.Fatalf("create ArmorPolicy %s: %v", p.Name, err)
	}
	if status != nil {
		p.Status = *status
		p.Status.ObservedGeneration = p.Generation
		if err := e.cp.Client.Status().Update(t.Context(), p); err != nil {
			t.Fatalf("set status of ArmorPolicy %s: %v", p.Name, err)
		}
	}
	return p
}

func (e *webhookEnv) createClusterPolicy(t *testing.T, p *v1alpha1.ClusterArmorPolicy, status *v1alpha1.PolicyStatus) {
	t.Helper()
	if err := e.cp.Client.Create(t.Context(), p); err != nil {
		t.Fatalf("create ClusterArmorPolicy %s: %v", p.Name, err)
	}
	if status != nil {
		p.Status = *status
		p.Status.ObservedGeneration = p.Generation
		if err := e.cp.Client.Status().Update(t.Context(), p); err != nil {
			t.Fatalf("set status of ClusterArmorPolicy %s: %v", p.Name, err)
		}
	}
}

func testPod(ns, app string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: app + "-", Namespace: ns, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
			Containers:     []corev1.Container{{Name: "main", Image: "busybox"}},
		},
	}
}

// dryRun creates pod with dryRun=All and returns what the API server would store.
func (e *webhookEnv) dryRun(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	return e.cp.Clientset.CoreV1().Pods(pod.Namespace).Create(ctx, pod.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
}

// waitForProfile waits until the webhook's caches have caught up with the policies:
// a dry-run create of pod comes back with profile (or refused with a message containing
// refusal, when profile is "").
func (e *webhookEnv) waitForProfile(t *testing.T, pod *corev1.Pod, profile, refusal string) {
	t.Helper()
	framework.WaitFor(t, 30*time.Second, fmt.Sprintf("the webhook to give pod %s profile %q", pod.GenerateName, profile), func(ctx context.Context) (bool, error) {
		got, err := e.dryRun(ctx, pod)
		if profile == "" {
			return err != nil && strings.Contains(err.Error(), refusal), nil
		}
		return err == nil && got.Labels[v1alpha1.LabelProfile] == profile, nil
	})
}

// appArmorOf returns the AppArmor profile a container of the stored pod will run with.
func (e *webhookEnv) appArmorOf(pod *corev1.Pod, c *corev1.Container) string {
	if e.fieldAware {
		if sc := c.SecurityContext; sc != nil && sc.AppArmorProfile != nil && sc.AppArmorProfile.LocalhostProfile != nil {
			return "localhost/" + *sc.AppArmorProfile.LocalhostProfile
		}
	}
	return pod.Annotations["container.apparmor.security.beta.kubernetes.io/"+c.Name]
}

func seccompOf(c *corev1.Container) string {
	if sc := c.SecurityContext; sc != nil && sc.SeccompProfile != nil {
		if sc.SeccompProfile.LocalhostProfile != nil {
			return "localhost/" + *sc.SeccompProfile.LocalhostProfile
		}
		return string(sc.SeccompProfile.Type)
	}
	return ""
}

// TestWebhookAdmission covers what a user meets when creating pods: opt-in, system
// namespaces, precedence, conflicts, init, ephemeral and privileged containers, own
// profiles, dry runs, readiness gating, and policy validation errors.
func TestWebhookAdmission(t *testing.T) {
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			e := startWebhookEnv(t, version, "--default-policy", "baseline")
			ctx := t.Context()
			shop := e.cp.CreateNamespace(t, map[string]string{v1alpha1.LabelEnable: "true", "tier": "frontend"})
			plain := e.cp.CreateNamespace(t, nil)

			web := e.createPolicy(t, &v1alpha1.ArmorPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: shop.Name}, Spec: enhanceSpec("web")}, &ready)
			e.createClusterPolicy(t, &v1alpha1.ClusterArmorPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: "baseline"},
				Spec: v1alpha1.ClusterArmorPolicySpec{ArmorPolicySpec: v1alpha1.ArmorPolicySpec{
					Target:    v1alpha1.Target{Selector: metav1.LabelSelector{}},
					Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor, v1alpha1.EnforcerSeccomp},
					Mode:      v1alpha1.ModeRuntimeDefault,
				}, NamespaceSelector: metav1.LabelSelector{}, Priority: -1000},
			}, &ready)
			e.waitForProfile(t, testPod(shop.Name, "web"), "ap."+shop.Name+".web", "")
			e.waitForProfile(t, testPod(shop.Name, "other"), "cap.baseline", "")

			t.Run("a pod in an opted-in namespace carries its policy's profiles", func(t *testing.T) {
				pod := e.cp.CreatePod(t, testPod(shop.Name, "web"))
				if got, want := pod.Labels[v1alpha1.LabelProfile], "ap."+shop.Name+".web"; got != want {
					t.Errorf("profile label %q, want %q", got, want)
				}
				for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
					if got, want := e.appArmorOf(pod, &c), "localhost/podarmor-ap."+shop.Name+".web"; got != want {
						t.Errorf("container %s: AppArmor %q, want %q", c.Name, got, want)
					}
					if got, want := seccompOf(&c), "localhost/podarmor/ap."+shop.Name+".web.json"; got != want {
						t.Errorf("container %s: seccomp %q, want %q", c.Name, got, want)
					}
				}
				if got := pod.Annotations[v1alpha1.AnnotationPolicy]; !strings.HasPrefix(got, "ArmorPolicy "+shop.Name+"/web@") {
					t.Errorf("policy annotation %q", got)
				}
			})

			t.Run("a pod in a namespace that did not opt in is left alone", func(t *testing.T) {
				pod := e.cp.CreatePod(t, testPod(plain.Name, "web"))
				if pod.Labels[v1alpha1.LabelProfile] != "" || pod.Spec.Containers[0].SecurityContext != nil {
					t.Errorf("pod was mutated: labels %v, securityContext %+v", pod.Labels, pod.Spec.Containers[0].SecurityContext)
				}
			})

			t.Run("system namespaces and podarmor's own are never selected, even when labelled", func(t *testing.T) {
				for _, ns := range []string{"kube-system", framework.WebhookNamespace} {
					e.cp.LabelNamespace(t, ns, map[string]string{v1alpha1.LabelEnable: "true"})
					// A real cluster's controller-manager makes the default account.
					sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}
					if err := e.cp.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
						t.Fatal(err)
					}
					got, err := e.dryRun(ctx, testPod(ns, "web"))
					if err != nil {
						t.Errorf("%s: pod refused: %v", ns, err)
					} else if got.Labels[v1alpha1.LabelProfile] != "" || got.Spec.Containers[0].SecurityContext != nil {
						t.Errorf("%s: pod was mutated", ns)
					}
				}
			})

			t.Run("without a matching namespaced policy the cluster default applies", func(t *testing.T) {
				pod := e.cp.CreatePod(t, testPod(shop.Name, "batch"))
				if got := pod.Labels[v1alpha1.LabelProfile]; got != "cap.baseline" {
					t.Errorf("profile %q, want cap.baseline", got)
				}
				if got := seccompOf(&pod.Spec.Containers[0]); got != string(corev1.SeccompProfileTypeRuntimeDefault) {
					t.Errorf("RuntimeDefault mode gave seccomp %q", got)
				}
			})

			t.Run("a higher-priority cluster policy wins over the default", func(t *testing.T) {
				e.createClusterPolicy(t, &v1alpha1.ClusterArmorPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "frontend"},
					Spec: v1alpha1.ClusterArmorPolicySpec{ArmorPolicySpec: v1alpha1.ArmorPolicySpec{
						Target:    v1alpha1.Target{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "cache"}}},
						Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF},
						Mode:      v1alpha1.ModeEnhanceProtect,
					}, NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": "frontend"}}, Priority: 10},
				}, nil)
				e.waitForProfile(t, testPod(shop.Name, "cache"), "cap.frontend", "")
			})

			t.Run("two namespaced policies: the oldest applies and both record the conflict", func(t *testing.T) {
				e.createPolicy(t, &v1alpha1.ArmorPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web-too", Namespace: shop.Name}, Spec: enhanceSpec("web")}, &ready)
				framework.WaitFor(t, 30*time.Second, "the conflict to be recorded on both policies", func(ctx context.Context) (bool, error) {
					// A real (not dry-run) create reports the conflict.
					if _, err := e.cp.Clientset.CoreV1().Pods(shop.Name).Create(ctx, testPod(shop.Name, "web"), metav1.CreateOptions{}); err != nil {
						return false, err
					}
					for _, name := range []string{"web", "web-too"} {
						p := &v1alpha1.ArmorPolicy{}
						if err := e.cp.Client.Get(ctx, client.ObjectKey{Namespace: shop.Name, Name: name}, p); err != nil {
							return false, err
						}
						c := findCondition(p.Status.Conditions, "Conflict")
						if c == nil || !strings.Contains(c.Message, "the oldest, web, applies") {
							return false, nil
						}
					}
					return true, nil
				})
				pod := e.cp.CreatePod(t, testPod(shop.Name, "web"))
				if got := pod.Labels[v1alpha1.LabelProfile]; got != "ap."+shop.Name+".web" {
					t.Errorf("profile %q: the oldest policy must apply", got)
				}
				// The enforcer's Ready condition survives the webhook's status write.
				p := &v1alpha1.ArmorPolicy{}
				if err := e.cp.Client.Get(ctx, client.ObjectKeyFromObject(web), p); err != nil {
					t.Fatal(err)
				}
				if findCondition(p.Status.Conditions, "Ready") == nil {
					t.Error("the Conflict condition replaced the Ready condition")
				}
			})

			t.Run("a container with its own profiles keeps them, recorded", func(t *testing.T) {
				p := testPod(shop.Name, "web")
				p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined},
				}
				pod := e.cp.CreatePod(t, p)
				if got := seccompOf(&pod.Spec.Containers[0]); got != "Unconfined" {
					t.Errorf("own seccomp profile replaced by %q", got)
				}
				if got := pod.Annotations[v1alpha1.AnnotationDecisions]; !strings.Contains(got, `"main":["kept-own-seccomp"]`) {
					t.Errorf("decision not recorded: %q", got)
				}
			})

			t.Run("a privileged container is confined too", func(t *testing.T) {
				p := testPod(shop.Name, "web")
				p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
				pod := e.cp.CreatePod(t, p)
				c := &pod.Spec.Containers[0]
				if e.appArmorOf(pod, c) == "" || seccompOf(c) == "" {
					t.Errorf("privileged container not confined: %+v", c.SecurityContext)
				}
			})

			t.Run("a dry-run create is mutated and stores nothing", func(t *testing.T) {
				p := testPod(shop.Name, "web")
				p.Name, p.GenerateName = "dry", ""
				got, err := e.dryRun(ctx, p)
				if err != nil || got.Labels[v1alpha1.LabelProfile] == "" {
					t.Fatalf("dry run: %v, labels %v", err, got.Labels)
				}
				if err := e.cp.Client.Get(ctx, client.ObjectKey{Namespace: shop.Name, Name: "dry"}, &corev1.Pod{}); err == nil {
					t.Error("a dry-run pod was stored")
				}
			})

			t.Run("a debug container of a sandboxed pod is confined", func(t *testing.T) {
				pod := e.cp.CreatePod(t, testPod(shop.Name, "web"))
				pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, corev1.EphemeralContainer{
					EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox", TerminationMessagePolicy: corev1.TerminationMessageReadFile, ImagePullPolicy: corev1.PullIfNotPresent},
				})
				got, err := e.cp.Clientset.CoreV1().Pods(shop.Name).UpdateEphemeralContainers(ctx, pod.Name, pod, metav1.UpdateOptions{})
				if err != nil {
					t.Fatalf("add ephemeral container: %v", err)
				}
				ec := got.Spec.EphemeralContainers[0].SecurityContext
				if ec == nil || ec.SeccompProfile == nil || *ec.SeccompProfile.LocalhostProfile != "podarmor/ap."+shop.Name+".web.json" {
					t.Errorf("debug container seccomp: %+v", ec)
				}
				if e.fieldAware && (ec == nil || ec.AppArmorProfile == nil) {
					t.Errorf("debug container AppArmor: %+v", ec)
				}
			})

			t.Run("a policy not ready on every node refuses pods, with the reason", func(t *testing.T) {
				e.createPolicy(t, &v1alpha1.ArmorPolicy{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: shop.Name}, Spec: enhanceSpec("api")}, nil)
				e.waitForProfile(t, testPod(shop.Name, "api"), "", "is not loaded on every node yet")
				_, err := e.cp.Clientset.CoreV1().Pods(shop.Name).Create(ctx, testPod(shop.Name, "api"), metav1.CreateOptions{})
				if err == nil || !strings.Contains(err.Error(), "whenNotReady") {
					t.Errorf("pod of a not-ready policy: %v", err)
				}
			})

			t.Run("a policy not ready that admits with BPF only labels the pod without node profiles", func(t *testing.T) {
				spec := enhanceSpec("jobs")
				spec.Admission.WhenNotReady = v1alpha1.NotReadyAdmitBPFOnly
				e.createPolicy(t, &v1alpha1.ArmorPolicy{ObjectMeta: metav1.ObjectMeta{Name: "jobs", Namespace: shop.Name}, Spec: spec}, nil)
				e.waitForProfile(t, testPod(shop.Name, "jobs"), "ap."+shop.Name+".jobs", "")
				pod := e.cp.CreatePod(t, testPod(shop.Name, "jobs"))
				c := &pod.Spec.Containers[0]
				if e.appArmorOf(pod, c) != "" || seccompOf(c) != string(corev1.SeccompProfileTypeRuntimeDefault) {
					t.Errorf("BPF-only pod: AppArmor %q, seccomp %q", e.appArmorOf(pod, c), seccompOf(c))
				}
				if !strings.Contains(pod.Annotations[v1alpha1.AnnotationDecisions], "bpf-only-not-ready") {
					t.Errorf("decision not recorded: %v", pod.Annotations)
				}
			})

			t.Run("a pod opts out only where its policy allows it, and the opt-out is recorded", func(t *testing.T) {
				spec := enhanceSpec("legacy")
				spec.Admission.AllowOptOut = true
				e.createPolicy(t, &v1alpha1.ArmorPolicy{ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: shop.Name}, Spec: spec}, &ready)
				out := testPod(shop.Name, "legacy")
				out.Annotations = map[string]string{v1alpha1.AnnotationOptOut: "true"}
				framework.WaitFor(t, 30*time.Second, "the webhook to honour the opt-out", func(ctx context.Context) (bool, error) {
					got, err := e.dryRun(ctx, out)
					return err == nil && strings.Contains(got.Annotations[v1alpha1.AnnotationDecisions], `"opted-out"`), nil
				})
				pod := e.cp.CreatePod(t, out)
				if pod.Labels[v1alpha1.LabelProfile] != "" || pod.Spec.Containers[0].SecurityContext != nil {
					t.Errorf("an opted-out pod was confined: %v %+v", pod.Labels, pod.Spec.Containers[0].SecurityContext)
				}
				refused := testPod(shop.Name, "web")
				refused.Annotations = map[string]string{v1alpha1.AnnotationOptOut: "true"}
				pod = e.cp.CreatePod(t, refused)
				if pod.Labels[v1alpha1.LabelProfile] == "" || !strings.Contains(pod.Annotations[v1alpha1.AnnotationDecisions], "opt-out-refused") {
					t.Errorf("an opt-out the policy does not allow: labels %v, annotations %v", pod.Labels, pod.Annotations)
				}
			})

			t.Run("an invalid policy is refused with the field path", func(t *testing.T) {
				bad := &v1alpha1.ArmorPolicy{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: shop.Name}, Spec: enhanceSpec("x")}
				bad.Spec.CustomRules = &v1alpha1.CustomRules{Files: []v1alpha1.FileRule{{Paths: []string{"/etc//passwd"}, Permissions: []v1alpha1.FilePermission{"write"}}}}
				err := e.cp.Client.Create(ctx, bad)
				if err == nil || !strings.Contains(err.Error(), "spec.customRules.files[0].paths[0]") || !strings.Contains(err.Error(), "empty path component") {
					t.Errorf("invalid policy: %v", err)
				}
				bad.Spec.CustomRules = nil
				bad.Spec.BuiltinRules = []v1alpha1.BuiltinRule{{Name: "no-such-rule"}}
				err = e.cp.Client.Create(ctx, bad)
				if err == nil || !strings.Contains(err.Error(), `spec.builtinRules[0].name: Not found: "no-such-rule"`) {
					t.Errorf("unknown built-in rule: %v", err)
				}
			})

			t.Run("a webhook that strips the profiles after podarmor gets the pod refused, one that changes something else does not", func(t *testing.T) {
				// Both run after podarmor (configurations are called in name order) and
				// again after podarmor's reinvocation, so the stripper has the last word.
				strip := e.cp.CreateNamespace(t, map[string]string{v1alpha1.LabelEnable: "true", "e2e.podarmor.io/after": "strip"})
				touch := e.cp.CreateNamespace(t, map[string]string{v1alpha1.LabelEnable: "true", "e2e.podarmor.io/after": "touch"})
				e.cp.StartMutatingWebhook(t, framework.MutatingWebhookOptions{
					Name: "zz-strip-seccomp", NamespaceLabels: map[string]string{"e2e.podarmor.io/after": "strip"}, Reinvoke: true,
					Mutate: func(p *corev1.Pod) ([]byte, error) {
						if sc := p.Spec.Containers[0].SecurityContext; sc == nil || sc.SeccompProfile == nil {
							return nil, nil
						}
						return []byte(`[{"op":"remove","path":"/spec/containers/0/securityContext/seccompProfile"}]`), nil
					},
				})
				e.cp.StartMutatingWebhook(t, framework.MutatingWebhookOptions{
					Name: "zz-touch", NamespaceLabels: map[string]string{"e2e.podarmor.io/after": "touch"}, Reinvoke: true,
					Mutate: func(p *corev1.Pod) ([]byte, error) {
						if p.Labels["touched"] != "" {
							return nil, nil
						}
						return []byte(`[{"op":"add","path":"/metadata/labels/touched","value":"yes"}]`), nil
					},
				})
				framework.WaitFor(t, 30*time.Second, "both webhooks to be called", func(ctx context.Context) (bool, error) {
					_, err := e.dryRun(ctx, testPod(strip.Name, "web"))
					got, _ := e.dryRun(ctx, testPod(touch.Name, "web"))
					return err != nil && got != nil && got.Labels["touched"] == "yes", nil
				})

				_, validated0 := webhookCalls(t, e.wh)
				pod := e.cp.CreatePod(t, testPod(touch.Name, "web"))
				if pod.Labels["touched"] != "yes" || pod.Labels[v1alpha1.LabelProfile] != "cap.baseline" || seccompOf(&pod.Spec.Containers[0]) == "" {
					t.Errorf("pod changed by another webhook: labels %v, securityContext %+v", pod.Labels, pod.Spec.Containers[0].SecurityContext)
				}
				if _, validated := webhookCalls(t, e.wh); validated != validated0 {
					t.Errorf("the validating webhook was called %d times for a pod whose confinement nothing changed", validated-validated0)
				}

				_, err := e.cp.Clientset.CoreV1().Pods(strip.Name).Create(ctx, testPod(strip.Name, "web"), metav1.CreateOptions{})
				if err == nil || !strings.Contains(err.Error(), "does not carry the AppArmor and seccomp profiles") {
					t.Errorf("a pod stripped of its seccomp profile after podarmor: %v", err)
				}
				if _, validated := webhookCalls(t, e.wh); validated != validated0+1 {
					t.Errorf("the validating webhook was called %d times, want once for the stripped pod", validated-validated0)
				}
			})

			t.Run("the metrics count what happened", func(t *testing.T) {
				// Exactly, for every series, across a known set of requests: one pod
				// confined by the cluster default, one pod of a namespace that did not
				// opt in (no review), one invalid policy refused. The cache holds every
				// policy.
				before := webhookSeries(t, e.wh.Metrics(t))
				e.cp.CreatePod(t, testPod(shop.Name, "other"))
				e.cp.CreatePod(t, testPod(plain.Name, "web"))
				bad := &v1alpha1.ArmorPolicy{ObjectMeta: metav1.ObjectMeta{Name: "bad-metrics", Namespace: shop.Name}, Spec: enhanceSpec("x")}
				bad.Spec.BuiltinRules = []v1alpha1.BuiltinRule{{Name: "no-such-rule"}}
				if err := e.cp.Client.Create(ctx, bad); err == nil {
					t.Fatal("a policy with an unknown built-in rule was admitted")
				}
				after := webhookSeries(t, e.wh.Metrics(t))
				want := map[string]float64{
					`podarmor_webhook_admission_reviews_total{operation="create",result="mutated",webhook="mutate-pods"}`:      1,
					`podarmor_webhook_admission_reviews_total{operation="create",result="denied",webhook="validate-policies"}`: 1,
					`podarmor_webhook_http_requests_total{result="answered",webhook="mutate-pods"}`:                            1,
					`podarmor_webhook_http_requests_total{result="answered",webhook="validate-policies"}`:                      1,
					`podarmor_webhook_pod_outcomes_total{outcome="confined"}`:                                                  1,
					`podarmor_webhook_request_duration_seconds_count{webhook="mutate-pods"}`:                                   1,
					`podarmor_webhook_request_duration_seconds_count{webhook="validate-policies"}`:                             1,
				}
				for series := range mergeKeys(before, after, want) {
					if strings.Contains(series, "_bucket{") || strings.Contains(series, "_sum{") || !strings.HasPrefix(series, "podarmor_webhook_") ||
						strings.HasPrefix(series, "podarmor_webhook_policy_cache_policies") {
						continue
					}
					if got := after[series] - before[series]; got != want[series] {
						t.Errorf("%s went up by %v, want %v", series, got, want[series])
					}
				}
				var armor v1alpha1.ArmorPolicyList
				var clusterArmor v1alpha1.ClusterArmorPolicyList
				if err := e.cp.Client.List(ctx, &armor); err != nil {
					t.Fatal(err)
				}
				if err := e.cp.Client.List(ctx, &clusterArmor); err != nil {
					t.Fatal(err)
				}
				if got, want := after["podarmor_webhook_policy_cache_policies"], float64(len(armor.Items)+len(clusterArmor.Items)); got != want {
					t.Errorf("podarmor_webhook_policy_cache_policies = %v, want %v (the policies in the API server)", got, want)
				}
				// The binary serves the Go and process collectors too.
				for _, series := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_start_time_seconds", "process_resident_memory_bytes"} {
					if after[series] <= 0 {
						t.Errorf("%s = %v: the webhook binary does not serve the Go and process collectors", series, after[series])
					}
				}

				m := e.wh.Metrics(t)
				for _, want := range []string{
					`podarmor_webhook_admission_reviews_total{operation="create",result="mutated",webhook="mutate-pods"}`,
					`podarmor_webhook_admission_reviews_total{operation="create",result="denied",webhook="validate-policies"}`,
					`podarmor_webhook_pod_outcomes_total{outcome="kept-own-seccomp"} 1`,
					`podarmor_webhook_pod_outcomes_total{outcome="rejected-unconfined"} 1`,
					`podarmor_webhook_request_duration_seconds_bucket{webhook="mutate-pods",le="0.0001"}`,
				} {
					if !strings.Contains(m, want) {
						t.Errorf("metrics lack %s", want)
					}
				}
			})
		})
	}
}

func findCondition(cs []metav1.Condition, t string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return nil
}

// TestWebhookFailure shows the failure behaviour: with the webhook down, pods of
// opted-in namespaces are refused and every other pod is created; and certificate
// rotation under a stream of creates loses none.
func TestWebhookFailure(t *testing.T) {
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			// Serving certificates live 30 s and are replaced every 20 s; the CA lives 60 s
			// and is replaced after 40 s, trusted next to the old one for 5 s before it
			// signs and the old one trusted 5 s after: all within the 70 s stream below.
			e := startWebhookEnv(t, version, "--default-policy", "baseline", "--tls-serving-validity", "30s", "--tls-ca-validity", "60s", "--tls-overlap", "5s")
			shop := e.cp.CreateNamespace(t, map[string]string{v1alpha1.LabelEnable: "true"})
			plain := e.cp.CreateNamespace(t, nil)
			e.createClusterPolicy(t, &v1alpha1.ClusterArmorPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: "baseline"},
				Spec: v1alpha1.ClusterArmorPolicySpec{ArmorPolicySpec: v1alpha1.ArmorPolicySpec{
					Target:    v1alpha1.Target{Selector: metav1.LabelSelector{}},
					Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerSeccomp},
					Mode:      v1alpha1.ModeRuntimeDefault,
				}, NamespaceSelector: metav1.LabelSelector{}},
			}, &ready)
			e.waitForProfile(t, testPod(shop.Name, "web"), "cap.baseline", "")

			t.Run("rotating certificates under a stream of creates loses no request", func(t *testing.T) {
				startCert, startCA := e.servingCert(t), e.caBundle(t)
				var created, failed atomic.Int64
				var firstErr sync.Once
				var errMsg string
				deadline := time.Now().Add(70 * time.Second)
				var wg sync.WaitGroup
				for worker := range 2 {
					wg.Go(func() {
						for i := 0; time.Now().Before(deadline); i++ {
							p := testPod(shop.Name, "web")
							p.GenerateName, p.Name = "", fmt.Sprintf("stream-%d-%d", worker, i)
							_, err := e.cp.Clientset.CoreV1().Pods(shop.Name).Create(t.Context(), p, metav1.CreateOptions{})
							if err != nil {
								failed.Add(1)
								firstErr.Do(func() { errMsg = err.Error() })
								continue
							}
							created.Add(1)
						}
					})
				}
				wg.Wait()
				if failed.Load() > 0 {
					t.Errorf("%d of %d creates failed during rotation; first: %s", failed.Load(), failed.Load()+created.Load(), errMsg)
				}
				if e.servingCert(t) == startCert {
					t.Error("the serving certificate did not rotate during the stream")
				}
				if e.caBundle(t) == startCA {
					t.Error("the CA did not rotate during the stream")
				}
				t.Logf("%d pods created during rotation", created.Load())
			})

			t.Run("with the webhook down opted-in pods are refused and others created", func(t *testing.T) {
				e.wh.Kill(t)
				_, err := e.cp.Clientset.CoreV1().Pods(shop.Name).Create(t.Context(), testPod(shop.Name, "web"), metav1.CreateOptions{})
				if err == nil {
					t.Error("a pod of an opted-in namespace was created while the webhook was down")
				}
				if _, err := e.cp.Clientset.CoreV1().Pods(plain.Name).Create(t.Context(), testPod(plain.Name, "web"), metav1.CreateOptions{}); err != nil {
					t.Errorf("a pod of another namespace was refused while the webhook was down: %v", err)
				}
				e.wh.Start(t)
				if _, err := e.cp.Clientset.CoreV1().Pods(shop.Name).Create(t.Context(), testPod(shop.Name, "web"), metav1.CreateOptions{}); err != nil {
					t.Errorf("after restart: %v", err)
				}
			})
		})
	}
}

// servingCert returns the serving certificate in the webhook's Secret.
func (e *webhookEnv) servingCert(t *testing.T) string {
	t.Helper()
	s, err := e.cp.Clientset.CoreV1().Secrets(framework.WebhookNamespace).Get(t.Context(), "podarmor-webhook-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("webhook Secret: %v", err)
	}
	return string(s.Data["tls.crt"])
}

// caBundle returns the CA bundle the API server trusts for the pod webhook.
func (e *webhookEnv) caBundle(t *testing.T) string {
	t.Helper()
	m, err := e.cp.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(t.Context(), "podarmor", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("MutatingWebhookConfiguration: %v", err)
	}
	return string(m.Webhooks[0].ClientConfig.CABundle)
}

// webhookSeries parses a scrape of the webhook's /metrics into values by series.
func webhookSeries(t testing.TB, scrape string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(scrape, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// mergeKeys is the set of the keys of ms.
func mergeKeys(ms ...map[string]float64) map[string]bool {
	out := map[string]bool{}
	for _, m := range ms {
		for k := range m {
			out[k] = true
		}
	}
	return out
}
