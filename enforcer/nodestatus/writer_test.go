package nodestatus

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

func TestNormalize(t *testing.T) {
	var rules []v1alpha1.UnenforcedRule
	for range v1alpha1.MaxUnenforcedRules + 5 {
		rules = append(rules, v1alpha1.UnenforcedRule{Rule: "builtin/x", MissingFeature: "BPF LSM hook path_chmod"})
	}
	start := time.Date(2026, 11, 27, 4, 0, 0, 123456789, time.UTC)
	in := v1alpha1.NodeReport{
		Enforcer: v1alpha1.EnforcerInfo{Version: "v0.1.0", StartTime: metav1.NewTime(start)},
		Features: v1alpha1.NodeFeatures{UnattachedHooks: make([]v1alpha1.UnattachedHook, v1alpha1.MaxUnattachedHooks+1)},
		Policies: []v1alpha1.NodePolicyStatus{
			{Kind: v1alpha1.KindClusterArmorPolicy, Name: "default", Enforcers: []v1alpha1.EnforcerResult{
				{Enforcer: v1alpha1.EnforcerSeccomp, State: v1alpha1.LoadLoaded},
				{Enforcer: v1alpha1.EnforcerBPF, State: v1alpha1.LoadUnsupported, Reason: "no BPF LSM"},
			}},
			{Kind: v1alpha1.KindArmorPolicy, Namespace: "shop", Name: "web", UnenforcedRules: rules, UnenforcedRulesOmitted: 1,
				Enforcers: []v1alpha1.EnforcerResult{{Enforcer: v1alpha1.EnforcerAppArmor, State: v1alpha1.LoadFailed, Reason: strings.Repeat("é", v1alpha1.MaxReasonLength)}}},
			{Kind: v1alpha1.KindArmorPolicy, Namespace: "db", Name: "pg"},
		},
	}
	got := Normalize(in)

	if len(in.Policies[1].UnenforcedRules) != v1alpha1.MaxUnenforcedRules+5 {
		t.Errorf("Normalize changed its argument")
	}
	var order []string
	for _, p := range got.Policies {
		order = append(order, string(p.Kind)+" "+p.Namespace+"/"+p.Name)
	}
	if want := "ArmorPolicy db/pg,ArmorPolicy shop/web,ClusterArmorPolicy /default"; strings.Join(order, ",") != want {
		t.Errorf("policies in order %q, want %q", strings.Join(order, ","), want)
	}
	web := got.Policies[1]
	if len(web.UnenforcedRules) != v1alpha1.MaxUnenforcedRules || web.UnenforcedRulesOmitted != 6 {
		t.Errorf("web has %d unenforced rules and %d omitted; want %d and 6", len(web.UnenforcedRules), web.UnenforcedRulesOmitted, v1alpha1.MaxUnenforcedRules)
	}
	if r := web.Enforcers[0].Reason; len(r) > v1alpha1.MaxReasonLength || !strings.HasSuffix(r, "é") {
		t.Errorf("reason of %d bytes, want at most %d cut between characters", len(r), v1alpha1.MaxReasonLength)
	}
	if e := got.Policies[2].Enforcers; e[0].Enforcer != v1alpha1.EnforcerBPF || e[1].Enforcer != v1alpha1.EnforcerSeccomp {
		t.Errorf("enforcers %+v not in canonical order", e)
	}
	if n := len(got.Features.UnattachedHooks); n != v1alpha1.MaxUnattachedHooks {
		t.Errorf("%d unattached hooks kept, want %d", n, v1alpha1.MaxUnattachedHooks)
	}
	if s := got.Summary; s.Policies != 3 || s.Loaded != 2 || s.Failed != 1 {
		t.Errorf("summary %+v, want 3 policies, 2 loaded, 1 failed", s)
	}
	if st := got.Enforcer.StartTime.Time; !st.Equal(start.Truncate(time.Second)) {
		t.Errorf("start time %s, want whole seconds", st)
	}
}

func TestNewRejectsBadArguments(t *testing.T) {
	tests := map[string]struct {
		node string
		opts Options
		want string
	}{
		"no node name":                      {node: "", want: "no node name"},
		"a backoff ceiling below its floor": {node: "n", opts: Options{MinBackoff: time.Second, MaxBackoff: time.Millisecond}, want: "MaxBackoff"},
		"a negative interval":               {node: "n", opts: Options{Interval: -time.Second}, want: "Interval"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := New(fakeClient(), tc.node, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func fakeClient() *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClient(runtime.NewScheme())
}
