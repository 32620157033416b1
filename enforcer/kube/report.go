package kube

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podarmor/podarmor/enforcer/profiles"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	compileapparmor "github.com/podarmor/podarmor/policies/compile/apparmor"
)

// nodeFeatures is what the node's kernel offers podarmor, for its ArmorNodeStatus;
// securityFS is where securityfs is mounted.
func nodeFeatures(pc profiles.Config, securityFS string) v1alpha1.NodeFeatures {
	f := v1alpha1.NodeFeatures{BPFLSM: pc.BPF != nil, AppArmor: pc.AppArmor != nil, Seccomp: pc.Seccomp != nil}
	if f.AppArmor {
		f.AppArmorABI = string(compileapparmor.ABI30) // what compile.DefaultBackends writes
		if entries, err := os.ReadDir(filepath.Join(securityFS, "apparmor", "features")); err == nil {
			for _, e := range entries {
				f.AppArmorFeatures = append(f.AppArmorFeatures, e.Name())
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		f.KernelRelease = unix.ByteSliceToString(u.Release[:])
	}
	for h, reason := range pc.MissingHooks {
		f.UnattachedHooks = append(f.UnattachedHooks, v1alpha1.UnattachedHook{Hook: h, Reason: reason})
	}
	return f
}

// nodeReport turns the results of the node's policies into its ArmorNodeStatus report.
func nodeReport(started time.Time, features v1alpha1.NodeFeatures, results []PolicyResult) v1alpha1.NodeReport {
	r := v1alpha1.NodeReport{
		Enforcer: v1alpha1.EnforcerInfo{StartTime: metav1.NewTime(started)},
		Features: features,
	}
	for _, pr := range results {
		ps := v1alpha1.NodePolicyStatus{
			Kind: v1alpha1.PolicyKind(pr.Kind), Namespace: pr.Namespace, Name: pr.Name, UID: pr.UID,
			Generation: pr.Generation, ProfileID: pr.ProfileID,
		}
		if pr.CompileError != "" {
			for _, e := range pr.SpecEnforcers {
				ps.Enforcers = append(ps.Enforcers, v1alpha1.EnforcerResult{Enforcer: e, State: v1alpha1.LoadFailed, Reason: "does not compile on this node: " + pr.CompileError})
			}
		}
		for _, e := range pr.Enforcers {
			ps.Enforcers = append(ps.Enforcers, v1alpha1.EnforcerResult{Enforcer: e.Enforcer, State: v1alpha1.LoadState(e.State), Reason: e.Reason})
			for _, n := range e.NotEnforced {
				ps.UnenforcedRules = append(ps.UnenforcedRules, v1alpha1.UnenforcedRule{
					Rule: n.RuleID, Enforcer: e.Enforcer, MissingFeature: strings.TrimSpace(n.Reason),
				})
			}
		}
		r.Policies = append(r.Policies, ps)
	}
	return r
}
