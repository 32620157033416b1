package policystatus

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

var (
	t0 = metav1.NewTime(time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC))
	t1 = metav1.NewTime(t0.Add(time.Minute))
)

func webPolicy(mut func(*Policy)) Policy {
	p := Policy{
		Kind: v1alpha1.KindArmorPolicy, Namespace: "shop", Name: "web", UID: "uid-web", Generation: 3,
		ProfileID: "ap.shop.web", Enforcers: v1alpha1.Enforcers, Mode: v1alpha1.ModeEnhanceProtect,
	}
	if mut != nil {
		mut(&p)
	}
	return p
}

// entry is web's entry at generation 3 with every enforcer Loaded, changed by mut.
func entry(mut func(*v1alpha1.NodePolicyStatus)) v1alpha1.NodePolicyStatus {
	e := v1alpha1.NodePolicyStatus{
		Kind: v1alpha1.KindArmorPolicy, Namespace: "shop", Name: "web", UID: "uid-web", Generation: 3,
		ProfileID: "ap.shop.web",
		Enforcers: []v1alpha1.EnforcerResult{
			{Enforcer: v1alpha1.EnforcerBPF, State: v1alpha1.LoadLoaded},
			{Enforcer: v1alpha1.EnforcerAppArmor, State: v1alpha1.LoadLoaded},
			{Enforcer: v1alpha1.EnforcerSeccomp, State: v1alpha1.LoadLoaded},
		},
	}
	if mut != nil {
		mut(&e)
	}
	return e
}

func node(name string, entries ...v1alpha1.NodePolicyStatus) *v1alpha1.ArmorNodeStatus {
	n := &v1alpha1.ArmorNodeStatus{Status: v1alpha1.NodeReport{Policies: entries}}
	n.Name = name
	return n
}

func result(e v1alpha1.Enforcer, s v1alpha1.LoadState, reason string) func(*v1alpha1.NodePolicyStatus) {
	return func(p *v1alpha1.NodePolicyStatus) {
		for i := range p.Enforcers {
			if p.Enforcers[i].Enforcer == e {
				p.Enforcers[i].State, p.Enforcers[i].Reason = s, reason
			}
		}
	}
}

func TestCompute(t *testing.T) {
	type want struct {
		ready, failed, total int32
		readyStatus          metav1.ConditionStatus
		readyReason          string
		readyMessage         []string // substrings
		enforced             metav1.ConditionStatus
		enforcedMessage      []string
	}
	tests := map[string]struct {
		policy Policy
		nodes  []*v1alpha1.ArmorNodeStatus
		want   want
	}{
		"no enforcer node: not ready, enforcement unknown": {
			policy: webPolicy(nil),
			want: want{readyStatus: metav1.ConditionFalse, readyReason: ReasonNoEnforcerNodes,
				enforced: metav1.ConditionUnknown},
		},
		"loaded everywhere: ready": {
			policy: webPolicy(nil),
			nodes:  []*v1alpha1.ArmorNodeStatus{node("a", entry(nil)), node("b", entry(nil))},
			want: want{ready: 2, total: 2, readyStatus: metav1.ConditionTrue, readyReason: ReasonLoaded,
				readyMessage: []string{"generation 3 is ready on all 2 nodes"}, enforced: metav1.ConditionTrue},
		},
		"a node at an older generation is pending": {
			policy: webPolicy(nil),
			nodes: []*v1alpha1.ArmorNodeStatus{node("a", entry(nil)),
				node("b", entry(func(e *v1alpha1.NodePolicyStatus) { e.Generation = 2 }))},
			want: want{ready: 1, total: 2, readyStatus: metav1.ConditionFalse, readyReason: ReasonPending,
				readyMessage: []string{"not ready on 1 of 2 nodes", "b: has generation 2"}, enforced: metav1.ConditionTrue},
		},
		"a node that does not list the policy is pending": {
			policy: webPolicy(nil),
			nodes:  []*v1alpha1.ArmorNodeStatus{node("a", entry(nil)), node("b")},
			want: want{ready: 1, total: 2, readyStatus: metav1.ConditionFalse, readyReason: ReasonPending,
				readyMessage: []string{"b: not reported yet"}, enforced: metav1.ConditionTrue},
		},
		"an entry of an earlier policy of the same name does not count": {
			policy: webPolicy(nil),
			nodes:  []*v1alpha1.ArmorNodeStatus{node("a", entry(func(e *v1alpha1.NodePolicyStatus) { e.UID = "old" }))},
			want: want{total: 1, readyStatus: metav1.ConditionFalse, readyReason: ReasonPending,
				readyMessage: []string{"a: not reported yet"}, enforced: metav1.ConditionTrue},
		},
		"a missing enforcer result is pending": {
			policy: webPolicy(nil),
			nodes: []*v1alpha1.ArmorNodeStatus{node("a", entry(func(e *v1alpha1.NodePolicyStatus) {
				e.Enforcers = e.Enforcers[:2]
			}))},
			want: want{total: 1, readyStatus: metav1.ConditionFalse, readyReason: ReasonPending,
				readyMessage: []string{"a: no Seccomp result"}, enforced: metav1.ConditionTrue},
		},
		"a failed enforcer fails the node and is named first": {
			policy: webPolicy(nil),
			nodes: []*v1alpha1.ArmorNodeStatus{
				node("a", entry(nil)),
				node("b"),
				node("c", entry(result(v1alpha1.EnforcerAppArmor, v1alpha1.LoadFailed, "apparmor_parser: syntax error"))),
			},
			want: want{ready: 1, failed: 1, total: 3, readyStatus: metav1.ConditionFalse, readyReason: ReasonLoadFailed,
				readyMessage: []string{"not ready on 2 of 3 nodes: c: AppArmor failed: apparmor_parser: syntax error; b: not reported yet"},
				enforced:     metav1.ConditionTrue},
		},
		"BPF unsupported leaves the node ready but not every rule enforced": {
			policy: webPolicy(nil),
			nodes: []*v1alpha1.ArmorNodeStatus{
				node("a", entry(nil)),
				node("b", entry(result(v1alpha1.EnforcerBPF, v1alpha1.LoadUnsupported, "bpf is not an active LSM"))),
			},
			want: want{ready: 2, total: 2, readyStatus: metav1.ConditionTrue, readyReason: ReasonLoaded,
				enforced: metav1.ConditionFalse, enforcedMessage: []string{"enforcer BPF (bpf is not an active LSM) on 1 node"}},
		},
		"AppArmor unsupported makes the node not ready: kubelet would refuse the pod": {
			policy: webPolicy(nil),
			nodes: []*v1alpha1.ArmorNodeStatus{
				node("a", entry(nil)),
				node("b", entry(result(v1alpha1.EnforcerAppArmor, v1alpha1.LoadUnsupported, "AppArmor is not enabled"))),
			},
			want: want{ready: 1, total: 2, readyStatus: metav1.ConditionFalse, readyReason: ReasonEnforcerUnsupported,
				readyMessage: []string{"b: AppArmor unsupported: AppArmor is not enabled"},
				enforced:     metav1.ConditionFalse, enforcedMessage: []string{"enforcer AppArmor (AppArmor is not enabled) on 1 node"}},
		},
		"AppArmor unsupported does not matter in mode AlwaysAllow": {
			policy: webPolicy(func(p *Policy) { p.Mode = v1alpha1.ModeAlwaysAllow }),
			nodes: []*v1alpha1.ArmorNodeStatus{
				node("b", entry(result(v1alpha1.EnforcerAppArmor, v1alpha1.LoadUnsupported, "AppArmor is not enabled"))),
			},
			want: want{ready: 1, total: 1, readyStatus: metav1.ConditionTrue, readyReason: ReasonLoaded,
				enforced: metav1.ConditionFalse},
		},
		"seccomp unsupported matters only with a Localhost profile": {
			policy: webPolicy(func(p *Policy) { p.Mode = v1alpha1.ModeRuntimeDefault }),
			nodes: []*v1alpha1.ArmorNodeStatus{
				node("b", entry(result(v1alpha1.EnforcerSeccomp, v1alpha1.LoadUnsupported, "no seccomp"))),
			},
			want: want{ready: 1, total: 1, readyStatus: metav1.ConditionTrue, readyReason: ReasonLoaded,
				enforced: metav1.ConditionFalse},
		},
		"only the enforcers the policy names count": {
			policy: webPolicy(func(p *Policy) { p.Enforcers = []v1alpha1.Enforcer{v1alpha1.EnforcerBPF} }),
			nodes: []*v1alpha1.ArmorNodeStatus{
				node("a", entry(func(e *v1alpha1.NodePolicyStatus) {
					e.Enforcers = []v1alpha1.EnforcerResult{{Enforcer: v1alpha1.EnforcerBPF, State: v1alpha1.LoadLoaded}}
				})),
			},
			want: want{ready: 1, total: 1, readyStatus: metav1.ConditionTrue, readyReason: ReasonLoaded, enforced: metav1.ConditionTrue},
		},
		"unenforced rules are counted by node, the most widespread first": {
			policy: webPolicy(nil),
			nodes: []*v1alpha1.ArmorNodeStatus{
				node("a", entry(func(e *v1alpha1.NodePolicyStatus) {
					e.UnenforcedRules = []v1alpha1.UnenforcedRule{
						{Rule: "builtin/disallow-chmod-suid", Enforcer: v1alpha1.EnforcerBPF, MissingFeature: "BPF LSM hook path_chmod"},
						{Rule: "builtin/disallow-mount", Enforcer: v1alpha1.EnforcerAppArmor, MissingFeature: "AppArmor mount mediation"},
					}
				})),
				node("b", entry(func(e *v1alpha1.NodePolicyStatus) {
					e.UnenforcedRules = []v1alpha1.UnenforcedRule{
						{Rule: "builtin/disallow-chmod-suid", Enforcer: v1alpha1.EnforcerBPF, MissingFeature: "BPF LSM hook path_chmod"},
					}
					e.UnenforcedRulesOmitted = 4
				})),
			},
			want: want{ready: 2, total: 2, readyStatus: metav1.ConditionTrue, readyReason: ReasonLoaded,
				enforced: metav1.ConditionFalse, enforcedMessage: []string{
					"not enforced: rule builtin/disallow-chmod-suid by BPF (missing BPF LSM hook path_chmod) on 2 nodes; ",
					"rule builtin/disallow-mount by AppArmor (missing AppArmor mount mediation) on 1 node",
					"further rules the node did not list on 1 node",
				}},
		},
		"a long list of failing nodes is cut": {
			policy: webPolicy(nil),
			nodes: func() []*v1alpha1.ArmorNodeStatus {
				var ns []*v1alpha1.ArmorNodeStatus
				for _, n := range []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7"} {
					ns = append(ns, node(n))
				}
				return ns
			}(),
			want: want{total: 7, readyStatus: metav1.ConditionFalse, readyReason: ReasonPending,
				readyMessage: []string{"not ready on 7 of 7 nodes: n1: not reported yet;", "n5: not reported yet; and 2 more"},
				enforced:     metav1.ConditionTrue},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Compute(tc.policy, tc.nodes, t0)
			if got.ObservedGeneration != tc.policy.Generation || got.ProfileID != tc.policy.ProfileID {
				t.Errorf("observedGeneration %d, profileID %q; want %d, %q", got.ObservedGeneration, got.ProfileID, tc.policy.Generation, tc.policy.ProfileID)
			}
			if got.ReadyNodes != tc.want.ready || got.FailedNodes != tc.want.failed || got.TotalNodes != tc.want.total {
				t.Errorf("ready/failed/total %d/%d/%d, want %d/%d/%d", got.ReadyNodes, got.FailedNodes, got.TotalNodes,
					tc.want.ready, tc.want.failed, tc.want.total)
			}
			r := meta.FindStatusCondition(got.Conditions, ConditionReady)
			if r == nil || r.Status != tc.want.readyStatus || r.Reason != tc.want.readyReason || r.ObservedGeneration != 3 {
				t.Fatalf("Ready condition %+v, want status %s reason %s at generation 3", r, tc.want.readyStatus, tc.want.readyReason)
			}
			for _, s := range tc.want.readyMessage {
				if !strings.Contains(r.Message, s) {
					t.Errorf("Ready message %q lacks %q", r.Message, s)
				}
			}
			e := meta.FindStatusCondition(got.Conditions, ConditionRulesEnforced)
			if e == nil || e.Status != tc.want.enforced {
				t.Fatalf("RulesEnforced condition %+v, want status %s", e, tc.want.enforced)
			}
			for _, s := range tc.want.enforcedMessage {
				if !strings.Contains(e.Message, s) {
					t.Errorf("RulesEnforced message %q lacks %q", e.Message, s)
				}
			}
		})
	}
}

func TestComputeKeepsOtherConditionsAndTransitionTimes(t *testing.T) {
	p := webPolicy(nil)
	nodes := []*v1alpha1.ArmorNodeStatus{node("a", entry(nil))}
	first := Compute(p, nodes, t0)
	first.Conditions = append(first.Conditions, metav1.Condition{Type: "Conflict", Status: metav1.ConditionTrue, Reason: "AppliesAsOldest", LastTransitionTime: t0})

	p.Status = first
	again := Compute(p, append(nodes, node("b", entry(nil))), t1)
	if c := meta.FindStatusCondition(again.Conditions, "Conflict"); c == nil {
		t.Errorf("the Conflict condition was dropped: %+v", again.Conditions)
	}
	if r := meta.FindStatusCondition(again.Conditions, ConditionReady); !r.LastTransitionTime.Equal(&t0) || !strings.Contains(r.Message, "all 2 nodes") {
		t.Errorf("Ready stayed True but got %+v; want transition time %s kept and the new message", r, t0)
	}

	p.Status = again
	p.Generation = 4
	changed := Compute(p, nodes, t1)
	if r := meta.FindStatusCondition(changed.Conditions, ConditionReady); r.Status != metav1.ConditionFalse || !r.LastTransitionTime.Equal(&t1) || r.ObservedGeneration != 4 {
		t.Errorf("after a spec change Ready is %+v; want False since %s at generation 4", r, t1)
	}
}

func TestChangedPolicies(t *testing.T) {
	a := entry(nil)
	b := entry(func(e *v1alpha1.NodePolicyStatus) { e.Name = "db" })
	c := entry(func(e *v1alpha1.NodePolicyStatus) {
		e.Kind, e.Namespace, e.Name = v1alpha1.KindClusterArmorPolicy, "", "default"
	})
	a2 := entry(func(e *v1alpha1.NodePolicyStatus) { e.Generation = 4 })
	old := &v1alpha1.NodeReport{Policies: []v1alpha1.NodePolicyStatus{a, b}}
	cur := &v1alpha1.NodeReport{Policies: []v1alpha1.NodePolicyStatus{a2, b, c}}
	got := map[key]bool{}
	for _, k := range changedPolicies(old, cur) {
		got[k] = true
	}
	want := map[key]bool{
		{v1alpha1.KindArmorPolicy, "shop", "web"}:        true,
		{v1alpha1.KindClusterArmorPolicy, "", "default"}: true,
	}
	if len(got) != len(want) || !got[key{v1alpha1.KindArmorPolicy, "shop", "web"}] || !got[key{v1alpha1.KindClusterArmorPolicy, "", "default"}] {
		t.Errorf("changed %v, want %v", got, want)
	}
	if gone := changedPolicies(cur, old); len(gone) != 2 {
		t.Errorf("a removed entry is a change: got %v", gone)
	}
}
