package status

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/webhook/policystatus"
)

// TestReadinessGate runs podarmor-webhook, which as leader aggregates the node
// reports into policy status, and checks that a policy with AppArmor and seccomp
// profiles refuses pods until the nodes report it loaded, admits them with the
// profiles then, and refuses them again after a spec change until the nodes have
// loaded the new generation.
func TestReadinessGate(t *testing.T) {
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			cp := framework.StartControlPlane(t, framework.Options{Version: version})
			cp.StartWebhook(t, framework.WebhookOptions{Args: []string{"--policy-status-batch-delay", "200ms"}})
			ns := cp.CreateNamespace(t, map[string]string{v1alpha1.LabelEnable: "true"})
			web := &v1alpha1.ArmorPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns.Name},
				Spec: v1alpha1.ArmorPolicySpec{
					Target:    v1alpha1.Target{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
					Enforcers: v1alpha1.Enforcers, Mode: v1alpha1.ModeEnhanceProtect,
				},
			}
			if err := cp.Client.Create(t.Context(), web); err != nil {
				t.Fatal(err)
			}
			pod := func() *corev1.Pod {
				return &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Namespace: ns.Name, Labels: map[string]string{"app": "web"}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
				}
			}
			refused := func(ctx context.Context) (bool, error) {
				err := cp.DryRunCreate(t, pod())
				if err == nil {
					return false, nil
				}
				if !strings.Contains(err.Error(), "is not loaded on every node yet") {
					return false, err
				}
				return true, nil
			}
			entry := func(gen int64) v1alpha1.NodePolicyStatus {
				e := loaded(v1alpha1.KindArmorPolicy, ns.Name, "web", gen, v1alpha1.Enforcers...)
				e.UID = web.UID
				return e
			}

			t.Run("before any node reports the policy, its pods are refused", func(t *testing.T) {
				statusIs(t, cp, web, "the leader to write web's status", readyIs(1, metav1.ConditionFalse, policystatus.ReasonNoEnforcerNodes, 0, 0, 0))
				if ok, err := refused(t.Context()); !ok {
					t.Fatalf("pod of a policy no node has loaded: %v", err)
				}
				putNodeStatus(t, cp, "node-a", entry(1))
				putNodeStatus(t, cp, "node-b", withResult(entry(1), v1alpha1.EnforcerAppArmor, v1alpha1.LoadFailed, "apparmor_parser exited 1"))
				statusIs(t, cp, web, "web failed on node-b", readyIs(1, metav1.ConditionFalse, policystatus.ReasonLoadFailed, 1, 1, 2))
				err := cp.DryRunCreate(t, pod())
				if err == nil || !strings.Contains(err.Error(), "node-b: AppArmor failed: apparmor_parser exited 1") {
					t.Errorf("pod of a policy that failed on node-b: %v; want a refusal naming node-b's failure", err)
				}
			})

			t.Run("once every node has loaded it, pods are admitted with its profiles", func(t *testing.T) {
				putNodeStatus(t, cp, "node-b", entry(1))
				statusIs(t, cp, web, "web ready", readyIs(1, metav1.ConditionTrue, policystatus.ReasonLoaded, 2, 0, 2))
				var got *corev1.Pod
				framework.WaitFor(t, 0, "the webhook to see web ready", func(ctx context.Context) (bool, error) {
					p := pod()
					if err := cp.DryRunCreate(t, p); err != nil {
						return false, nil
					}
					got = p
					return true, nil
				})
				c := got.Spec.Containers[0]
				if got.Labels[v1alpha1.LabelProfile] != "ap."+ns.Name+".web" {
					t.Errorf("profile label %q", got.Labels[v1alpha1.LabelProfile])
				}
				if sc := c.SecurityContext; sc == nil || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeLocalhost {
					t.Errorf("container security context %+v, want a Localhost seccomp profile", sc)
				}
				field := c.SecurityContext != nil && c.SecurityContext.AppArmorProfile != nil &&
					c.SecurityContext.AppArmorProfile.Type == corev1.AppArmorProfileTypeLocalhost
				annotation := strings.HasPrefix(got.Annotations["container.apparmor.security.beta.kubernetes.io/app"], "localhost/")
				if !field && !annotation {
					t.Errorf("the pod carries no AppArmor Localhost profile: %+v %v", c.SecurityContext, got.Annotations)
				}
			})

			t.Run("after a spec change pods are refused until the nodes load the new generation", func(t *testing.T) {
				web.Spec.BuiltinRules = []v1alpha1.BuiltinRule{{Name: "disallow-write-core-pattern"}}
				if err := cp.Client.Update(t.Context(), web); err != nil {
					t.Fatal(err)
				}
				framework.WaitFor(t, 0, "pods of web to be refused at generation 2", refused)
				putNodeStatus(t, cp, "node-a", entry(2))
				putNodeStatus(t, cp, "node-b", entry(2))
				statusIs(t, cp, web, "web ready at generation 2", readyIs(2, metav1.ConditionTrue, policystatus.ReasonLoaded, 2, 0, 2))
				framework.WaitFor(t, 0, "pods of web to be admitted at generation 2", func(ctx context.Context) (bool, error) {
					return cp.DryRunCreate(t, pod()) == nil, nil
				})
			})
		})
	}
}
