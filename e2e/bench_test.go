package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// BenchmarkPodCreate measures pod creation through a real API server without and with
// the webhook, side by side on one control plane: pods of a namespace that did not opt
// in never reach the webhook, pods of an opted-in one go through both podarmor webhooks.
// Rounds alternate (A B A B ...) so that drift on a shared machine hits both alike; the
// result to quote is the ratio. `make bench` runs it.
func BenchmarkPodCreate(b *testing.B) {
	version := framework.Versions(b)[0]
	cp := framework.StartControlPlane(b, framework.Options{Version: version})
	cp.StartWebhook(b, framework.WebhookOptions{Args: []string{"--default-policy", "baseline", "--log-level", "warn"}})
	e := &webhookEnv{cp: cp}
	shop := cp.CreateNamespace(b, map[string]string{v1alpha1.LabelEnable: "true"})
	plain := cp.CreateNamespace(b, nil)
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
	if err := cp.Client.Status().Update(b.Context(), baseline); err != nil {
		b.Fatal(err)
	}
	framework.WaitFor(b, 30*time.Second, "the webhook to see the policy", func(ctx context.Context) (bool, error) {
		got, err := e.dryRun(ctx, testPod(shop.Name, "web"))
		return err == nil && got.Labels[v1alpha1.LabelProfile] == "cap.baseline", nil
	})

	const rounds, perRound = 6, 150
	var without, with []time.Duration
	n := 0
	create := func(ns string) time.Duration {
		p := testPod(ns, "web")
		p.GenerateName, p.Name = "", fmt.Sprintf("bench-%d", n)
		n++
		t0 := time.Now()
		if _, err := cp.Clientset.CoreV1().Pods(ns).Create(b.Context(), p, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	for range 50 { // warm up both paths
		create(plain.Name)
		create(shop.Name)
	}
	b.ResetTimer()
	for b.Loop() {
		for range rounds {
			for range perRound {
				without = append(without, create(plain.Name))
			}
			for range perRound {
				with = append(with, create(shop.Name))
			}
		}
	}
	b.StopTimer()
	a, w := summarize(without), summarize(with)
	b.ReportMetric(a.mean, "mean-µs-without")
	b.ReportMetric(w.mean, "mean-µs-with")
	b.ReportMetric(a.p99, "p99-µs-without")
	b.ReportMetric(w.p99, "p99-µs-with")
	b.ReportMetric(w.mean/a.mean, "ratio-with/without")
}

type stats struct{ mean, p50, p99 float64 }

func summarize(ds []time.Duration) stats {
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	at := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))].Microseconds()) }
	return stats{mean: float64(sum.Microseconds()) / float64(len(ds)), p50: at(0.5), p99: at(0.99)}
}
