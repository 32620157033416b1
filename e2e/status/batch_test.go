package status

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/webhook/policystatus"
)

// TestPolicyStatusBatching has 1,000 nodes report 5 policies loaded as fast as the API
// server takes them, and counts the status writes of each policy by watching the
// policies. The aggregator runs with its default batch delay, d = 1 s.
//
// The bound: a node report's change and the update a status write causes queue the
// policy d later, and the queue holds one entry per policy, so two recomputations of a
// policy are at least d apart (only a new generation is recomputed at once, and there
// is none here). Over the T seconds from the first report to the final status a
// policy is thus written at most T/d + 2 times (a write at each end of the window),
// where writing per report would be 1,000 writes per policy.
func TestPolicyStatusBatching(t *testing.T) {
	const (
		nodes    = 1000
		policies = 5
		workers  = 8
	)
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			cp := framework.StartControlPlane(t, framework.Options{Version: version})
			ns := cp.CreateNamespace(t, nil)
			agg := runAggregator(t, cp, 0) // the default batch delay
			const batch = policystatus.DefaultBatchDelay

			var entries []v1alpha1.NodePolicyStatus
			var ps []*v1alpha1.ArmorPolicy
			for i := range policies {
				p := &v1alpha1.ArmorPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: ns.Name},
					Spec: v1alpha1.ArmorPolicySpec{
						Target:    v1alpha1.Target{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprint(i)}}},
						Enforcers: v1alpha1.Enforcers, Mode: v1alpha1.ModeRuntimeDefault,
					},
				}
				if err := cp.Client.Create(t.Context(), p); err != nil {
					t.Fatal(err)
				}
				ps = append(ps, p)
				e := loaded(v1alpha1.KindArmorPolicy, ns.Name, p.Name, 1, v1alpha1.Enforcers...)
				e.UID = p.UID
				entries = append(entries, e)
			}
			for _, p := range ps {
				statusIs(t, cp, p, p.Name+" without nodes", readyIs(1, metav1.ConditionFalse, policystatus.ReasonNoEnforcerNodes, 0, 0, 0))
			}
			writesBefore := agg.Writes()

			// Count every modification of the policies from here on.
			list := &v1alpha1.ArmorPolicyList{}
			if err := cp.Client.List(t.Context(), list); err != nil {
				t.Fatal(err)
			}
			w, err := dynamicClient(t, cp.Config).Resource(policystatus.ArmorPolicies).Namespace(ns.Name).Watch(t.Context(),
				metav1.ListOptions{ResourceVersion: list.ResourceVersion})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Stop()
			var mu sync.Mutex
			modified := map[string]int{}
			go func() {
				for ev := range w.ResultChan() {
					if ev.Type != watch.Modified {
						continue
					}
					if m, ok := ev.Object.(metav1.Object); ok {
						mu.Lock()
						modified[m.GetName()]++
						mu.Unlock()
					}
				}
			}()

			start := time.Now()
			names := make(chan string)
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for n := range names {
						obj := &v1alpha1.ArmorNodeStatus{ObjectMeta: metav1.ObjectMeta{Name: n}, Status: v1alpha1.NodeReport{
							Enforcer: v1alpha1.EnforcerInfo{Version: "e2e"}, Policies: entries,
						}}
						if err := cp.Client.Create(context.Background(), obj); err != nil {
							t.Errorf("create ArmorNodeStatus %s: %v", n, err)
						}
					}
				})
			}
			for i := range nodes {
				names <- fmt.Sprintf("node-%04d", i)
			}
			close(names)
			wg.Wait()
			created := time.Since(start)
			for _, p := range ps {
				statusIs(t, cp, p, p.Name+" ready on every node", readyIs(1, metav1.ConditionTrue, policystatus.ReasonLoaded, nodes, 0, nodes))
			}
			elapsed := time.Since(start)

			bound := int(elapsed/batch) + 2
			framework.WaitFor(t, 10*time.Second, "the watch to deliver the writes", func(context.Context) (bool, error) {
				mu.Lock()
				defer mu.Unlock()
				total := 0
				for _, n := range modified {
					total += n
				}
				return int64(total) >= agg.Writes()-writesBefore, nil
			})
			mu.Lock()
			defer mu.Unlock()
			total := 0
			for _, p := range ps {
				n := modified[p.Name]
				total += n
				if n < 1 || n > bound {
					t.Errorf("policy %s was written %d times; want 1 to %d (T/d + 2 for T = %s, d = %s)", p.Name, n, bound, elapsed, batch)
				}
			}
			t.Logf("%d nodes × %d policies created in %s, final status after %s: %d status writes (%v), at most %d per policy allowed, %d per policy without batching",
				nodes, policies, created.Round(time.Millisecond), elapsed.Round(time.Millisecond), total, modified, bound, nodes)
		})
	}
}
