package status

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// TestEnforcerWritesOnlyItsOwnNodeStatus installs deploy/admission/enforcer-node-status.yaml
// and writes ArmorNodeStatuses with a token of the enforcer's service account bound to
// a pod on node-a: node-a's object is accepted, node-b's refused, and the admin is not
// restricted.
func TestEnforcerWritesOnlyItsOwnNodeStatus(t *testing.T) {
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			if strings.HasPrefix(version, "v1.29.") {
				// admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy and the node
				// name in service account tokens arrived in 1.30.
				t.Skip("ValidatingAdmissionPolicy v1 and node names in service account tokens need Kubernetes 1.30+")
			}
			cp := framework.StartControlPlane(t, framework.Options{Version: version})
			ctx := t.Context()
			installPolicy(t, cp)

			const ns, sa = "podarmor-system", "podarmor-enforcer"
			mustCreate(t, cp, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
			mustCreate(t, cp, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}})
			mustCreate(t, cp, &rbacv1.ClusterRole{
				ObjectMeta: metav1.ObjectMeta{Name: "podarmor-enforcer"},
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{"podarmor.io"}, Resources: []string{"armornodestatuses"},
					Verbs: []string{"get", "create", "update", "delete"}}},
			})
			mustCreate(t, cp, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "podarmor-enforcer"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "podarmor-enforcer"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
			})
			createNode(t, cp, "node-a")
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "enforcer-node-a", Namespace: ns},
				Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: sa,
					Containers: []corev1.Container{{Name: "enforcer", Image: "podarmor-enforcer"}}},
			}
			mustCreate(t, cp, pod)
			tok, err := cp.Clientset.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
				Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{
					Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID,
				}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cfg := rest.AnonymousClientConfig(cp.Config)
			cfg.BearerToken = tok.Status.Token
			enforcer, err := client.New(cfg, client.Options{Scheme: framework.Scheme()})
			if err != nil {
				t.Fatal(err)
			}
			status := func(node string) *v1alpha1.ArmorNodeStatus {
				return &v1alpha1.ArmorNodeStatus{ObjectMeta: metav1.ObjectMeta{Name: node},
					Status: v1alpha1.NodeReport{Enforcer: v1alpha1.EnforcerInfo{Version: "e2e"}}}
			}

			// The admission plugin loads policies from its informer: wait until it refuses.
			var refusal error
			framework.WaitFor(t, 0, "the admission policy to refuse node-b's object", func(ctx context.Context) (bool, error) {
				refusal = enforcer.Create(ctx, status("node-b"), client.DryRunAll)
				return refusal != nil, nil
			})
			if !apierrors.IsForbidden(refusal) || !strings.Contains(refusal.Error(), "only the ArmorNodeStatus of its own node (node-a), not node-b") {
				t.Errorf("node-b's object: %v; want Forbidden by the policy naming node-a", refusal)
			}
			own := status("node-a")
			if err := enforcer.Create(ctx, own); err != nil {
				t.Fatalf("the enforcer on node-a creating its own object: %v", err)
			}
			own.Status.Enforcer.Version = "e2e-2"
			if err := enforcer.Update(ctx, own); err != nil {
				t.Errorf("the enforcer on node-a updating its own object: %v", err)
			}
			if err := cp.Client.Create(ctx, status("node-b")); err != nil {
				t.Fatalf("the admin creating node-b's object: %v", err)
			}
			other := &v1alpha1.ArmorNodeStatus{}
			if err := enforcer.Get(ctx, clientKey("node-b"), other); err != nil {
				t.Fatal(err)
			}
			other.Status.Enforcer.Version = "forged"
			if err := enforcer.Update(ctx, other); !apierrors.IsForbidden(err) {
				t.Errorf("the enforcer on node-a updating node-b's object: %v; want Forbidden", err)
			}
			if err := enforcer.Delete(ctx, other); !apierrors.IsForbidden(err) {
				t.Errorf("the enforcer on node-a deleting node-b's object: %v; want Forbidden", err)
			}
		})
	}
}

// installPolicy creates the objects of deploy/admission/enforcer-node-status.yaml.
func installPolicy(t *testing.T, cp *framework.ControlPlane) {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	data, err := os.ReadFile(filepath.Join(filepath.Dir(self), "..", "..", "deploy", "admission", "enforcer-node-status.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(data, []byte("\n---\n"))
	if len(docs) != 2 {
		t.Fatalf("enforcer-node-status.yaml has %d documents, want the policy and its binding", len(docs))
	}
	var policy admissionregistrationv1.ValidatingAdmissionPolicy
	var binding admissionregistrationv1.ValidatingAdmissionPolicyBinding
	if err := yaml.UnmarshalStrict(docs[0], &policy); err != nil {
		t.Fatalf("policy: %v", err)
	}
	if err := yaml.UnmarshalStrict(docs[1], &binding); err != nil {
		t.Fatalf("binding: %v", err)
	}
	mustCreate(t, cp, &policy)
	mustCreate(t, cp, &binding)
}

func mustCreate(t *testing.T, cp *framework.ControlPlane, obj client.Object) {
	t.Helper()
	if err := cp.Client.Create(t.Context(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}
