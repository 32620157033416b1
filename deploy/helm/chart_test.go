package helm

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/webhook/registration"
)

// EnforcerCapabilities are the enforcer's capabilities, each explained in
// docs/install.md and values.yaml; the DaemonSet must ask for exactly these.
var EnforcerCapabilities = []corev1.Capability{"BPF", "PERFMON", "SYS_RESOURCE", "MAC_ADMIN", "SYS_PTRACE", "AUDIT_READ"}

// enforcerHostPaths are the enforcer's host mounts with the default values.
var enforcerHostPaths = map[string]string{
	"bpffs":        "/sys/fs/bpf",
	"securityfs":   "/sys/kernel/security",
	"seccomp-root": "/var/lib/kubelet/seccomp",
	"run":          "/run/podarmor",
	"nri":          "/var/run/nri",
	"hook-dir":     "/opt/podarmor/bin",
	"apparmor-dir": "/var/lib/podarmor/apparmor",
}

// rule is one RBAC permission: verbs on a resource (group/resource[/subresource]),
// limited to resourceNames when set, in a namespace ("" for a ClusterRole).
type rule struct {
	Namespace, Resource, Names string
}

// The RBAC of each component, exactly: docs/install.md explains every line.
var (
	webhookRBAC = map[rule][]string{
		{"", "namespaces", ""}:                                                           {"get", "list", "watch"},
		{"", "podarmor.io/armorpolicies", ""}:                                            {"list", "watch"},
		{"", "podarmor.io/clusterarmorpolicies", ""}:                                     {"list", "watch"},
		{"", "podarmor.io/armorpolicies/status", ""}:                                     {"patch"},
		{"", "podarmor.io/clusterarmorpolicies/status", ""}:                              {"patch"},
		{"", "podarmor.io/armornodestatuses", ""}:                                        {"list", "watch"},
		{"", "admissionregistration.k8s.io/mutatingwebhookconfigurations", "podarmor"}:   {"get", "list", "watch", "patch"},
		{"", "admissionregistration.k8s.io/validatingwebhookconfigurations", "podarmor"}: {"get", "list", "watch", "patch"},
		{Namespace, "coordination.k8s.io/leases", "podarmor-webhook-certs"}:              {"get", "update"},
		{Namespace, "coordination.k8s.io/leases", ""}:                                    {"create"},
		{Namespace, "secrets", "podarmor-webhook-tls"}:                                   {"get", "list", "watch", "update"},
		{Namespace, "secrets", ""}:                                                       {"create"},
		{"default", "services", "kubernetes"}:                                            {"get"},
	}
	enforcerRBAC = map[rule][]string{
		{"", "pods", ""}:                             {"get", "list", "watch"},
		{"", "podarmor.io/armorpolicies", ""}:        {"list", "watch"},
		{"", "podarmor.io/clusterarmorpolicies", ""}: {"list", "watch"},
		{"", "podarmor.io/armornodestatuses", ""}:    {"get", "create", "update"},
		{"", "nodes", ""}:                            {"get"},
		{"", "events.k8s.io/events", ""}:             {"create", "patch"},
		{"default", "services", "kubernetes"}:        {"get"},
	}
)

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helmBinary builds helm once per test process (hack/helm.sh caches it across runs).
func helmBinary(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() { helmPath, helmErr = HelmBinary(t.Context(), repoRoot(t)) })
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

// repoRoot is the repository root: go test runs in deploy/helm.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
	return root
}

// objects is a rendered chart by kind and name.
type objects map[string][]byte

func (o objects) get(t *testing.T, kind, name string, into any) bool {
	t.Helper()
	data, ok := o[kind+"/"+name]
	if !ok {
		return false
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
	return true
}

func (o objects) mustGet(t *testing.T, kind, name string, into any) {
	t.Helper()
	if !o.get(t, kind, name, into) {
		t.Fatalf("the chart renders no %s %s; it renders %v", kind, name, slices.Sorted(func(yield func(string) bool) {
			for k := range o {
				if !yield(k) {
					return
				}
			}
		}))
	}
}

// render renders the chart and indexes its objects.
func render(t *testing.T, opts RenderOptions) objects {
	t.Helper()
	opts.Helm, opts.Root = helmBinary(t), repoRoot(t)
	out, err := Render(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	objs := objects{}
	for _, doc := range Documents(out) {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("rendered document is not YAML: %v\n%s", err, doc)
		}
		key := u.GetKind() + "/" + u.GetName()
		if u.GetNamespace() != "" && u.GetNamespace() != Namespace && u.GetNamespace() != "default" {
			t.Errorf("%s is in namespace %s, want the release's or default", key, u.GetNamespace())
		}
		if _, dup := objs[key]; dup {
			t.Fatalf("the chart renders %s twice", key)
		}
		objs[key] = doc
	}
	return objs
}

func TestWebhookDeploymentIsLeastPrivileged(t *testing.T) {
	for name, set := range map[string][]string{
		"self-managed certificates": nil,
		"cert-manager":              {"webhook.tls.mode=certManager"},
	} {
		t.Run(name, func(t *testing.T) {
			objs := render(t, RenderOptions{Set: set})
			var d appsv1.Deployment
			objs.mustGet(t, "Deployment", "podarmor-webhook", &d)
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
				t.Errorf("replicas %v, want 2", d.Spec.Replicas)
			}
			pod := d.Spec.Template.Spec
			if pod.HostPID || pod.HostNetwork || pod.HostIPC {
				t.Error("the webhook shares a host namespace")
			}
			psc := pod.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
				psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod securityContext %+v, want runAsNonRoot, runAsUser 65532, seccomp RuntimeDefault", psc)
			}
			if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
				t.Fatalf("%d containers and %d init containers, want the webhook alone", len(pod.Containers), len(pod.InitContainers))
			}
			c := pod.Containers[0]
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65532 ||
				sc.Privileged != nil && *sc.Privileged {
				t.Errorf("container securityContext %+v, want non-root 65532, read-only root, no privilege escalation", sc)
			}
			if sc == nil || sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
				t.Errorf("capabilities %+v, want drop ALL and add none", sc.Capabilities)
			}
			for _, v := range pod.Volumes {
				if v.HostPath != nil {
					t.Errorf("volume %s is a host path", v.Name)
				}
			}
			probes := map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe}
			for kind, want := range map[string]string{"readiness": "/readyz", "liveness": "/healthz"} {
				p := probes[kind]
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port.String() != "metrics" {
					t.Errorf("%s probe %+v, want GET %s on the metrics port", kind, p, want)
				}
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("resources %+v, want CPU and memory requests and a memory limit", c.Resources)
			}
			if c.Image != "localhost/podarmor/webhook:0.1.0" || c.ImagePullPolicy != corev1.PullIfNotPresent {
				t.Errorf("image %s (%s), want localhost/podarmor/webhook:0.1.0 IfNotPresent", c.Image, c.ImagePullPolicy)
			}
			aa := pod.Affinity
			if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
				aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
				t.Errorf("affinity %+v, want the replicas spread over nodes", aa)
			}

			var pdb policyv1.PodDisruptionBudget
			objs.mustGet(t, "PodDisruptionBudget", "podarmor-webhook", &pdb)
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 ||
				!reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
				t.Errorf("PodDisruptionBudget %+v, want maxUnavailable 1 over the webhook's pods", pdb.Spec)
			}
		})
	}
}

func TestWebhookAntiAffinityCanBeRequired(t *testing.T) {
	objs := render(t, RenderOptions{Set: []string{"webhook.podAntiAffinity=hard"}})
	var d appsv1.Deployment
	objs.mustGet(t, "Deployment", "podarmor-webhook", &d)
	aa := d.Spec.Template.Spec.Affinity.PodAntiAffinity
	if len(aa.RequiredDuringSchedulingIgnoredDuringExecution) != 1 || len(aa.PreferredDuringSchedulingIgnoredDuringExecution) != 0 {
		t.Errorf("anti-affinity %+v, want one required term", aa)
	}
}

func TestEnforcerAsksForExactlyTheDocumentedPrivileges(t *testing.T) {
	for name, kube := range map[string]string{"Kubernetes 1.37": "", "Kubernetes 1.29": "v1.29.15"} {
		t.Run(name, func(t *testing.T) {
			objs := render(t, RenderOptions{KubeVersion: kube})
			var ds appsv1.DaemonSet
			objs.mustGet(t, "DaemonSet", "podarmor-enforcer", &ds)
			pod := ds.Spec.Template.Spec
			// The network namespace for the audit multicast group (AppArmor's decisions).
			if !pod.HostPID || !pod.HostNetwork || pod.HostIPC || pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
				t.Errorf("hostPID %v, hostNetwork %v, hostIPC %v, dnsPolicy %q; want the host's PID and network namespaces, cluster DNS",
					pod.HostPID, pod.HostNetwork, pod.HostIPC, pod.DNSPolicy)
			}
			if pod.PriorityClassName != "system-node-critical" {
				t.Errorf("priorityClassName %q, want system-node-critical", pod.PriorityClassName)
			}
			if len(pod.Tolerations) != 1 || pod.Tolerations[0].Operator != corev1.TolerationOpExists || pod.Tolerations[0].Key != "" {
				t.Errorf("tolerations %+v, want one that tolerates every taint", pod.Tolerations)
			}
			var enforcer *corev1.Container
			for i := range pod.Containers {
				if pod.Containers[i].Name == "enforcer" {
					enforcer = &pod.Containers[i]
				}
			}
			if enforcer == nil || len(pod.Containers) != 1 {
				t.Fatalf("containers %d, want the enforcer alone", len(pod.Containers))
			}
			sc := enforcer.SecurityContext
			if sc.Privileged != nil && *sc.Privileged {
				t.Error("the enforcer is privileged")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("securityContext %+v, want no privilege escalation and a read-only root", sc)
			}
			if !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
				!reflect.DeepEqual(slices.Sorted(slices.Values(sc.Capabilities.Add)), slices.Sorted(slices.Values(EnforcerCapabilities))) {
				t.Errorf("capabilities %+v, want drop ALL, add exactly %v", sc.Capabilities, EnforcerCapabilities)
			}
			if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("seccomp %+v, want RuntimeDefault", sc.SeccompProfile)
			}
			// AppArmor: unconfined, as a field from 1.30 and an annotation before.
			annotation := ds.Spec.Template.Annotations["container.apparmor.security.beta.kubernetes.io/enforcer"]
			if kube == "" {
				if sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined || annotation != "" {
					t.Errorf("appArmorProfile %+v, annotation %q; want the field Unconfined", sc.AppArmorProfile, annotation)
				}
			} else if sc.AppArmorProfile != nil || annotation != "unconfined" {
				t.Errorf("appArmorProfile %+v, annotation %q; want the annotation unconfined", sc.AppArmorProfile, annotation)
			}
			hostPaths := map[string]string{}
			for _, v := range pod.Volumes {
				if v.HostPath != nil {
					hostPaths[v.Name] = v.HostPath.Path
				}
			}
			if !reflect.DeepEqual(hostPaths, enforcerHostPaths) {
				t.Errorf("host paths %v, want %v", hostPaths, enforcerHostPaths)
			}
			mounted := map[string]bool{}
			for _, m := range enforcer.VolumeMounts {
				mounted[m.Name] = true
			}
			if mounted["hook-dir"] {
				t.Error("the enforcer mounts the hook directory; only install-hook writes it")
			}
			for _, c := range pod.InitContainers {
				csc := c.SecurityContext
				if csc == nil || csc.Capabilities == nil || len(csc.Capabilities.Add) != 0 || !reflect.DeepEqual(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
					csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
					t.Errorf("init container %s: securityContext %+v, want no capabilities and a read-only root", c.Name, csc)
				}
				for _, m := range c.VolumeMounts {
					if m.Name != "hook-dir" {
						t.Errorf("init container %s mounts %s; it needs only the hook directory", c.Name, m.Name)
					}
				}
			}
			wantArg := "--nri-hook-path=/opt/podarmor/bin/podarmor-enforcer"
			if !slices.Contains(enforcer.Args, wantArg) {
				t.Errorf("args %v lack %s", enforcer.Args, wantArg)
			}
			if enforcer.Image != "localhost/podarmor/enforcer:0.1.0" || enforcer.ImagePullPolicy != corev1.PullIfNotPresent {
				t.Errorf("image %s (%s), want localhost/podarmor/enforcer:0.1.0 IfNotPresent", enforcer.Image, enforcer.ImagePullPolicy)
			}
		})
	}
}

// TestCapabilitiesAreDocumented keeps docs/install.md and values.yaml in step with the
// DaemonSet: each capability is explained in both.
func TestCapabilitiesAreDocumented(t *testing.T) {
	root := repoRoot(t)
	doc, err := os.ReadFile(filepath.Join(root, "docs/install.md"))
	if err != nil {
		t.Fatal(err)
	}
	values, err := os.ReadFile(filepath.Join(root, ChartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range EnforcerCapabilities {
		if !bytes.Contains(doc, []byte("| `CAP_"+c+"` |")) {
			t.Errorf("docs/install.md has no table row for CAP_%s", c)
		}
		if !bytes.Contains(values, []byte("#   "+string(c)+" ")) {
			t.Errorf("values.yaml does not explain %s", c)
		}
	}
	for _, p := range enforcerHostPaths {
		if !bytes.Contains(doc, []byte("`"+p+"`")) {
			t.Errorf("docs/install.md does not explain the host path %s", p)
		}
	}
}

// rbacOf collects the rules bound to a service account, per namespace.
func rbacOf(t *testing.T, objs objects, sa string) map[rule][]string {
	t.Helper()
	out := map[rule][]string{}
	add := func(ns string, rules []rbacv1.PolicyRule) {
		for _, r := range rules {
			if len(r.NonResourceURLs) > 0 {
				t.Errorf("%s: non-resource URLs %v", sa, r.NonResourceURLs)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					if g == "*" || res == "*" || slices.Contains(r.Verbs, "*") {
						t.Errorf("%s: wildcard in %+v", sa, r)
					}
					name := res
					if g != "" {
						name = g + "/" + res
					}
					names := []string{""}
					if len(r.ResourceNames) > 0 {
						names = r.ResourceNames
					}
					for _, n := range names {
						k := rule{ns, name, n}
						out[k] = append(out[k], r.Verbs...)
					}
				}
			}
		}
	}
	subjectIs := func(subjects []rbacv1.Subject) bool {
		for _, s := range subjects {
			if s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == Namespace {
				return true
			}
		}
		return false
	}
	for key, data := range objs {
		kind := strings.SplitN(key, "/", 2)[0]
		switch kind {
		case "ClusterRoleBinding", "RoleBinding":
			var b rbacv1.RoleBinding // the same fields as a ClusterRoleBinding
			if err := yaml.Unmarshal(data, &b); err != nil {
				t.Fatal(err)
			}
			if !subjectIs(b.Subjects) {
				continue
			}
			var role rbacv1.ClusterRole
			objs.mustGet(t, b.RoleRef.Kind, b.RoleRef.Name, &role)
			if kind == "ClusterRoleBinding" && b.RoleRef.Kind != "ClusterRole" {
				t.Errorf("%s binds a %s", key, b.RoleRef.Kind)
			}
			add(b.Namespace, role.Rules)
		}
	}
	for k := range out {
		slices.Sort(out[k])
	}
	return out
}

func sortedRules(m map[rule][]string) map[rule][]string {
	out := map[rule][]string{}
	for k, v := range m {
		out[k] = slices.Sorted(slices.Values(v))
	}
	return out
}

func TestRBACIsExactlyWhatTheCodeUses(t *testing.T) {
	without := func(m map[rule][]string, drop ...rule) map[rule][]string {
		out := sortedRules(m)
		for _, d := range drop {
			delete(out, d)
		}
		return out
	}
	tests := map[string]struct {
		set               []string
		webhook, enforcer map[rule][]string
	}{
		"the defaults": {
			webhook: sortedRules(webhookRBAC), enforcer: sortedRules(enforcerRBAC),
		},
		"cert-manager: no Secret, no webhook configurations": {
			set: []string{"webhook.tls.mode=certManager"},
			webhook: without(webhookRBAC,
				rule{"", "admissionregistration.k8s.io/mutatingwebhookconfigurations", "podarmor"},
				rule{"", "admissionregistration.k8s.io/validatingwebhookconfigurations", "podarmor"},
				rule{Namespace, "secrets", "podarmor-webhook-tls"}, rule{Namespace, "secrets", ""}),
			enforcer: sortedRules(enforcerRBAC),
		},
		"API server addresses given: no read of the kubernetes Service": {
			set:      []string{"cluster.apiServerAddresses={10.96.0.1}"},
			webhook:  without(webhookRBAC, rule{"default", "services", "kubernetes"}),
			enforcer: without(enforcerRBAC, rule{"default", "services", "kubernetes"}),
		},
		"no policy status aggregation: no node reports, no ClusterArmorPolicy status": {
			set: []string{"webhook.aggregatePolicyStatus=false"},
			webhook: without(webhookRBAC, rule{"", "podarmor.io/armornodestatuses", ""},
				rule{"", "podarmor.io/clusterarmorpolicies/status", ""}),
			enforcer: sortedRules(enforcerRBAC),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			objs := render(t, RenderOptions{Set: tc.set})
			for sa, want := range map[string]map[rule][]string{"podarmor-webhook": tc.webhook, "podarmor-enforcer": tc.enforcer} {
				if got := rbacOf(t, objs, sa); !reflect.DeepEqual(got, want) {
					for k, v := range got {
						if w, ok := want[k]; !ok || !reflect.DeepEqual(v, w) {
							t.Errorf("%s: %+v: %v, want %v", sa, k, v, w)
						}
					}
					for k, w := range want {
						if _, ok := got[k]; !ok {
							t.Errorf("%s: %+v: missing, want %v", sa, k, w)
						}
					}
				}
			}
		})
	}
}

// TestWebhookConfigurationsAreRegistrations checks the rendered configurations against
// webhook/registration: the chart registers the webhook as the local cluster does, with
// no caBundle of its own.
func TestWebhookConfigurationsAreRegistrations(t *testing.T) {
	for name, tc := range map[string]struct {
		set        []string
		annotation string
	}{
		"self-managed certificates": {},
		"cert-manager":              {set: []string{"webhook.tls.mode=certManager"}, annotation: Namespace + "/podarmor-webhook"},
	} {
		t.Run(name, func(t *testing.T) {
			objs := render(t, RenderOptions{Set: tc.set})
			port := int32(443)
			wantM, wantV, err := registration.Configurations(registration.Options{
				Service:      &admissionregistrationv1.ServiceReference{Namespace: Namespace, Name: "podarmor-webhook", Port: &port},
				OwnNamespace: Namespace,
			})
			if err != nil {
				t.Fatal(err)
			}
			var m admissionregistrationv1.MutatingWebhookConfiguration
			var v admissionregistrationv1.ValidatingWebhookConfiguration
			objs.mustGet(t, "MutatingWebhookConfiguration", "podarmor", &m)
			objs.mustGet(t, "ValidatingWebhookConfiguration", "podarmor", &v)
			for _, meta := range []map[string]string{m.Annotations, v.Annotations} {
				if got := meta["cert-manager.io/inject-ca-from"]; got != tc.annotation {
					t.Errorf("cert-manager.io/inject-ca-from %q, want %q", got, tc.annotation)
				}
			}
			if !reflect.DeepEqual(m.Webhooks, wantM.Webhooks) {
				t.Errorf("mutating webhooks differ from registration.Configurations:\n got %+v\nwant %+v", m.Webhooks, wantM.Webhooks)
			}
			if !reflect.DeepEqual(v.Webhooks, wantV.Webhooks) {
				t.Errorf("validating webhooks differ from registration.Configurations:\n got %+v\nwant %+v", v.Webhooks, wantV.Webhooks)
			}
			for _, w := range m.Webhooks {
				if *w.FailurePolicy != admissionregistrationv1.Fail || !slices.Contains(w.NamespaceSelector.MatchExpressions[0].Values, "kube-system") {
					t.Errorf("webhook %s: failure policy %s, selector %+v", w.Name, *w.FailurePolicy, w.NamespaceSelector)
				}
			}
		})
	}
}

// TestCopiesOfOtherManifests checks the chart's versions of deploy/monitoring and
// deploy/admission against those files.
func TestCopiesOfOtherManifests(t *testing.T) {
	root := repoRoot(t)
	specOf := func(t *testing.T, data []byte) any {
		t.Helper()
		var u map[string]any
		if err := yaml.Unmarshal(data, &u); err != nil {
			t.Fatal(err)
		}
		return u["spec"]
	}
	fileDocs := func(t *testing.T, path string) map[string][]byte {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]byte{}
		for _, d := range Documents(data) {
			var u unstructured.Unstructured
			if err := yaml.Unmarshal(d, &u.Object); err != nil {
				t.Fatal(err)
			}
			out[u.GetKind()+"/"+u.GetName()] = d
		}
		return out
	}

	t.Run("monitoring off unless the cluster serves monitoring.coreos.com", func(t *testing.T) {
		for k := range render(t, RenderOptions{}) {
			if strings.HasPrefix(k, "ServiceMonitor/") || strings.HasPrefix(k, "PrometheusRule/") {
				t.Errorf("rendered %s without monitoring.coreos.com/v1", k)
			}
		}
	})
	t.Run("ServiceMonitors, PrometheusRule and Services as in deploy/monitoring", func(t *testing.T) {
		objs := render(t, RenderOptions{APIVersions: []string{"monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule"}})
		want := fileDocs(t, "deploy/monitoring/servicemonitors.yaml")
		for k, v := range fileDocs(t, "deploy/monitoring/alerts.yaml") {
			want[k] = v
		}
		for k, v := range fileDocs(t, "deploy/monitoring/services.yaml") {
			want[k] = v
		}
		for k, data := range want {
			got, ok := objs[k]
			if !ok {
				t.Errorf("the chart renders no %s", k)
				continue
			}
			if strings.HasPrefix(k, "Service/") {
				// The chart's Services name the port rather than repeat its number.
				var g, w corev1.Service
				if err := yaml.Unmarshal(got, &g); err != nil {
					t.Fatal(err)
				}
				if err := yaml.Unmarshal(data, &w); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(g.Spec.Selector, w.Spec.Selector) || g.Spec.ClusterIP != w.Spec.ClusterIP ||
					len(g.Spec.Ports) != 1 || g.Spec.Ports[0].Name != w.Spec.Ports[0].Name || g.Spec.Ports[0].Port != w.Spec.Ports[0].Port {
					t.Errorf("%s: spec %+v, deploy/monitoring has %+v", k, g.Spec, w.Spec)
				}
				continue
			}
			if g, w := specOf(t, got), specOf(t, data); !reflect.DeepEqual(g, w) {
				t.Errorf("%s: spec differs from deploy/monitoring:\n got %v\nwant %v", k, g, w)
			}
		}
	})
	t.Run("the node status admission policy as in deploy/admission, from 1.30", func(t *testing.T) {
		objs := render(t, RenderOptions{})
		for k, data := range fileDocs(t, "deploy/admission/enforcer-node-status.yaml") {
			got, ok := objs[k]
			if !ok {
				t.Errorf("the chart renders no %s", k)
				continue
			}
			if g, w := specOf(t, got), specOf(t, data); !reflect.DeepEqual(g, w) {
				t.Errorf("%s: spec differs from deploy/admission:\n got %v\nwant %v", k, g, w)
			}
		}
		for k := range render(t, RenderOptions{KubeVersion: "v1.29.15"}) {
			if strings.HasPrefix(k, "ValidatingAdmissionPolicy") {
				t.Errorf("rendered %s for Kubernetes 1.29", k)
			}
		}
	})
}

func TestValuesAreChecked(t *testing.T) {
	for name, tc := range map[string]struct{ set, want string }{
		"an unknown TLS mode":              {"webhook.tls.mode=vault", "mode"},
		"an unknown key":                   {"webhook.replica=3", "replica"},
		"an unknown anti-affinity":         {"webhook.podAntiAffinity=sometimes", "podAntiAffinity"},
		"a hook setting out of range":      {"enforcer.onUnavailable=maybe", "onUnavailable"},
		"a webhook timeout over 30 s":      {"webhook.timeoutSeconds=31", "timeoutSeconds"},
		"an unknown event log destination": {"enforcer.eventLog.destination=syslog", "destination"},
		"a relative event log directory":   {"enforcer.eventLog.hostPath=var/log/podarmor", "hostPath"},
		"an event log file of 0 MiB":       {"enforcer.eventLog.maxSizeMB=0", "maxSizeMB"},
		"a negative backup count":          {"enforcer.eventLog.maxBackups=-1", "maxBackups"},
		"a negative age":                   {"enforcer.eventLog.maxAgeDays=-1", "maxAgeDays"},
		"BPF statistics as a string":       {"enforcer.bpfStats=yes", "bpfStats"},
		"a relative containerd socket":     {"enforcer.containerdSocket=run/containerd/containerd.sock", "containerdSocket"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Render(t.Context(), RenderOptions{Helm: helmBinary(t), Root: repoRoot(t), Set: []string{tc.set}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("render with %s: %v, want an error naming %s", tc.set, err, tc.want)
			}
		})
	}
}

func TestEnforcerEventLogAndBPFStats(t *testing.T) {
	const dir = "/var/log/podarmor"
	tests := map[string]struct {
		set []string
		// args are the enforcer's arguments the values add; volume whether the log's
		// directory is mounted.
		args   []string
		volume bool
	}{
		"by default events go to stdout and BPF statistics are off": {},
		"a file on the node, rotated as asked": {
			set: []string{"enforcer.eventLog.destination=file", "enforcer.eventLog.maxSizeMB=20",
				"enforcer.eventLog.maxBackups=3", "enforcer.eventLog.maxAgeDays=7", "enforcer.eventLog.compress=true"},
			args: []string{"--events=" + dir + "/events.jsonl", "--events-max-size-mb=20", "--events-max-backups=3",
				"--events-max-age-days=7", "--events-compress=true"},
			volume: true,
		},
		"BPF statistics on": {set: []string{"enforcer.bpfStats=true"}, args: []string{"--bpf-stats"}},
	}
	defaults := enforcerOf(t, render(t, RenderOptions{})).Args
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			objs := render(t, RenderOptions{Set: tc.set})
			c := enforcerOf(t, objs)
			var added []string
			for _, a := range c.Args {
				if !slices.Contains(defaults, a) {
					added = append(added, a)
				}
			}
			if !reflect.DeepEqual(added, tc.args) {
				t.Errorf("arguments added to the defaults' %v, want %v", added, tc.args)
			}
			for _, a := range defaults {
				if strings.HasPrefix(a, "--events") || a == "--bpf-stats" {
					t.Errorf("the default arguments have %s", a)
				}
			}
			var ds appsv1.DaemonSet
			objs.mustGet(t, "DaemonSet", "podarmor-enforcer", &ds)
			var hostPath *corev1.HostPathVolumeSource
			for _, v := range ds.Spec.Template.Spec.Volumes {
				if v.Name == "event-log" {
					hostPath = v.HostPath
				}
			}
			mount := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "event-log" })
			if !tc.volume {
				if hostPath != nil || mount >= 0 {
					t.Errorf("the event log's directory is mounted (%v, mount %d)", hostPath, mount)
				}
				return
			}
			if hostPath == nil || hostPath.Path != dir || hostPath.Type == nil || *hostPath.Type != corev1.HostPathDirectoryOrCreate {
				t.Errorf("event-log volume %+v, want the host's %s, DirectoryOrCreate", hostPath, dir)
			}
			if mount < 0 || c.VolumeMounts[mount].MountPath != dir || c.VolumeMounts[mount].ReadOnly {
				t.Errorf("the enforcer's mounts %+v, want event-log writable at %s", c.VolumeMounts, dir)
			}
		})
	}
}

// enforcerOf is the enforcer container of the rendered DaemonSet.
func enforcerOf(t *testing.T, objs objects) corev1.Container {
	t.Helper()
	var ds appsv1.DaemonSet
	objs.mustGet(t, "DaemonSet", "podarmor-enforcer", &ds)
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name == "enforcer" {
			return c
		}
	}
	t.Fatal("the DaemonSet has no enforcer container")
	return corev1.Container{}
}

// enforcerOption is what a chart option adds to the enforcer: its arguments that start
// with argPrefix, and its host volume named volume with the container's mount of it
// (nil when absent).
func enforcerOption(t *testing.T, objs objects, argPrefix, volume string) (args []string, hostPath *corev1.HostPathVolumeSource, mount *corev1.VolumeMount) {
	t.Helper()
	c := enforcerOf(t, objs)
	for _, a := range c.Args {
		if strings.HasPrefix(a, argPrefix) {
			args = append(args, a)
		}
	}
	var ds appsv1.DaemonSet
	objs.mustGet(t, "DaemonSet", "podarmor-enforcer", &ds)
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == volume {
			hostPath = v.HostPath
		}
	}
	for i, m := range c.VolumeMounts {
		if m.Name == volume {
			mount = &c.VolumeMounts[i]
		}
	}
	return args, hostPath, mount
}

// TestEnforcerWithoutNRI: enforcer.nri=false leaves out the NRI plugin (its arguments,
// which the enforcer's readiness depends on, and the runtime's socket), for runtimes
// whose hook comes from elsewhere; by default it is there.
func TestEnforcerWithoutNRI(t *testing.T) {
	args, hostPath, mount := enforcerOption(t, render(t, RenderOptions{}), "--nri-", "nri")
	if !reflect.DeepEqual(args, []string{"--nri-hook-path=/opt/podarmor/bin/podarmor-enforcer", "--nri-socket=/var/run/nri/nri.sock"}) ||
		hostPath == nil || hostPath.Path != "/var/run/nri" || mount == nil {
		t.Errorf("by default: NRI arguments %q, socket directory %+v mounted at %+v; want both", args, hostPath, mount)
	}
	args, hostPath, mount = enforcerOption(t, render(t, RenderOptions{Set: []string{"enforcer.nri=false"}}), "--nri-", "nri")
	if len(args) != 0 || hostPath != nil || mount != nil {
		t.Errorf("with enforcer.nri=false: NRI arguments %q, socket directory %+v mounted at %+v; want neither", args, hostPath, mount)
	}
}

// TestEnforcerFollowsContainerdOnlyWhenAsked: containerd's socket (its whole API) is
// neither mounted nor named by default; enforcer.containerdSocket mounts exactly that
// socket, at the same path, and passes it to --containerd-socket.
func TestEnforcerFollowsContainerdOnlyWhenAsked(t *testing.T) {
	if args, hostPath, mount := enforcerOption(t, render(t, RenderOptions{}), "--containerd", "containerd"); len(args) != 0 || hostPath != nil || mount != nil {
		t.Errorf("by default: arguments %q, volume %+v, mount %+v; want none", args, hostPath, mount)
	}
	const sock = "/run/containerd/containerd.sock"
	args, hostPath, mount := enforcerOption(t, render(t, RenderOptions{Set: []string{"enforcer.containerdSocket=" + sock}}), "--containerd", "containerd")
	if !reflect.DeepEqual(args, []string{"--containerd-socket=" + sock}) {
		t.Errorf("arguments %q, want --containerd-socket=%s", args, sock)
	}
	if hostPath == nil || hostPath.Path != sock || hostPath.Type == nil || *hostPath.Type != corev1.HostPathSocket {
		t.Errorf("volume %+v, want the host's socket %s", hostPath, sock)
	}
	if mount == nil || mount.MountPath != sock {
		t.Errorf("mount %+v, want it at %s", mount, sock)
	}
}
