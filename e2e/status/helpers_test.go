package status

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// dynamicClient returns a dynamic client for cfg.
func dynamicClient(t testing.TB, cfg *rest.Config) dynamic.Interface {
	t.Helper()
	c, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// createNode creates a Node object (there is no kubelet: it only has to exist).
func createNode(t testing.TB, cp *framework.ControlPlane, name string) *corev1.Node {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := cp.Client.Create(t.Context(), n); err != nil {
		t.Fatalf("create Node %s: %v", name, err)
	}
	return n
}

// loaded is an entry for policy p at generation gen with every enforcer Loaded.
func loaded(kind v1alpha1.PolicyKind, namespace, name string, gen int64, enforcers ...v1alpha1.Enforcer) v1alpha1.NodePolicyStatus {
	e := v1alpha1.NodePolicyStatus{Kind: kind, Namespace: namespace, Name: name, Generation: gen}
	for _, en := range enforcers {
		e.Enforcers = append(e.Enforcers, v1alpha1.EnforcerResult{Enforcer: en, State: v1alpha1.LoadLoaded})
	}
	return e
}

// withResult sets one enforcer's result in e.
func withResult(e v1alpha1.NodePolicyStatus, en v1alpha1.Enforcer, state v1alpha1.LoadState, reason string) v1alpha1.NodePolicyStatus {
	e.Enforcers = append([]v1alpha1.EnforcerResult(nil), e.Enforcers...)
	for i := range e.Enforcers {
		if e.Enforcers[i].Enforcer == en {
			e.Enforcers[i].State, e.Enforcers[i].Reason = state, reason
		}
	}
	return e
}

// putNodeStatus creates or replaces the ArmorNodeStatus of node, as its enforcer would.
func putNodeStatus(t testing.TB, cp *framework.ControlPlane, node string, entries ...v1alpha1.NodePolicyStatus) {
	t.Helper()
	ctx := t.Context()
	obj := &v1alpha1.ArmorNodeStatus{}
	err := cp.Client.Get(ctx, clientKey(node), obj)
	obj.Name = node
	obj.Status = v1alpha1.NodeReport{
		Enforcer: v1alpha1.EnforcerInfo{Version: "e2e"},
		Features: v1alpha1.NodeFeatures{BPFLSM: true, AppArmor: true, Seccomp: true, KernelRelease: "6.12.0-e2e"},
		Policies: entries,
	}
	if err != nil {
		obj.ResourceVersion = ""
		if err := cp.Client.Create(ctx, obj); err != nil {
			t.Fatalf("create ArmorNodeStatus %s: %v", node, err)
		}
		return
	}
	if err := cp.Client.Update(ctx, obj); err != nil {
		t.Fatalf("update ArmorNodeStatus %s: %v", node, err)
	}
}

// condition returns the condition of type typ, or nil.
func condition(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

// waitFor is framework.WaitFor with the timeout the status tests use: a batch delay
// plus a write, on a loaded 2-core machine.
func waitFor(t testing.TB, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	framework.WaitFor(t, 60*time.Second, what, cond)
}

// clientKey is the key of a cluster-scoped object.
func clientKey(name string) client.ObjectKey { return client.ObjectKey{Name: name} }

// client404 turns NotFound into "not yet" for a wait.
func client404(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
