package e2e

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// TestArmorPolicySchema checks that the API server itself enforces the CRD's schema:
// CEL rules reject invalid policies with their message at the offending field, and
// defaults are filled in. This is what protects a cluster whose webhook is down, and it
// must hold on the oldest version we support too (CEL rules in CRDs are GA since 1.29).
func TestArmorPolicySchema(t *testing.T) {
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			cp := framework.StartControlPlane(t, framework.Options{Version: version})
			ns := cp.CreateNamespace(t, nil)

			t.Run("defaults", func(t *testing.T) {
				policy := minimalPolicy(ns.Name, "defaults")
				if err := cp.Client.Create(t.Context(), policy); err != nil {
					t.Fatalf("create ArmorPolicy: %v", err)
				}
				got := &v1alpha1.ArmorPolicy{}
				if err := cp.Client.Get(t.Context(), client.ObjectKeyFromObject(policy), got); err != nil {
					t.Fatalf("get ArmorPolicy: %v", err)
				}
				if got.Spec.Action != v1alpha1.ActionEnforce {
					t.Errorf("spec.action: got %q, want the default %q", got.Spec.Action, v1alpha1.ActionEnforce)
				}
				if got.Spec.Admission.WhenNotReady != v1alpha1.NotReadyReject {
					t.Errorf("spec.admission.whenNotReady: got %q, want the default %q", got.Spec.Admission.WhenNotReady, v1alpha1.NotReadyReject)
				}
			})

			tests := map[string]struct {
				edit    func(*v1alpha1.ArmorPolicySpec)
				field   string
				message string
			}{
				"an egress port range that ends below its start is rejected": {
					edit: func(s *v1alpha1.ArmorPolicySpec) {
						s.Mode = v1alpha1.ModeEnhanceProtect
						s.CustomRules = &v1alpha1.CustomRules{Network: []v1alpha1.NetworkRule{{
							Egress: &v1alpha1.EgressMatch{Ports: []v1alpha1.PortRange{{Port: 8080, EndPort: ptr.To[int32](80)}}},
						}}}
					},
					field:   "spec.customRules.network[0].egress.ports[0]",
					message: "endPort must not be below port",
				},
				"a network rule with neither sockets nor egress is rejected": {
					edit: func(s *v1alpha1.ArmorPolicySpec) {
						s.Mode = v1alpha1.ModeEnhanceProtect
						s.CustomRules = &v1alpha1.CustomRules{Network: []v1alpha1.NetworkRule{{}}}
					},
					field:   "spec.customRules.network[0]",
					message: "exactly one of sockets or egress must be set",
				},
				"custom rules outside mode EnhanceProtect are rejected": {
					edit: func(s *v1alpha1.ArmorPolicySpec) {
						s.Mode = v1alpha1.ModeRuntimeDefault
						s.CustomRules = &v1alpha1.CustomRules{Network: []v1alpha1.NetworkRule{{
							Egress: &v1alpha1.EgressMatch{Ports: []v1alpha1.PortRange{{Port: 25}}},
						}}}
					},
					field:   "spec",
					message: "builtinRules and customRules take effect only in mode EnhanceProtect",
				},
			}
			for name, tc := range tests {
				t.Run(name, func(t *testing.T) {
					policy := minimalPolicy(ns.Name, "invalid")
					tc.edit(&policy.Spec)
					err := cp.DryRunCreate(t, policy)
					if err == nil {
						t.Fatal("the API server accepted the policy")
					}
					causes := framework.StatusCauses(err)
					for _, c := range causes {
						if c.Field == tc.field && strings.Contains(c.Message, tc.message) {
							return
						}
					}
					t.Errorf("rejected without %q at %s; error: %v; causes: %+v", tc.message, tc.field, err, causes)
				})
			}
		})
	}
}

// minimalPolicy is a valid ArmorPolicy that leaves every optional field unset.
func minimalPolicy(namespace, name string) *v1alpha1.ArmorPolicy {
	return &v1alpha1.ArmorPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: v1alpha1.ArmorPolicySpec{
			Target:    v1alpha1.Target{Selector: metav1.LabelSelector{}},
			Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF},
			Mode:      v1alpha1.ModeRuntimeDefault,
		},
	}
}
