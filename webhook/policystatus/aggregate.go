package policystatus

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// Condition types the aggregator owns on a policy's status. Other conditions (the
// webhook's Conflict) are left alone.
const (
	// ConditionReady is True when the policy's current generation is ready on every
	// node that runs an enforcer: the webhook then injects its AppArmor and seccomp
	// profiles.
	ConditionReady = "Ready"
	// ConditionRulesEnforced is False when some node leaves rules of the policy out
	// because its kernel lacks a feature, or lacks an enforcer the policy names.
	ConditionRulesEnforced = "RulesEnforced"
)

// Reasons of the conditions.
const (
	ReasonLoaded              = "Loaded"
	ReasonNoEnforcerNodes     = "NoEnforcerNodes"
	ReasonLoadFailed          = "LoadFailed"
	ReasonEnforcerUnsupported = "EnforcerUnsupported"
	ReasonPending             = "Pending"
	ReasonAllRulesEnforced    = "AllRulesEnforced"
	ReasonRulesNotEnforced    = "RulesNotEnforced"
)

// maxListed is how many nodes or rules a condition message names; the rest are counted.
const maxListed = 5

// maxReason is how much of one node's reason a message quotes.
const maxReason = 200

// Policy is what aggregation needs of an ArmorPolicy or ClusterArmorPolicy.
type Policy struct {
	Kind       v1alpha1.PolicyKind
	Namespace  string // empty for a ClusterArmorPolicy
	Name       string
	UID        types.UID
	Generation int64
	ProfileID  string
	Enforcers  []v1alpha1.Enforcer
	Mode       v1alpha1.Mode
	// Status is the policy's current status; conditions other than the aggregator's
	// and transition times of unchanged conditions carry over from it.
	Status v1alpha1.PolicyStatus
}

// String names the policy for logs: "ArmorPolicy shop/web".
func (p Policy) String() string {
	if p.Namespace == "" {
		return fmt.Sprintf("%s %s", p.Kind, p.Name)
	}
	return fmt.Sprintf("%s %s/%s", p.Kind, p.Namespace, p.Name)
}

// nodeState is what one node's report says of a policy.
type nodeState int

const (
	nodeReady nodeState = iota
	// nodePending: the node has not reported the current generation, or not every
	// enforcer's result for it.
	nodePending
	// nodeUnsupported: the node lacks an enforcer whose profile the webhook would put
	// on the pod (AppArmor, or seccomp with a Localhost profile).
	nodeUnsupported
	nodeFailed
)

// nodeVerdict is one node's state for a policy, with what to say about it.
type nodeVerdict struct {
	node   string
	state  nodeState
	reason string
}

// unenforced is one thing a node does not enforce, as a condition message lists it.
type unenforced struct {
	what  string
	nodes int
}

// NeedsNodeProfile reports whether the webhook puts a profile of enforcer e on the pods
// of a policy in mode m that must exist on the node: the AppArmor profile unless the
// mode is AlwaysAllow, the seccomp Localhost file in mode EnhanceProtect. Kubelet
// refuses to start a container whose profile its node lacks, so a node where such an
// enforcer is Unsupported is not ready for the policy; a node without BPF LSM runs the
// pod without BPF confinement, which the RulesEnforced condition reports instead.
func NeedsNodeProfile(m v1alpha1.Mode, e v1alpha1.Enforcer) bool {
	switch e {
	case v1alpha1.EnforcerAppArmor:
		return m != v1alpha1.ModeAlwaysAllow
	case v1alpha1.EnforcerSeccomp:
		return m == v1alpha1.ModeEnhanceProtect
	}
	return false
}

// Find returns the entry of report for p, or nil. An entry with another uid is an
// earlier policy of the same name and does not count.
func Find(report *v1alpha1.NodeReport, p Policy) *v1alpha1.NodePolicyStatus {
	for i := range report.Policies {
		e := &report.Policies[i]
		if e.Kind == p.Kind && e.Namespace == p.Namespace && e.Name == p.Name {
			if e.UID != "" && p.UID != "" && e.UID != p.UID {
				return nil
			}
			return e
		}
	}
	return nil
}

// judge decides what a node's report says of p.
func judge(n *v1alpha1.ArmorNodeStatus, p Policy) nodeVerdict {
	v := nodeVerdict{node: n.Name}
	e := Find(&n.Status, p)
	switch {
	case e == nil:
		v.state, v.reason = nodePending, "not reported yet"
		return v
	case e.Generation != p.Generation:
		v.state, v.reason = nodePending, fmt.Sprintf("has generation %d", e.Generation)
		return v
	}
	var failed, unsupported, pending []string
	for _, want := range p.Enforcers {
		i := slices.IndexFunc(e.Enforcers, func(r v1alpha1.EnforcerResult) bool { return r.Enforcer == want })
		if i < 0 {
			pending = append(pending, fmt.Sprintf("no %s result", want))
			continue
		}
		r := e.Enforcers[i]
		switch r.State {
		case v1alpha1.LoadLoaded:
		case v1alpha1.LoadUnsupported:
			if NeedsNodeProfile(p.Mode, want) {
				unsupported = append(unsupported, fmt.Sprintf("%s unsupported: %s", want, orUnknown(r.Reason)))
			}
		default: // Failed, and states a newer enforcer may add
			failed = append(failed, fmt.Sprintf("%s %s: %s", want, strings.ToLower(string(r.State)), orUnknown(r.Reason)))
		}
	}
	switch {
	case len(failed) > 0:
		v.state, v.reason = nodeFailed, strings.Join(failed, "; ")
	case len(unsupported) > 0:
		v.state, v.reason = nodeUnsupported, strings.Join(unsupported, "; ")
	case len(pending) > 0:
		v.state, v.reason = nodePending, strings.Join(pending, ", ")
	}
	return v
}

// Compute returns p's status given the reports of every node that runs an enforcer.
// It is a pure function of its arguments (now stamps conditions whose status changes).
//
// A node is ready for p when its report has p at p's generation with every enforcer p
// names Loaded, or Unsupported where the webhook does not depend on the node having
// it (BPF always; AppArmor in mode AlwaysAllow; seccomp unless the mode is
// EnhanceProtect; see NeedsNodeProfile). It is failed when an enforcer Failed, and
// neither (pending, or unsupported) otherwise. Ready is True only when every one of at
// least one reporting nodes is ready.
func Compute(p Policy, nodes []*v1alpha1.ArmorNodeStatus, now metav1.Time) v1alpha1.PolicyStatus {
	st := v1alpha1.PolicyStatus{
		ObservedGeneration: p.Generation,
		ProfileID:          p.ProfileID,
		Conditions:         slices.Clone(p.Status.Conditions),
		TotalNodes:         int32(len(nodes)),
	}
	var notReady []nodeVerdict
	var counts [nodeFailed + 1]int
	gaps := map[string]int{}
	for _, n := range nodes {
		v := judge(n, p)
		counts[v.state]++
		if v.state != nodeReady {
			notReady = append(notReady, v)
		}
		for _, g := range gapsOf(n, p) {
			gaps[g]++
		}
	}
	st.ReadyNodes = int32(counts[nodeReady])
	st.FailedNodes = int32(counts[nodeFailed])

	ready := metav1.Condition{Type: ConditionReady, ObservedGeneration: p.Generation, LastTransitionTime: now}
	enforced := metav1.Condition{Type: ConditionRulesEnforced, ObservedGeneration: p.Generation, LastTransitionTime: now}
	switch {
	case len(nodes) == 0:
		ready.Status, ready.Reason = metav1.ConditionFalse, ReasonNoEnforcerNodes
		ready.Message = "no node has reported a podarmor enforcer yet"
		enforced.Status, enforced.Reason = metav1.ConditionUnknown, ReasonNoEnforcerNodes
		enforced.Message = ready.Message
	case len(notReady) == 0:
		ready.Status, ready.Reason = metav1.ConditionTrue, ReasonLoaded
		ready.Message = fmt.Sprintf("generation %d is ready on all %d nodes", p.Generation, len(nodes))
	default:
		ready.Status = metav1.ConditionFalse
		switch {
		case counts[nodeFailed] > 0:
			ready.Reason = ReasonLoadFailed
		case counts[nodeUnsupported] > 0:
			ready.Reason = ReasonEnforcerUnsupported
		default:
			ready.Reason = ReasonPending
		}
		ready.Message = notReadyMessage(p.Generation, len(nodes), notReady)
	}
	if len(nodes) > 0 {
		if len(gaps) == 0 {
			enforced.Status, enforced.Reason = metav1.ConditionTrue, ReasonAllRulesEnforced
			enforced.Message = "every reporting node enforces every rule with every enforcer of the policy"
		} else {
			enforced.Status, enforced.Reason = metav1.ConditionFalse, ReasonRulesNotEnforced
			enforced.Message = gapsMessage(gaps)
		}
	}
	meta.SetStatusCondition(&st.Conditions, ready)
	meta.SetStatusCondition(&st.Conditions, enforced)
	return st
}

// gapsOf lists what node n does not enforce of p at p's generation: whole enforcers it
// lacks, and rules it leaves out for a missing kernel feature.
func gapsOf(n *v1alpha1.ArmorNodeStatus, p Policy) []string {
	e := Find(&n.Status, p)
	if e == nil || e.Generation != p.Generation {
		return nil
	}
	var out []string
	for _, r := range e.Enforcers {
		if r.State == v1alpha1.LoadUnsupported && slices.Contains(p.Enforcers, r.Enforcer) {
			out = append(out, fmt.Sprintf("enforcer %s (%s)", r.Enforcer, orUnknown(clip(r.Reason))))
		}
	}
	for _, r := range e.UnenforcedRules {
		with := ""
		if r.Enforcer != "" {
			with = " by " + string(r.Enforcer)
		}
		out = append(out, fmt.Sprintf("rule %s%s (missing %s)", r.Rule, with, clip(r.MissingFeature)))
	}
	if e.UnenforcedRulesOmitted > 0 {
		out = append(out, "further rules the node did not list")
	}
	return out
}

// notReadyMessage names a few nodes that are not ready, failed ones first.
func notReadyMessage(generation int64, total int, vs []nodeVerdict) string {
	slices.SortFunc(vs, func(a, b nodeVerdict) int {
		if a.state != b.state {
			return int(b.state) - int(a.state)
		}
		return strings.Compare(a.node, b.node)
	})
	var b strings.Builder
	fmt.Fprintf(&b, "generation %d is not ready on %d of %d nodes: ", generation, len(vs), total)
	for i, v := range vs[:min(len(vs), maxListed)] {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", v.node, clip(v.reason))
	}
	if len(vs) > maxListed {
		fmt.Fprintf(&b, "; and %d more", len(vs)-maxListed)
	}
	return b.String()
}

// gapsMessage names the most widespread gaps with the number of nodes of each.
func gapsMessage(gaps map[string]int) string {
	list := make([]unenforced, 0, len(gaps))
	for what, n := range gaps {
		list = append(list, unenforced{what, n})
	}
	slices.SortFunc(list, func(a, b unenforced) int {
		if a.nodes != b.nodes {
			return b.nodes - a.nodes
		}
		return strings.Compare(a.what, b.what)
	})
	parts := make([]string, 0, maxListed+1)
	for _, g := range list[:min(len(list), maxListed)] {
		parts = append(parts, fmt.Sprintf("%s on %d %s", g.what, g.nodes, plural(g.nodes, "node", "nodes")))
	}
	if len(list) > maxListed {
		parts = append(parts, fmt.Sprintf("and %d more", len(list)-maxListed))
	}
	return "not enforced: " + strings.Join(parts, "; ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func orUnknown(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

// clip shortens s for a condition message, on a character boundary.
func clip(s string) string {
	if len(s) <= maxReason {
		return s
	}
	cut := maxReason
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
