package status

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/webhook/policystatus"
)

// runAggregator runs the webhook's aggregator in the test process until the test ends.
func runAggregator(t *testing.T, cp *framework.ControlPlane, batch time.Duration) *policystatus.Aggregator {
	t.Helper()
	agg, err := policystatus.New(policystatus.Config{
		Client: dynamicClient(t, cp.Config), BatchDelay: batch,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := agg.Run(ctx); err != nil {
			t.Errorf("aggregator: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return agg
}

// statusIs waits until the policy's status satisfies ok, and fails with the last status
// seen otherwise.
func statusIs(t *testing.T, cp *framework.ControlPlane, p client.Object, what string, ok func(v1alpha1.PolicyStatus) bool) v1alpha1.PolicyStatus {
	t.Helper()
	var last v1alpha1.PolicyStatus
	key := client.ObjectKeyFromObject(p)
	framework.WaitFor(t, 60*time.Second, what+" (last status below on failure)", func(ctx context.Context) (bool, error) {
		switch obj := p.(type) {
		case *v1alpha1.ArmorPolicy:
			if err := cp.Client.Get(ctx, key, obj); err != nil {
				return false, err
			}
			last = obj.Status
		case *v1alpha1.ClusterArmorPolicy:
			if err := cp.Client.Get(ctx, key, obj); err != nil {
				return false, err
			}
			last = obj.Status
		}
		if ok(last) {
			return true, nil
		}
		return false, nil
	})
	return last
}

// readyIs matches a status describing generation gen with the given Ready status and
// reason and node counts.
func readyIs(gen int64, status metav1.ConditionStatus, reason string, ready, failed, total int32) func(v1alpha1.PolicyStatus) bool {
	return func(s v1alpha1.PolicyStatus) bool {
		c := condition(s.Conditions, policystatus.ConditionReady)
		return s.ObservedGeneration == gen && c != nil && c.Status == status && c.Reason == reason &&
			s.ReadyNodes == ready && s.FailedNodes == failed && s.TotalNodes == total
	}
}

// TestPolicyStatusAggregation runs the aggregator against node reports written into
// the API server and checks each policy's status as nodes load, fail, lack an enforcer,
// fall behind a spec change and disappear.
func TestPolicyStatusAggregation(t *testing.T) {
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			cp := framework.StartControlPlane(t, framework.Options{Version: version})
			ns := cp.CreateNamespace(t, map[string]string{v1alpha1.LabelEnable: "true"})
			runAggregator(t, cp, 200*time.Millisecond)

			web := &v1alpha1.ArmorPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns.Name},
				Spec: v1alpha1.ArmorPolicySpec{
					Target:    v1alpha1.Target{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
					Enforcers: v1alpha1.Enforcers, Mode: v1alpha1.ModeRuntimeDefault,
				},
			}
			if err := cp.Client.Create(t.Context(), web); err != nil {
				t.Fatal(err)
			}
			bpfOnly := &v1alpha1.ClusterArmorPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: "bpf-only"},
				Spec: v1alpha1.ClusterArmorPolicySpec{ArmorPolicySpec: v1alpha1.ArmorPolicySpec{
					Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF}, Mode: v1alpha1.ModeRuntimeDefault,
				}},
			}
			if err := cp.Client.Create(t.Context(), bpfOnly); err != nil {
				t.Fatal(err)
			}
			webAt := func(gen int64) v1alpha1.NodePolicyStatus {
				e := loaded(v1alpha1.KindArmorPolicy, ns.Name, "web", gen, v1alpha1.Enforcers...)
				e.UID = web.UID
				return e
			}
			bpfAt := func(gen int64) v1alpha1.NodePolicyStatus {
				return loaded(v1alpha1.KindClusterArmorPolicy, "", "bpf-only", gen, v1alpha1.EnforcerBPF)
			}

			t.Run("without enforcer nodes a policy is not ready", func(t *testing.T) {
				s := statusIs(t, cp, web, "web not ready for want of nodes", readyIs(1, metav1.ConditionFalse, policystatus.ReasonNoEnforcerNodes, 0, 0, 0))
				if s.ProfileID != "ap."+ns.Name+".web" {
					t.Errorf("profileID %q", s.ProfileID)
				}
			})

			t.Run("loaded on every node it is ready", func(t *testing.T) {
				for _, n := range []string{"node-a", "node-b", "node-c"} {
					putNodeStatus(t, cp, n, webAt(1), bpfAt(1))
				}
				statusIs(t, cp, web, "web ready on 3 nodes", readyIs(1, metav1.ConditionTrue, policystatus.ReasonLoaded, 3, 0, 3))
				// What `kubectl get armorpolicies` shows: the server's table.
				if row := tableRow(t, cp, "/apis/podarmor.io/v1alpha1/namespaces/"+ns.Name+"/armorpolicies", "web"); row["Mode"] != "RuntimeDefault" ||
					row["Ready"] != "True" || row["Nodes-Ready"] != float64(3) || row["Nodes"] != float64(3) {
					t.Errorf("kubectl get armorpolicies shows %v, want mode RuntimeDefault, Ready True on 3 of 3 nodes", row)
				}
				s := statusIs(t, cp, bpfOnly, "bpf-only ready on 3 nodes", readyIs(1, metav1.ConditionTrue, policystatus.ReasonLoaded, 3, 0, 3))
				if c := condition(s.Conditions, policystatus.ConditionRulesEnforced); c == nil || c.Status != metav1.ConditionTrue {
					t.Errorf("RulesEnforced %+v, want True", c)
				}
			})

			t.Run("a spec change is not ready until the nodes load it, and a failure is named", func(t *testing.T) {
				web.Spec.Mode = v1alpha1.ModeEnhanceProtect
				if err := cp.Client.Update(t.Context(), web); err != nil {
					t.Fatal(err)
				}
				if web.Generation != 2 {
					t.Fatalf("generation %d after a spec change, want 2", web.Generation)
				}
				s := statusIs(t, cp, web, "web pending at generation 2", readyIs(2, metav1.ConditionFalse, policystatus.ReasonPending, 0, 0, 3))
				if c := condition(s.Conditions, policystatus.ConditionReady); !strings.Contains(c.Message, "node-a: has generation 1") {
					t.Errorf("Ready message %q does not say which node is behind", c.Message)
				}
				putNodeStatus(t, cp, "node-a", webAt(2), bpfAt(1))
				putNodeStatus(t, cp, "node-b", withResult(webAt(2), v1alpha1.EnforcerAppArmor, v1alpha1.LoadFailed, "apparmor_parser: profile too big"), bpfAt(1))
				s = statusIs(t, cp, web, "web failed on node-b", readyIs(2, metav1.ConditionFalse, policystatus.ReasonLoadFailed, 1, 1, 3))
				if c := condition(s.Conditions, policystatus.ConditionReady); !strings.Contains(c.Message, "node-b: AppArmor failed: apparmor_parser: profile too big") {
					t.Errorf("Ready message %q does not name node-b's failure", c.Message)
				}
			})

			t.Run("a node without AppArmor keeps a policy with AppArmor profiles from being ready", func(t *testing.T) {
				putNodeStatus(t, cp, "node-b", webAt(2), bpfAt(1))
				putNodeStatus(t, cp, "node-c", withResult(webAt(2), v1alpha1.EnforcerAppArmor, v1alpha1.LoadUnsupported, "AppArmor is not enabled on this kernel"), bpfAt(1))
				s := statusIs(t, cp, web, "web unsupported on node-c", readyIs(2, metav1.ConditionFalse, policystatus.ReasonEnforcerUnsupported, 2, 0, 3))
				if c := condition(s.Conditions, policystatus.ConditionRulesEnforced); c == nil || c.Status != metav1.ConditionFalse ||
					!strings.Contains(c.Message, "enforcer AppArmor (AppArmor is not enabled on this kernel) on 1 node") {
					t.Errorf("RulesEnforced %+v, want False naming AppArmor on 1 node", c)
				}
			})

			t.Run("a node without BPF LSM leaves a BPF policy ready but not enforced everywhere", func(t *testing.T) {
				unenforced := withResult(bpfAt(1), v1alpha1.EnforcerBPF, v1alpha1.LoadUnsupported, "bpf is not in the active LSMs")
				putNodeStatus(t, cp, "node-c", webAt(2), unenforced)
				nodeA := bpfAt(1)
				nodeA.UnenforcedRules = []v1alpha1.UnenforcedRule{{Rule: "runtime-default/disallow-mount", Enforcer: v1alpha1.EnforcerBPF, MissingFeature: "BPF LSM hook sb_mount"}}
				putNodeStatus(t, cp, "node-a", webAt(2), nodeA)
				s := statusIs(t, cp, bpfOnly, "bpf-only ready with unenforced rules", func(s v1alpha1.PolicyStatus) bool {
					c := condition(s.Conditions, policystatus.ConditionRulesEnforced)
					return readyIs(1, metav1.ConditionTrue, policystatus.ReasonLoaded, 3, 0, 3)(s) && c != nil && c.Status == metav1.ConditionFalse &&
						strings.Contains(c.Message, "rule runtime-default/disallow-mount by BPF (missing BPF LSM hook sb_mount) on 1 node")
				})
				if c := condition(s.Conditions, policystatus.ConditionRulesEnforced); !strings.Contains(c.Message, "enforcer BPF (bpf is not in the active LSMs) on 1 node") {
					t.Errorf("RulesEnforced message %q does not name node-c's missing BPF LSM", c.Message)
				}
				statusIs(t, cp, web, "web ready everywhere", readyIs(2, metav1.ConditionTrue, policystatus.ReasonLoaded, 3, 0, 3))
			})

			t.Run("deleted node reports no longer count", func(t *testing.T) {
				for _, n := range []string{"node-b", "node-c"} {
					if err := cp.Client.Delete(t.Context(), &v1alpha1.ArmorNodeStatus{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
						t.Fatal(err)
					}
				}
				statusIs(t, cp, web, "web counted on node-a alone", readyIs(2, metav1.ConditionTrue, policystatus.ReasonLoaded, 1, 0, 1))
				if err := cp.Client.Delete(t.Context(), &v1alpha1.ArmorNodeStatus{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}); err != nil {
					t.Fatal(err)
				}
				statusIs(t, cp, bpfOnly, "bpf-only without nodes", readyIs(1, metav1.ConditionFalse, policystatus.ReasonNoEnforcerNodes, 0, 0, 0))
			})

			t.Run("a policy created again under the same name does not inherit the old reports", func(t *testing.T) {
				old := webAt(2)
				putNodeStatus(t, cp, "node-a", old, bpfAt(1))
				statusIs(t, cp, web, "web ready on node-a", readyIs(2, metav1.ConditionTrue, policystatus.ReasonLoaded, 1, 0, 1))
				if err := cp.Client.Delete(t.Context(), web); err != nil {
					t.Fatal(err)
				}
				cp.WaitForDeletion(t, 0, client.ObjectKeyFromObject(web), &v1alpha1.ArmorPolicy{})
				again := &v1alpha1.ArmorPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns.Name}, Spec: web.Spec}
				if err := cp.Client.Create(t.Context(), again); err != nil {
					t.Fatal(err)
				}
				// node-a's entry carries the deleted policy's uid: generation 1 of the
				// new policy must not count it.
				old.Generation = 1
				putNodeStatus(t, cp, "node-a", old, bpfAt(1))
				statusIs(t, cp, again, "the new web pending", readyIs(1, metav1.ConditionFalse, policystatus.ReasonPending, 0, 0, 1))
			})
		})
	}
}

// tableRow returns the row of object name in the table the API server renders for a
// list at path, as kubectl get asks for it (the CRD's printer columns), by column name.
func tableRow(t *testing.T, cp *framework.ControlPlane, path, name string) map[string]any {
	t.Helper()
	raw, err := cp.Clientset.CoreV1().RESTClient().Get().AbsPath(path).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(t.Context())
	if err != nil {
		t.Fatalf("GET %s as a table: %v", path, err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatalf("table of %s: %v", path, err)
	}
	for _, r := range table.Rows {
		if len(r.Cells) != len(table.ColumnDefinitions) {
			t.Fatalf("table of %s: a row of %d cells for %d columns", path, len(r.Cells), len(table.ColumnDefinitions))
		}
		row := map[string]any{}
		for i, c := range table.ColumnDefinitions {
			row[c.Name] = r.Cells[i]
		}
		if row["Name"] == name {
			return row
		}
	}
	t.Fatalf("table of %s has no row %s: %s", path, name, raw)
	return nil
}
