package admission

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// store is a fixed policy.Store.
type store struct {
	armor   []*v1alpha1.ArmorPolicy
	cluster []*v1alpha1.ClusterArmorPolicy
}

func (s store) ArmorPolicies(ns string) []*v1alpha1.ArmorPolicy {
	var out []*v1alpha1.ArmorPolicy
	for _, p := range s.armor {
		if p.Namespace == ns {
			out = append(out, p)
		}
	}
	return out
}
func (s store) ClusterArmorPolicies() []*v1alpha1.ClusterArmorPolicy { return s.cluster }
func (s store) ClusterArmorPolicy(name string) (*v1alpha1.ClusterArmorPolicy, bool) {
	for _, p := range s.cluster {
		if p.Name == name {
			return p, true
		}
	}
	return nil, false
}
func (s store) Namespace(string) (*corev1.Namespace, bool) { return nil, false }

// readyAt is the status of a policy loaded on every node at generation.
func readyAt(generation int64) v1alpha1.PolicyStatus {
	return v1alpha1.PolicyStatus{
		ObservedGeneration: generation,
		Conditions:         []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Loaded"}},
	}
}

func armorPolicy(name string, created time.Time, mut func(*v1alpha1.ArmorPolicy)) *v1alpha1.ArmorPolicy {
	p := &v1alpha1.ArmorPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Generation: 2, CreationTimestamp: metav1.NewTime(created)},
		Spec: v1alpha1.ArmorPolicySpec{
			Target:    v1alpha1.Target{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
			Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor, v1alpha1.EnforcerSeccomp},
			Mode:      v1alpha1.ModeEnhanceProtect,
		},
		Status: readyAt(2),
	}
	if mut != nil {
		mut(p)
	}
	return p
}

func clusterPolicy(name string, priority int32, mut func(*v1alpha1.ClusterArmorPolicy)) *v1alpha1.ClusterArmorPolicy {
	p := &v1alpha1.ClusterArmorPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Spec: v1alpha1.ClusterArmorPolicySpec{
			ArmorPolicySpec: v1alpha1.ArmorPolicySpec{
				Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor, v1alpha1.EnforcerSeccomp},
				Mode:      v1alpha1.ModeRuntimeDefault,
			},
			Priority: priority,
		},
		Status: readyAt(1),
	}
	if mut != nil {
		mut(p)
	}
	return p
}

func pod(mut func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init"}},
			Containers:     []corev1.Container{{Name: "main"}, {Name: "sidecar"}},
		},
	}
	if mut != nil {
		mut(p)
	}
	return p
}

var shop = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"podarmor.io/enable": "true", "tier": "frontend"}}}

func localhost(s string) *string { return &s }

func TestPlanAndApply(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		store store
		pod   *corev1.Pod
		field bool // API server with the appArmorProfile field
		// want
		reject   string
		profile  string
		outcomes []Outcome
		check    func(t *testing.T, p *corev1.Pod)
	}{
		"a namespaced policy confines every container with both profiles": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, nil)}},
			pod:   pod(nil), field: true, profile: "ap.shop.web",
			outcomes: []Outcome{OutcomeConfined},
			check: func(t *testing.T, p *corev1.Pod) {
				for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
					sc := c.SecurityContext
					if sc == nil || sc.AppArmorProfile == nil || *sc.AppArmorProfile.LocalhostProfile != "podarmor-ap.shop.web" {
						t.Errorf("container %s: AppArmor %+v", c.Name, sc)
					}
					if sc == nil || sc.SeccompProfile == nil || *sc.SeccompProfile.LocalhostProfile != "podarmor/ap.shop.web.json" {
						t.Errorf("container %s: seccomp %+v", c.Name, sc)
					}
				}
				if p.Annotations[v1alpha1.AnnotationPolicy] != "ArmorPolicy shop/web@2" {
					t.Errorf("policy annotation %q", p.Annotations[v1alpha1.AnnotationPolicy])
				}
			},
		},
		"before Kubernetes 1.30 AppArmor goes into the annotation": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, nil)}},
			pod:   pod(nil), field: false, profile: "ap.shop.web",
			check: func(t *testing.T, p *corev1.Pod) {
				if got := p.Annotations[AppArmorAnnotationPrefix+"main"]; got != "localhost/podarmor-ap.shop.web" {
					t.Errorf("annotation %q", got)
				}
				if p.Spec.Containers[0].SecurityContext.AppArmorProfile != nil {
					t.Error("field set on an API server without it")
				}
			},
		},
		"the oldest of two matching namespaced policies wins": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("young", t0.Add(time.Hour), nil), armorPolicy("old", t0, nil)}},
			pod:   pod(nil), field: true, profile: "ap.shop.old",
			outcomes: []Outcome{OutcomeConflict, OutcomeConfined},
		},
		"a namespaced policy beats any cluster policy": {
			store: store{
				armor:   []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, nil)},
				cluster: []*v1alpha1.ClusterArmorPolicy{clusterPolicy("high", 1000, nil)},
			},
			pod: pod(nil), field: true, profile: "ap.shop.web",
		},
		"the cluster policy with the highest priority wins, then the first name": {
			store: store{cluster: []*v1alpha1.ClusterArmorPolicy{
				clusterPolicy("b-high", 10, nil), clusterPolicy("a-low", 1, nil), clusterPolicy("a-high", 10, nil),
			}},
			pod: pod(nil), field: true, profile: "cap.a-high",
		},
		"a cluster policy whose namespace selector does not match is skipped": {
			store: store{cluster: []*v1alpha1.ClusterArmorPolicy{
				clusterPolicy("backend", 10, func(p *v1alpha1.ClusterArmorPolicy) {
					p.Spec.NamespaceSelector.MatchLabels = map[string]string{"tier": "backend"}
				}),
				clusterPolicy("default", -1000, nil),
			}},
			pod: pod(nil), field: true, profile: "cap.default",
		},
		"without any matching policy the default applies": {
			store: store{cluster: []*v1alpha1.ClusterArmorPolicy{clusterPolicy("default", 0, func(p *v1alpha1.ClusterArmorPolicy) {
				p.Spec.Target.Selector.MatchLabels = map[string]string{"never": "matches"}
			})}},
			pod: pod(nil), field: true, profile: "cap.default",
			check: func(t *testing.T, p *corev1.Pod) {
				if sc := p.Spec.Containers[0].SecurityContext.SeccompProfile; sc.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("RuntimeDefault mode gave seccomp %+v", sc)
				}
			},
		},
		"without any policy and no default the pod is refused": {
			store: store{}, pod: pod(nil), field: true,
			reject: `the default ClusterArmorPolicy "default" does not exist`, outcomes: []Outcome{OutcomeRejectedNoPolicy},
		},
		"a policy not ready yet refuses the pod by default": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, func(p *v1alpha1.ArmorPolicy) { p.Status = v1alpha1.PolicyStatus{} })}},
			pod:   pod(nil), field: true,
			reject: "is not loaded on every node yet", outcomes: []Outcome{OutcomeRejectedNotReady},
		},
		"a policy changed since it was loaded refuses the pod until the nodes load the change": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, func(p *v1alpha1.ArmorPolicy) { p.Generation = 3 })}},
			pod:   pod(nil), field: true,
			reject: "generation 3 is not loaded yet; the status describes generation 2", outcomes: []Outcome{OutcomeRejectedNotReady},
		},
		"a policy not ready yet admits with BPF only when it says so": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, func(p *v1alpha1.ArmorPolicy) {
				p.Status = v1alpha1.PolicyStatus{}
				p.Spec.Admission.WhenNotReady = v1alpha1.NotReadyAdmitBPFOnly
			})}},
			pod: pod(nil), field: true, profile: "ap.shop.web", outcomes: []Outcome{OutcomeBPFOnly},
			check: func(t *testing.T, p *corev1.Pod) {
				sc := p.Spec.Containers[0].SecurityContext
				if sc.AppArmorProfile != nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("BPF-only pod got %+v", sc)
				}
			},
		},
		"a BPF-only policy needs no readiness": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, func(p *v1alpha1.ArmorPolicy) {
				p.Status = v1alpha1.PolicyStatus{}
				p.Spec.Enforcers = []v1alpha1.Enforcer{v1alpha1.EnforcerBPF}
			})}},
			pod: pod(nil), field: true, profile: "ap.shop.web",
		},
		"a container with its own profiles keeps them and the decision is recorded": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, nil)}},
			pod: pod(func(p *corev1.Pod) {
				p.Spec.Containers[1].SecurityContext = &corev1.SecurityContext{
					AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeLocalhost, LocalhostProfile: localhost("mine")},
					SeccompProfile:  &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined},
				}
			}),
			field: true, profile: "ap.shop.web",
			outcomes: []Outcome{OutcomeKeptOwnAppArmor, OutcomeKeptOwnSeccomp, OutcomeConfined},
			check: func(t *testing.T, p *corev1.Pod) {
				if *p.Spec.Containers[1].SecurityContext.AppArmorProfile.LocalhostProfile != "mine" {
					t.Error("own AppArmor profile replaced")
				}
				want := `{"sidecar":["kept-own-apparmor","kept-own-seccomp"]}`
				if got := p.Annotations[v1alpha1.AnnotationDecisions]; got != want {
					t.Errorf("decisions %s, want %s", got, want)
				}
			},
		},
		"a policy that overrides replaces the container's profiles": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, func(p *v1alpha1.ArmorPolicy) { p.Spec.Admission.OverrideProfiles = true })}},
			pod: pod(func(p *corev1.Pod) {
				p.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}
				p.Annotations = map[string]string{AppArmorAnnotationPrefix + "main": "unconfined"}
			}),
			field: true, profile: "ap.shop.web",
			check: func(t *testing.T, p *corev1.Pod) {
				if got := p.Annotations[AppArmorAnnotationPrefix+"main"]; got != "localhost/podarmor-ap.shop.web" {
					t.Errorf("the annotation must agree with the field, got %q", got)
				}
				if sc := p.Spec.Containers[0].SecurityContext.SeccompProfile; sc.Type != corev1.SeccompProfileTypeLocalhost {
					t.Errorf("seccomp %+v", sc)
				}
			},
		},
		"an allowed opt-out leaves the pod alone but records it": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, func(p *v1alpha1.ArmorPolicy) { p.Spec.Admission.AllowOptOut = true })}},
			pod:   pod(func(p *corev1.Pod) { p.Annotations = map[string]string{v1alpha1.AnnotationOptOut: "true"} }),
			field: true, outcomes: []Outcome{OutcomeOptedOut},
			check: func(t *testing.T, p *corev1.Pod) {
				if p.Labels[v1alpha1.LabelProfile] != "" || p.Spec.Containers[0].SecurityContext != nil {
					t.Error("an opted-out pod was confined")
				}
				if !strings.Contains(p.Annotations[v1alpha1.AnnotationDecisions], "opted-out") {
					t.Error("opt-out not recorded")
				}
			},
		},
		"an opt-out the policy does not allow is refused and the pod confined": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, nil)}},
			pod:   pod(func(p *corev1.Pod) { p.Annotations = map[string]string{v1alpha1.AnnotationOptOut: "true"} }),
			field: true, profile: "ap.shop.web", outcomes: []Outcome{OutcomeOptOutRefused, OutcomeConfined},
		},
		"target containers limit which containers get profiles": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, func(p *v1alpha1.ArmorPolicy) { p.Spec.Target.Containers = []string{"main"} })}},
			pod:   pod(nil), field: true, profile: "ap.shop.web",
			check: func(t *testing.T, p *corev1.Pod) {
				if p.Spec.Containers[1].SecurityContext != nil || p.Spec.InitContainers[0].SecurityContext != nil {
					t.Error("a container outside the target got profiles")
				}
			},
		},
		"a privileged container is confined like any other": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, nil)}},
			pod: pod(func(p *corev1.Pod) {
				p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
			}),
			field: true, profile: "ap.shop.web",
			check: func(t *testing.T, p *corev1.Pod) {
				sc := p.Spec.Containers[0].SecurityContext
				if !*sc.Privileged || sc.AppArmorProfile == nil || sc.SeccompProfile == nil {
					t.Errorf("privileged container: %+v", sc)
				}
			},
		},
		"AlwaysAllow labels the pod and sets no profile": {
			store: store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, func(p *v1alpha1.ArmorPolicy) {
				p.Spec.Mode = v1alpha1.ModeAlwaysAllow
				p.Status = v1alpha1.PolicyStatus{}
			})}},
			pod: pod(nil), field: true, profile: "ap.shop.web",
			check: func(t *testing.T, p *corev1.Pod) {
				if p.Spec.Containers[0].SecurityContext != nil {
					t.Error("AlwaysAllow set a profile")
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pl := &Planner{Store: tc.store, DefaultPolicy: "default"}
			p := tc.pod
			plan, err := pl.Plan(Request{Pod: p, Namespace: shop, AppArmorField: tc.field})
			if err != nil {
				t.Fatal(err)
			}
			if tc.reject != "" {
				if !strings.Contains(plan.Reject, tc.reject) {
					t.Errorf("reject %q, want %q", plan.Reject, tc.reject)
				}
				if Check(p, plan, tc.field, false) == nil {
					t.Error("Check admits a pod the plan rejects")
				}
			} else if plan.Reject != "" {
				t.Fatalf("unexpected reject: %s", plan.Reject)
			}
			if tc.outcomes != nil && !equalOutcomes(plan.Outcomes, tc.outcomes) {
				t.Errorf("outcomes %v, want %v", plan.Outcomes, tc.outcomes)
			}
			if tc.reject != "" {
				return
			}
			if Check(p, plan, tc.field, false) == nil && plan.ProfileID != "" && !plan.OptedOut {
				t.Error("Check admits the pod before it was mutated")
			}
			if err := Apply(p, plan, tc.field, false); err != nil {
				t.Fatal(err)
			}
			if got := p.Labels[v1alpha1.LabelProfile]; tc.profile != "" && got != tc.profile {
				t.Errorf("profile label %q, want %q", got, tc.profile)
			}
			// Reinvocation: planning and applying again changes nothing, and the
			// validating webhook admits the result.
			again, err := pl.Plan(Request{Pod: p, Namespace: shop, AppArmorField: tc.field})
			if err != nil {
				t.Fatal(err)
			}
			mutated := p.DeepCopy()
			if err := Apply(p, again, tc.field, false); err != nil {
				t.Fatal(err)
			}
			if !equalPods(mutated, p) {
				t.Error("a second application changed the pod")
			}
			if err := Check(p, again, tc.field, false); err != nil {
				t.Errorf("Check refuses the mutated pod: %v", err)
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
}

func equalOutcomes(a, b []Outcome) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalPods(a, b *corev1.Pod) bool {
	return a.String() == b.String()
}

func TestEphemeralContainers(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := store{armor: []*v1alpha1.ArmorPolicy{armorPolicy("web", t0, nil)}}
	pl := &Planner{Store: st, DefaultPolicy: "default"}
	p := pod(func(p *corev1.Pod) {
		p.Labels[v1alpha1.LabelProfile] = "ap.shop.web"
		p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger"}}}
	})
	plan, err := pl.Plan(Request{Pod: p, Namespace: shop, EphemeralOnly: true, AppArmorField: true})
	if err != nil || plan.Reject != "" {
		t.Fatalf("plan: %v %s", err, plan.Reject)
	}
	if err := Apply(p, plan, true, true); err != nil {
		t.Fatal(err)
	}
	if sc := p.Spec.EphemeralContainers[0].SecurityContext; sc == nil || sc.AppArmorProfile == nil || sc.SeccompProfile == nil {
		t.Errorf("debug container not confined: %+v", sc)
	}
	if p.Spec.Containers[0].SecurityContext != nil {
		t.Error("the ephemeralcontainers subresource changed a regular container")
	}

	t.Run("a pod admitted under another profile is refused a debug container", func(t *testing.T) {
		q := p.DeepCopy()
		q.Labels[v1alpha1.LabelProfile] = "ap.shop.other"
		plan, err := pl.Plan(Request{Pod: q, Namespace: shop, EphemeralOnly: true, AppArmorField: true})
		if err != nil || !strings.Contains(plan.Reject, "recreate the pod") {
			t.Errorf("plan %v, %q", err, plan.Reject)
		}
	})
}
