package install

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podarmor/podarmor/deploy/helm"
	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// grant is one verb on one resource (and name, "" for any) that a component's RBAC gives
// it, in a namespace ("" for every namespace: a ClusterRole's).
type grant struct {
	namespace, group, resource, name, verb string
}

func (g grant) String() string {
	r := g.resource
	if g.group != "" {
		r = g.group + "/" + r
	}
	if g.name != "" {
		r += " " + g.name
	}
	if g.namespace != "" {
		r += " in " + g.namespace
	}
	return g.verb + " " + r
}

// unforced are grants whose only use is on a path this test cannot force on the host,
// with the test that covers the path instead. Every other grant must show up in the
// audit log.
var unforced = map[string]map[grant]string{
	"podarmor-webhook": {
		{"", "", "namespaces", "", "get"}: "a pod of a namespace the webhook's namespace cache has not seen yet (webhook/cmd/podarmor-webhook main.go: the Namespace lookup of server.Config); a race with the cache",
	},
	"podarmor-enforcer": {
		{"", "events.k8s.io", "events", "", "create"}: "an Event for a denial (enforcer/kube/events.go); this kernel cannot deny: e2e's TestEnforcerAPIServerOutage sees the chart's service account create them in a VM",
		{"", "events.k8s.io", "events", "", "patch"}:  "the series of a repeated denial's Event (enforcer/kube/events.go); as create, and patched there too",
	},
}

// TestComponentsUseExactlyTheirRBAC runs podarmor-webhook and podarmor-enforcer with the
// manifest's service accounts and RBAC against an API server that writes an audit log of
// every request the two make, drives each function that needs the API (pod mutation
// called by the API server, policy validation, policy conflicts, policy status
// aggregation, node reports, certificate Secret creation and renewal, caBundle
// injection, leader election, the enforcer's read of a pod it does not cache) and then
// compares: no request of either was refused, and every verb of every rule bound to
// either was used at least once, but for the few in unforced. A list counts as used
// where client-go's watch-list took its place (1.37; 1.29 lists). A rule added to the
// chart that the code does not use fails this test.
func TestComponentsUseExactlyTheirRBAC(t *testing.T) {
	enforcerBinary(t)
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			auditPolicy, auditLog := filepath.Join(dir, "audit-policy.yaml"), filepath.Join(dir, "audit.log")
			users := []string{saUser("podarmor-webhook"), saUser("podarmor-enforcer")}
			policy := fmt.Sprintf(`apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    users: [%q, %q]
  - level: None
`, users[0], users[1])
			if err := os.WriteFile(auditPolicy, []byte(policy), 0o644); err != nil {
				t.Fatal(err)
			}
			cp := framework.StartControlPlane(t, framework.Options{Version: version, APIServerFlags: []string{
				"--audit-policy-file=" + auditPolicy, "--audit-log-path=" + auditLog, "--audit-log-mode=blocking",
			}})
			manifest := installManifest(t, cp)
			grants := map[string][]grant{
				"podarmor-webhook":  grantsOf(t, manifest, "podarmor-webhook"),
				"podarmor-enforcer": grantsOf(t, manifest, "podarmor-enforcer"),
			}
			for sa, reasons := range unforced {
				for g := range reasons {
					if !slices.Contains(grants[sa], g) {
						t.Errorf("%s: unforced lists %s, which its RBAC does not grant", sa, g)
					}
				}
			}

			// The enforcer, on node-a, and its node report.
			const node = "node-a"
			_, enf, socket := startEnforcer(t, cp, manifest, node)
			cp.WaitForObject(t, time.Minute, client.ObjectKey{Name: node}, &v1alpha1.ArmorNodeStatus{}, func() bool { return true })

			// The webhook with the Deployment's arguments; certificates that are renewed
			// within the test, and the loopback address in the serving certificate.
			var args []string
			for _, doc := range helm.Documents(manifest) {
				o := parse(t, doc)
				if o.u.GetKind() == "Deployment" {
					var d struct {
						Spec struct{ Template struct{ Spec corev1.PodSpec } }
					}
					mustUnmarshal(t, o.data, &d)
					args = d.Spec.Template.Spec.Containers[0].Args
				}
			}
			args = append(slices.Clone(args), "--tls-ip-addresses=127.0.0.1",
				"--tls-serving-validity=30s", "--tls-ca-validity=60s", "--tls-overlap=5s")
			w := startWebhook(t, cp, args)
			w.waitReady(t)
			pointConfigurationsAt(t, cp, w.url)

			// Policy validation through the API server: a valid policy is stored, a bad
			// one refused by the webhook.
			shop := cp.CreateNamespace(t, map[string]string{v1alpha1.LabelEnable: "true"})
			spec := v1alpha1.ArmorPolicySpec{
				Target:    v1alpha1.Target{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
				Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerSeccomp},
				Mode:      v1alpha1.ModeRuntimeDefault,
			}
			lastErr := ""
			framework.WaitFor(t, time.Minute, "the API server to call the policy webhook", func(ctx context.Context) (bool, error) {
				bad := &v1alpha1.ArmorPolicy{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: shop.Name},
					Spec: v1alpha1.ArmorPolicySpec{Target: spec.Target, Mode: v1alpha1.ModeEnhanceProtect,
						Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF}, BuiltinRules: []v1alpha1.BuiltinRule{{Name: "no-such-rule"}}}}
				err := cp.Client.Create(ctx, bad, client.DryRunAll)
				if err != nil && err.Error() != lastErr {
					lastErr = err.Error()
					t.Logf("a bad policy: %v", err)
				}
				return err != nil && strings.Contains(err.Error(), `admission webhook "policies.podarmor.io" denied the request`), nil
			})
			// Two policies selecting one pod: the webhook records the conflict in their
			// status.
			for _, name := range []string{"web-a", "web-b"} {
				p := &v1alpha1.ArmorPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: shop.Name}, Spec: spec}
				if err := cp.Client.Create(t.Context(), p); err != nil {
					t.Fatalf("create ArmorPolicy %s through the webhook: %v", name, err)
				}
			}
			// Pod mutation through the API server: the pod is admitted with a profile, or
			// refused by podarmor's gate (the policies are not Ready on node-a, which
			// lacks BPF LSM and AppArmor); either way the webhook answered.
			var mutated string
			framework.WaitFor(t, time.Minute, "the API server to call the pod webhook", func(ctx context.Context) (bool, error) {
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Namespace: shop.Name, Labels: map[string]string{"app": "web"}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
				}
				got, err := cp.Clientset.CoreV1().Pods(shop.Name).Create(ctx, pod, metav1.CreateOptions{})
				if err != nil {
					mutated = err.Error()
					return strings.Contains(err.Error(), "pods.podarmor.io") && strings.Contains(err.Error(), "denied the request"), nil
				}
				mutated = "profile " + got.Labels[v1alpha1.LabelProfile]
				return got.Labels[v1alpha1.LabelProfile] != "", nil
			})
			t.Logf("a pod of an opted-in namespace through the API server: %s", mutated)
			// A pod admitted before the webhook's cache had both policies shows no
			// conflict; the next one does.
			framework.WaitFor(t, time.Minute, "the Conflict condition on web-a", func(ctx context.Context) (bool, error) {
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: shop.Name, Labels: map[string]string{"app": "web"}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
				}
				if _, err := cp.Clientset.CoreV1().Pods(shop.Name).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
					return false, nil
				}
				p := &v1alpha1.ArmorPolicy{}
				if err := cp.Client.Get(ctx, client.ObjectKey{Namespace: shop.Name, Name: "web-a"}, p); err != nil {
					return false, err
				}
				return hasCondition(p.Status.Conditions, "Conflict"), nil
			})
			// The leader aggregates node-a's report into the policies' status.
			framework.WaitFor(t, time.Minute, "the default ClusterArmorPolicy's status from node-a's report", func(ctx context.Context) (bool, error) {
				p := &v1alpha1.ClusterArmorPolicy{}
				if err := cp.Client.Get(ctx, client.ObjectKey{Name: "default"}, p); err != nil {
					return false, err
				}
				return hasCondition(p.Status.Conditions, "Ready"), nil
			})

			// The enforcer reads a pod it does not cache (another node's): the read a
			// container of a pod bound a moment ago makes.
			plain := cp.CreateNamespace(t, nil)
			other := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "elsewhere", Namespace: plain.Name},
				Spec:       corev1.PodSpec{NodeName: "node-b", Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
			}
			if err := cp.Client.Create(t.Context(), other); err != nil {
				t.Fatal(err)
			}
			_, err := (&hook.Client{Socket: socket, Timeout: 30 * time.Second}).Do(t.Context(), hook.Request{
				Op: hook.OpRegister, ContainerID: strings.Repeat("ab", 32), PID: os.Getpid(), Status: "creating",
				Annotations: map[string]string{
					"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-namespace": plain.Name,
					"io.kubernetes.cri.sandbox-name": other.Name, "io.kubernetes.cri.sandbox-uid": string(other.UID),
					"io.kubernetes.cri.container-name": "c",
				},
			})
			t.Logf("hook request for a pod of node-b: %v", err)

			// Someone else changes the node report (a label): the enforcer's next update
			// conflicts, and it reads the report again before writing. The next write
			// follows a policy change.
			report := &v1alpha1.ArmorNodeStatus{}
			if err := cp.Client.Get(t.Context(), client.ObjectKey{Name: node}, report); err != nil {
				t.Fatal(err)
			}
			report.Labels = map[string]string{"touched-by": "the-test"}
			if err := cp.Client.Update(t.Context(), report); err != nil {
				t.Fatal(err)
			}
			if err := cp.Client.Create(t.Context(), &v1alpha1.ArmorPolicy{ObjectMeta: metav1.ObjectMeta{Name: "later", Namespace: plain.Name},
				Spec: spec}); err != nil {
				t.Fatal(err)
			}

			// What the rest needs: a renewed certificate and a node report update.
			complete := func() bool {
				used, watchListed := auditedUses(t, auditLog)
				for sa, gs := range grants {
					for _, g := range gs {
						if _, ok := unforced[sa][g]; !ok && !used[sa][g] && !watchListed[sa][g] {
							return false
						}
					}
				}
				return true
			}
			for deadline := time.Now().Add(2 * time.Minute); !complete() && time.Now().Before(deadline); {
				time.Sleep(time.Second)
			}
			w.stop(t)

			// The comparison.
			used, watchListed := auditedUses(t, auditLog)
			refused := auditedRefusals(t, auditLog)
			for sa, gs := range grants {
				for _, g := range gs {
					reason, isUnforced := unforced[sa][g]
					switch {
					case used[sa][g]:
						t.Logf("%s: %s: used", sa, g)
					case watchListed[sa][g]:
						t.Logf("%s: %s: served by a watch-list on this API server; the list of API servers without WatchList", sa, g)
					case isUnforced:
						t.Logf("%s: %s: not forced here: %s", sa, g, reason)
					default:
						t.Errorf("%s: RBAC grants %s, which it never used: remove the rule or name the code that needs it", sa, g)
					}
				}
				for _, r := range refused[sa] {
					t.Errorf("%s was refused %s", sa, r)
				}
			}
			if t.Failed() {
				t.Logf("enforcer log:\n%s", enf.output())
			}
		})
	}
}

// saUser is the user name of a service account in the manifest's namespace.
func saUser(sa string) string { return "system:serviceaccount:" + helm.Namespace + ":" + sa }

// hasCondition reports whether conditions has one of type typ.
func hasCondition(conditions []metav1.Condition, typ string) bool {
	for _, c := range conditions {
		if c.Type == typ {
			return true
		}
	}
	return false
}

// grantsOf lists every verb the manifest's RBAC gives service account sa, one grant per
// rule, resource, name and verb.
func grantsOf(t *testing.T, manifest []byte, sa string) []grant {
	t.Helper()
	roles := map[string][]rbacv1.PolicyRule{} // "Kind ns/name"
	var bindings []rbacv1.RoleBinding
	for _, doc := range helm.Documents(manifest) {
		o := parse(t, doc)
		switch o.u.GetKind() {
		case "ClusterRole", "Role":
			var r rbacv1.Role
			mustUnmarshal(t, o.data, &r)
			roles[o.u.GetKind()+" "+o.u.GetNamespace()+"/"+o.u.GetName()] = r.Rules
		case "ClusterRoleBinding", "RoleBinding":
			var b rbacv1.RoleBinding
			mustUnmarshal(t, o.data, &b)
			bindings = append(bindings, b)
		}
	}
	var out []grant
	for _, b := range bindings {
		if !slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
			return s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == helm.Namespace
		}) {
			continue
		}
		roleNS := ""
		if b.RoleRef.Kind == "Role" {
			roleNS = b.Namespace
		}
		rules, ok := roles[b.RoleRef.Kind+" "+roleNS+"/"+b.RoleRef.Name]
		if !ok {
			t.Fatalf("%s binds %s %s, which the manifest lacks", b.Name, b.RoleRef.Kind, b.RoleRef.Name)
		}
		for _, r := range rules {
			if len(r.NonResourceURLs) > 0 {
				t.Errorf("%s: non-resource URLs %v", sa, r.NonResourceURLs)
			}
			names := r.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, group := range r.APIGroups {
				for _, res := range r.Resources {
					for _, name := range names {
						for _, verb := range r.Verbs {
							out = append(out, grant{b.Namespace, group, res, name, verb})
						}
					}
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("the manifest grants %s nothing", sa)
	}
	return out
}

// auditEvent is what this test reads of an audit.k8s.io/v1 Event.
type auditEvent struct {
	Verb string `json:"verb"`
	User struct {
		Username string `json:"username"`
	} `json:"user"`
	RequestURI string `json:"requestURI"`
	ObjectRef  *struct {
		Resource, Namespace, Name, APIGroup, Subresource string
	} `json:"objectRef"`
	Annotations map[string]string `json:"annotations"`
}

var auditMu sync.Mutex

// readAudit returns the audit log's events, by service account.
func readAudit(t *testing.T, file string) map[string][]auditEvent {
	t.Helper()
	auditMu.Lock()
	defer auditMu.Unlock()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]auditEvent{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e auditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit log line %q: %v", sc.Text(), err)
		}
		sa, ok := strings.CutPrefix(e.User.Username, "system:serviceaccount:"+helm.Namespace+":")
		if !ok {
			t.Fatalf("the audit log has a request of %s, which the audit policy leaves out", e.User.Username)
		}
		out[sa] = append(out[sa], e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// auditedUses says which grants an allowed request of each service account used, and
// which lists were served by a watch-list instead (a watch with sendInitialEvents, which
// client-go sends first where the API server has WatchList, 1.34 on; it lists where the
// server has not).
func auditedUses(t *testing.T, file string) (used, watchListed map[string]map[grant]bool) {
	t.Helper()
	used, watchListed = map[string]map[grant]bool{}, map[string]map[grant]bool{}
	for sa, events := range readAudit(t, file) {
		used[sa], watchListed[sa] = map[grant]bool{}, map[grant]bool{}
		for _, e := range events {
			if e.ObjectRef == nil || e.Annotations["authorization.k8s.io/decision"] != "allow" {
				continue
			}
			res := e.ObjectRef.Resource
			if e.ObjectRef.Subresource != "" {
				res += "/" + e.ObjectRef.Subresource
			}
			// The request uses every grant that covers it: any namespace or its own,
			// any name or its own.
			for _, ns := range []string{"", e.ObjectRef.Namespace} {
				for _, name := range []string{"", e.ObjectRef.Name} {
					used[sa][grant{ns, e.ObjectRef.APIGroup, res, name, e.Verb}] = true
					if e.Verb == "watch" && strings.Contains(e.RequestURI, "sendInitialEvents=true") {
						watchListed[sa][grant{ns, e.ObjectRef.APIGroup, res, name, "list"}] = true
					}
				}
			}
		}
	}
	return used, watchListed
}

// auditedRefusals lists the requests the API server refused each service account.
func auditedRefusals(t *testing.T, file string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for sa, events := range readAudit(t, file) {
		for _, e := range events {
			if d := e.Annotations["authorization.k8s.io/decision"]; d != "" && d != "allow" {
				out[sa] = append(out[sa], e.Verb+" "+e.RequestURI+" ("+d+": "+e.Annotations["authorization.k8s.io/reason"]+")")
			}
		}
	}
	return out
}

// pointConfigurationsAt makes the API server call the webhook at base (on loopback)
// instead of the chart's Service, which has no pods here. Nothing else of the
// configurations changes: rules, selectors, failure policy, timeouts and the caBundle
// the webhook injected stay.
func pointConfigurationsAt(t *testing.T, cp *framework.ControlPlane, base string) {
	t.Helper()
	admission := cp.Clientset.AdmissionregistrationV1()
	to := func(c *admissionregistrationv1.WebhookClientConfig) error {
		if c.URL != nil && strings.HasPrefix(*c.URL, base) {
			return nil // done by an earlier try
		}
		if c.Service == nil || c.Service.Path == nil {
			return fmt.Errorf("client config %+v has no Service path", c)
		}
		if len(c.CABundle) == 0 {
			return fmt.Errorf("client config of %s has no caBundle yet", *c.Service.Path)
		}
		u := base + *c.Service.Path
		c.Service, c.URL = nil, &u
		return nil
	}
	var last error
	point := func(ctx context.Context) error {
		m, err := admission.MutatingWebhookConfigurations().Get(ctx, "podarmor", metav1.GetOptions{})
		if err != nil {
			return err
		}
		v, err := admission.ValidatingWebhookConfigurations().Get(ctx, "podarmor", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for i := range m.Webhooks {
			if err := to(&m.Webhooks[i].ClientConfig); err != nil {
				return err
			}
		}
		for i := range v.Webhooks {
			if err := to(&v.Webhooks[i].ClientConfig); err != nil {
				return err
			}
		}
		if _, err := admission.MutatingWebhookConfigurations().Update(ctx, m, metav1.UpdateOptions{}); err != nil {
			return err
		}
		_, err = admission.ValidatingWebhookConfigurations().Update(ctx, v, metav1.UpdateOptions{})
		return err
	}
	framework.WaitFor(t, time.Minute, "the webhook configurations pointed at "+base, func(ctx context.Context) (bool, error) {
		if last = point(ctx); last != nil {
			t.Logf("point the webhook configurations at %s: %v", base, last)
		}
		return last == nil, nil
	})
}
