package e2e

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// TestSkeleton is the end-to-end test to copy. It starts a control plane for each
// Kubernetes version under test, creates a namespace and an ArmorPolicy through the API
// server, and reads them back.
//
// To write a new test, copy this function, rename it, and replace the middle part. Keep:
//   - one subtest per version from framework.Versions(t), named by the version, so
//     `go test -run 'TestX/v1.29'` picks one and a failure says which version broke;
//   - t.Parallel() in the subtest: every control plane is private to its subtest;
//   - framework.StartControlPlane at the start; it stops itself when the subtest ends
//     (and prints the end of the server logs if the subtest failed);
//   - waits through framework.WaitFor and cp.WaitForObject, never time.Sleep.
//
// Talk to the API through cp.Client (controller-runtime; knows podarmor's types) and
// use t.Context() for calls, which ends with the test.
func TestSkeleton(t *testing.T) {
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			cp := framework.StartControlPlane(t, framework.Options{Version: version})
			if cp.Version != version {
				t.Fatalf("server reports version %s, want %s", cp.Version, version)
			}

			ns := cp.CreateNamespace(t, map[string]string{v1alpha1.LabelEnable: "true"})

			policy := &v1alpha1.ArmorPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns.Name},
				Spec: v1alpha1.ArmorPolicySpec{
					Target: v1alpha1.Target{Selector: metav1.LabelSelector{
						MatchLabels: map[string]string{"app": "web"},
					}},
					Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerAppArmor, v1alpha1.EnforcerSeccomp},
					Mode:      v1alpha1.ModeRuntimeDefault,
					Action:    v1alpha1.ActionAudit,
				},
			}
			if err := cp.Client.Create(t.Context(), policy); err != nil {
				t.Fatalf("create ArmorPolicy: %v", err)
			}

			// Read both back through the API server, into fresh objects. (Create has
			// already filled policy with the server's answer, so compare against
			// literals, not against policy.)
			got := &v1alpha1.ArmorPolicy{}
			if err := cp.Client.Get(t.Context(), client.ObjectKeyFromObject(policy), got); err != nil {
				t.Fatalf("get ArmorPolicy: %v", err)
			}
			if got.UID == "" || got.Spec.Mode != v1alpha1.ModeRuntimeDefault || got.Spec.Action != v1alpha1.ActionAudit ||
				got.Spec.Target.Selector.MatchLabels["app"] != "web" || len(got.Spec.Enforcers) != 2 {
				t.Errorf("stored ArmorPolicy differs from the one created:\n got %+v\nwant %+v", got.Spec, policy.Spec)
			}

			list := &v1alpha1.ArmorPolicyList{}
			if err := cp.Client.List(t.Context(), list, client.InNamespace(ns.Name)); err != nil {
				t.Fatalf("list ArmorPolicies: %v", err)
			}
			if len(list.Items) != 1 || list.Items[0].Name != "web" {
				t.Errorf("ArmorPolicies in %s: got %d, want just \"web\"", ns.Name, len(list.Items))
			}

			gotNS := &corev1.Namespace{}
			if err := cp.Client.Get(t.Context(), client.ObjectKey{Name: ns.Name}, gotNS); err != nil {
				t.Fatalf("get namespace: %v", err)
			}
			if gotNS.Labels[v1alpha1.LabelEnable] != "true" {
				t.Errorf("namespace %s has labels %v, want %s=true", ns.Name, gotNS.Labels, v1alpha1.LabelEnable)
			}
		})
	}
}
