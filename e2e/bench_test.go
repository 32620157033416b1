package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/webhook/admission"
)

// BenchmarkPodCreate measures pod creation through a real API server, one create at a
// time as a client sees it, in three namespaces of one control plane:
//
//   - without: a namespace that did not opt in; no webhook is called;
//   - with: an opted-in namespace; podarmor's mutating webhook confines the pod, and the
//     API server skips the validating webhook because the pod carries podarmor's seal
//     (asserted: every pod comes back confined, every create made one mutating call and
//     none a validating call);
//   - floor: a namespace whose pods get the very patch podarmor gives, from a mutating
//     webhook inside the benchmark that only decodes the review and answers: what any
//     webhook that confines pods costs this API server.
//
// The three alternate create by create, rotating which goes first, so that drift on a
// shared machine hits all alike; the results to quote are the ratios to "without".
// CPU time per create is read from /proc for the API server, etcd and the webhook.
// `make bench` runs it.
func BenchmarkPodCreate(b *testing.B) {
	version := framework.Versions(b)[0]
	cp := framework.StartControlPlane(b, framework.Options{Version: version})
	wh := cp.StartWebhook(b, framework.WebhookOptions{Args: []string{"--default-policy", "baseline", "--log-level", "warn", "--aggregate-policy-status=false"}})
	e := &webhookEnv{cp: cp, wh: wh}
	shop := cp.CreateNamespace(b, map[string]string{v1alpha1.LabelEnable: "true"})
	plain := cp.CreateNamespace(b, nil)
	floor := cp.CreateNamespace(b, map[string]string{"e2e.podarmor.io/bench": "floor"})
	baseline := &v1alpha1.ClusterArmorPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "baseline"},
		Spec: v1alpha1.ClusterArmorPolicySpec{ArmorPolicySpec: v1alpha1.ArmorPolicySpec{
			Target:    v1alpha1.Target{Selector: metav1.LabelSelector{}},
			Enforcers: v1alpha1.Enforcers,
			Mode:      v1alpha1.ModeEnhanceProtect,
		}},
	}
	if err := cp.Client.Create(b.Context(), baseline); err != nil {
		b.Fatal(err)
	}
	baseline.Status = ready
	baseline.Status.ObservedGeneration = baseline.Generation
	if err := cp.Client.Status().Update(b.Context(), baseline); err != nil {
		b.Fatal(err)
	}
	var confined *corev1.Pod
	framework.WaitFor(b, 30*time.Second, "the webhook to see the policy", func(ctx context.Context) (bool, error) {
		got, err := e.dryRun(ctx, testPod(shop.Name, "web"))
		confined = got
		return err == nil && got.Labels[v1alpha1.LabelProfile] == "cap.baseline", nil
	})
	patch := floorPatch(b, confined)
	cp.StartMutatingWebhook(b, framework.MutatingWebhookOptions{
		Name: "bench-floor", NamespaceLabels: floor.Labels, Reinvoke: true,
		Mutate: func(*corev1.Pod) ([]byte, error) { return patch, nil },
	})
	framework.WaitFor(b, 30*time.Second, "the floor webhook", func(ctx context.Context) (bool, error) {
		got, err := e.dryRun(ctx, testPod(floor.Name, "web"))
		return err == nil && got.Labels[v1alpha1.LabelProfile] == "cap.baseline", nil
	})

	type arm struct {
		name string
		ns   string
		took []time.Duration
		cpu  map[string]time.Duration
	}
	arms := []*arm{{name: "without", ns: plain.Name}, {name: "with", ns: shop.Name}, {name: "floor", ns: floor.Name}}
	n := 0
	cpuNow := func() map[string]time.Duration {
		m, err := cp.CPUTime()
		if err != nil {
			b.Fatal(err)
		}
		if m["webhook"], err = wh.CPUTime(); err != nil {
			b.Fatal(err)
		}
		return m
	}
	create := func(a *arm) {
		p := testPod(a.ns, "web")
		p.GenerateName, p.Name = "", fmt.Sprintf("bench-%d", n)
		n++
		before := cpuNow()
		t0 := time.Now()
		got, err := cp.Clientset.CoreV1().Pods(a.ns).Create(b.Context(), p, metav1.CreateOptions{})
		took := time.Since(t0)
		after := cpuNow()
		if err != nil {
			b.Fatal(err)
		}
		if a.name != "without" && (got.Labels[v1alpha1.LabelProfile] != "cap.baseline" || seccompOf(&got.Spec.Containers[0]) == "") {
			b.Fatalf("%s: pod %s was not confined: labels %v, securityContext %+v", a.name, got.Name, got.Labels, got.Spec.Containers[0].SecurityContext)
		}
		a.took = append(a.took, took)
		for k, v := range after {
			a.cpu[k] += v - before[k]
		}
	}
	const perArm = 600
	for _, a := range arms {
		a.cpu = map[string]time.Duration{}
	}
	for range 50 { // warm up every path
		for _, a := range arms {
			create(a)
		}
	}
	mutated0, validated0 := webhookCalls(b, wh)
	calls0 := webhookLatency(b, cp)
	confinedPods := 0
	b.ResetTimer()
	for b.Loop() {
		for _, a := range arms {
			a.took, a.cpu = nil, map[string]time.Duration{}
		}
		for i := range perArm {
			for j := range arms {
				create(arms[(i+j)%len(arms)])
			}
		}
		confinedPods += perArm
	}
	b.StopTimer()
	mutated, validated := webhookCalls(b, wh)
	calls := webhookLatency(b, cp)
	if mutated-mutated0 != confinedPods {
		b.Fatalf("podarmor's mutating webhook mutated %d pods, want the %d created in the opted-in namespace", mutated-mutated0, confinedPods)
	}
	without := summarize(arms[0].took)
	for _, a := range arms {
		s := summarize(a.took)
		b.ReportMetric(s.mean, "mean-µs-"+a.name)
		b.ReportMetric(s.p50, "p50-µs-"+a.name)
		if a != arms[0] {
			b.ReportMetric(s.mean/without.mean, "ratio-"+a.name+"/without")
		}
		per := float64(len(a.took))
		b.ReportMetric(float64(a.cpu["kube-apiserver"].Microseconds())/per, "apiserver-cpu-µs-"+a.name)
		if a.name == "with" {
			b.ReportMetric(float64(a.cpu["webhook"].Microseconds())/per, "webhook-cpu-µs-"+a.name)
		}
	}
	b.ReportMetric(float64(validated-validated0)/float64(confinedPods), "validating-calls/pod")
	for name, arm := range map[string]string{"pods.podarmor.io": "with", "bench-floor.e2e.podarmor.io": "floor"} {
		d := calls[name].sum - calls0[name].sum
		b.ReportMetric(float64(d.Microseconds())/float64(calls[name].count-calls0[name].count), "webhook-call-µs-"+arm)
	}
}

// floorPatch is the JSON patch podarmor gives the benchmark's pod, as confined shows it:
// the profile label, podarmor's annotations (with the AppArmor ones where the API server
// has no field) and each container's securityContext.
func floorPatch(b *testing.B, confined *corev1.Pod) []byte {
	annotations := map[string]string{}
	for k, v := range confined.Annotations {
		container := strings.TrimPrefix(k, admission.AppArmorAnnotationPrefix)
		if strings.HasPrefix(k, "podarmor.io/") || (container != k && !hasAppArmorField(confined, container)) {
			annotations[k] = v
		}
	}
	ops := []map[string]any{
		{"op": "add", "path": "/metadata/labels/podarmor.io~1profile", "value": confined.Labels[v1alpha1.LabelProfile]},
		{"op": "add", "path": "/metadata/annotations", "value": annotations},
	}
	for i, c := range confined.Spec.InitContainers {
		ops = append(ops, map[string]any{"op": "add", "path": fmt.Sprintf("/spec/initContainers/%d/securityContext", i), "value": c.SecurityContext})
	}
	for i, c := range confined.Spec.Containers {
		ops = append(ops, map[string]any{"op": "add", "path": fmt.Sprintf("/spec/containers/%d/securityContext", i), "value": c.SecurityContext})
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		b.Fatal(err)
	}
	return patch
}

func hasAppArmorField(p *corev1.Pod, container string) bool {
	for _, c := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
		if c.Name == container {
			return c.SecurityContext != nil && c.SecurityContext.AppArmorProfile != nil
		}
	}
	return false
}

// webhookCalls returns how many pod creates podarmor's mutating webhook has mutated and
// how many its validating webhook has answered, from its metrics.
func webhookCalls(t testing.TB, wh *framework.Webhook) (mutated, validated int) {
	t.Helper()
	for _, line := range strings.Split(wh.Metrics(t), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(name, "podarmor_webhook_admission_reviews_total{") || !strings.Contains(name, `operation="create"`) {
			continue
		}
		v, err := strconv.Atoi(value)
		if err != nil {
			t.Fatalf("metric %s: %v", line, err)
		}
		switch {
		case strings.Contains(name, `webhook="mutate-pods"`) && strings.Contains(name, `result="mutated"`):
			mutated += v
		case strings.Contains(name, `webhook="validate-pods"`):
			validated += v
		}
	}
	return mutated, validated
}

// webhookLatency returns, per mutating webhook, how many pod creates the API server has
// sent it and the time those calls took as the API server measures them (sending the
// review, waiting for the answer, reading it and applying the patch).
func webhookLatency(t testing.TB, cp *framework.ControlPlane) map[string]struct {
	sum   time.Duration
	count int
} {
	t.Helper()
	body, err := cp.Clientset.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(t.Context())
	if err != nil {
		t.Fatalf("API server metrics: %v", err)
	}
	out := map[string]struct {
		sum   time.Duration
		count int
	}{}
	for _, line := range strings.Split(string(body), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || !strings.Contains(name, `operation="CREATE"`) || !strings.Contains(name, `type="admit"`) || !strings.Contains(name, `rejected="false"`) {
			continue
		}
		metric, labels, _ := strings.Cut(name, "{")
		_, webhook, _ := strings.Cut(labels, `name="`)
		webhook, _, _ = strings.Cut(webhook, `"`)
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric %s: %v", line, err)
		}
		e := out[webhook]
		switch metric {
		case "apiserver_admission_webhook_admission_duration_seconds_sum":
			e.sum = time.Duration(v * float64(time.Second))
		case "apiserver_admission_webhook_admission_duration_seconds_count":
			e.count = int(v)
		}
		out[webhook] = e
	}
	return out
}

type stats struct{ mean, p50 float64 }

func summarize(ds []time.Duration) stats {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	at := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))].Microseconds()) }
	return stats{mean: float64(sum.Microseconds()) / float64(len(ds)), p50: at(0.5)}
}
