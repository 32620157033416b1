package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/deploy/helm"
	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// valueSets are the configurations whose every object the API server must accept.
var valueSets = map[string][]string{
	"defaults":                  nil,
	"cert-manager certificates": {"webhook.tls.mode=certManager"},
	"monitoring on, cluster addresses given, hard anti-affinity": {
		"monitoring.serviceMonitors=true", "monitoring.prometheusRule=true",
		"cluster.apiServerAddresses={10.96.0.1}", "cluster.cidrs={10.244.0.0/16,10.96.0.0/12}",
		"webhook.podAntiAffinity=hard", "monitoring.labels.release=prometheus",
	},
	"cert-manager with an issuer of the cluster's, no aggregation, no default policy": {
		"webhook.tls.mode=certManager", "webhook.tls.certManager.issuerRef.name=cluster-ca",
		"webhook.tls.certManager.issuerRef.kind=ClusterIssuer", "webhook.aggregatePolicyStatus=false",
		"defaultPolicy.create=false", "defaultPolicy.name=",
	},
	"event log in a rotated file on the node, BPF statistics on": {
		"enforcer.eventLog.destination=file", "enforcer.eventLog.maxSizeMB=20", "enforcer.eventLog.maxBackups=3",
		"enforcer.eventLog.maxAgeDays=7", "enforcer.eventLog.compress=true", "enforcer.bpfStats=true",
	},
}

// TestChartObjectsPassStrictValidation renders the chart with each value set for the
// control plane's version and has the API server validate every object: the CRDs are
// created for real from the chart (after the framework's copies are removed), then every
// other object is created with dryRun=All and fieldValidation=Strict, so an unknown or
// duplicate field, a wrong type or a failed validation rule is an error.
func TestChartObjectsPassStrictValidation(t *testing.T) {
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			cp := framework.StartControlPlane(t, framework.Options{Version: version})
			a := newAPI(t, cp)
			removePodarmorCRDs(t, cp)
			for _, doc := range thirdPartyCRDs(t) {
				o := parse(t, doc)
				if err := a.install(t.Context(), o); err != nil {
					t.Fatal(err)
				}
				waitEstablished(t, cp, o.u.GetName())
			}
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: helm.Namespace}}
			if _, err := cp.Clientset.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}

			crdsInstalled := false
			for name, set := range valueSets {
				docs := render(t, version, set, nil)
				kinds := map[string]int{}
				for _, doc := range docs {
					o := parse(t, doc)
					kinds[o.u.GetKind()]++
					if o.u.GetKind() != "CustomResourceDefinition" {
						continue
					}
					if crdsInstalled {
						continue // the same files in every value set
					}
					if err := a.create(t.Context(), o, true); err != nil {
						t.Fatal(err)
					}
					if err := a.create(t.Context(), o, false); err != nil {
						t.Fatal(err)
					}
					waitEstablished(t, cp, o.u.GetName())
				}
				crdsInstalled = true
				for _, doc := range docs {
					o := parse(t, doc)
					if o.u.GetKind() == "CustomResourceDefinition" {
						continue
					}
					if err := a.create(t.Context(), o, true); err != nil {
						t.Errorf("%s: %v", name, err)
					}
				}
				// Every value set renders both components; the optional ones as asked.
				for _, kind := range []string{"Deployment", "DaemonSet", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
					if kinds[kind] != 1 {
						t.Errorf("%s: %d %s objects, want 1", name, kinds[kind], kind)
					}
				}
				t.Logf("%s: %d objects valid: %v", name, len(docs), kinds)
			}

			// The check can fail: the same Deployment with a misspelt field is refused.
			for _, doc := range render(t, version, nil, nil) {
				o := parse(t, doc)
				if o.u.GetKind() != "Deployment" {
					continue
				}
				bad := parse(t, bytes.Replace(o.data, []byte("readOnlyRootFilesystem:"), []byte("readOnlyRootFileSystem:"), 1))
				err := a.create(t.Context(), bad, true)
				if err == nil || !strings.Contains(err.Error(), "readOnlyRootFileSystem") {
					t.Errorf("a Deployment with an unknown field: %v, want it refused naming the field", err)
				}
				dup := parse(t, bytes.Replace(o.data, []byte("  replicas: 2\n"), []byte("  replicas: 2\n  replicas: 3\n"), 1))
				err = a.create(t.Context(), dup, true)
				if err == nil || !strings.Contains(err.Error(), "replicas") {
					t.Errorf("a Deployment with a duplicate field: %v, want it refused naming the field", err)
				}
			}
		})
	}
}

// manifestFor is what a user of version applies: deploy/podarmor.yaml on 1.30 and
// later, which it is rendered for; the chart rendered for 1.29 before that.
func manifestFor(t *testing.T, version string) []byte {
	t.Helper()
	if strings.HasPrefix(version, "v1.29.") {
		rendered, err := helm.Render(t.Context(), helm.RenderOptions{Helm: helmBinary(t), Root: repoRoot(t), KubeVersion: version})
		if err != nil {
			t.Fatal(err)
		}
		m, err := helm.Manifest(rendered, helm.Namespace)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m, err := os.ReadFile(filepath.Join(repoRoot(t), helm.ManifestPath))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestManifestInstallsAndUninstallsCleanly applies the single-file manifest with
// kubectl as docs/install.md says, runs podarmor-webhook as its service account with the
// chart's RBAC and arguments (from loopback: there is no node to run its pods), and
// checks that the webhook can do its work with those permissions, changes nothing in
// its webhook configurations but caBundle, and that deleting what `helm uninstall`
// deletes leaves no webhook configuration behind, so pod creation is never blocked.
func TestManifestInstallsAndUninstallsCleanly(t *testing.T) {
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			cp := framework.StartControlPlane(t, framework.Options{Version: version})
			removePodarmorCRDs(t, cp)
			manifest := manifestFor(t, version)
			file := filepath.Join(t.TempDir(), "podarmor.yaml")
			if err := os.WriteFile(file, manifest, 0o644); err != nil {
				t.Fatal(err)
			}
			// docs/install.md: the CRDs first, so that kubectl can map the default
			// policy in the manifest; then the manifest.
			steps := [][]string{
				{"apply", "--server-side", "-f", filepath.Join(repoRoot(t), "deploy/crds")},
				{"wait", "--for=condition=Established", "--timeout=60s", "crd/armorpolicies.podarmor.io",
					"crd/clusterarmorpolicies.podarmor.io", "crd/armornodestatuses.podarmor.io"},
				{"apply", "--server-side", "-f", file},
			}
			for _, args := range steps {
				out, err := kubectl(t, cp, args...)
				if err != nil {
					t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				t.Logf("kubectl %s:\n%s", args[0], out)
			}

			var objs []object
			for _, doc := range helm.Documents(manifest) {
				objs = append(objs, parse(t, doc))
			}
			a := newAPI(t, cp)
			for _, o := range objs {
				if err := a.exists(t.Context(), o); err != nil {
					t.Errorf("after kubectl apply: %v", err)
				}
			}
			var args []string
			for _, o := range objs {
				switch o.u.GetKind() {
				case "Deployment":
					var d struct {
						Spec struct{ Template struct{ Spec corev1.PodSpec } }
					}
					mustUnmarshal(t, o.data, &d)
					args = d.Spec.Template.Spec.Containers[0].Args
				}
			}

			checkPermissions(t, cp)

			// The configurations as applied (and defaulted by the API server), before
			// the webhook runs.
			admission := cp.Clientset.AdmissionregistrationV1()
			wantM, err := admission.MutatingWebhookConfigurations().Get(t.Context(), "podarmor", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantV, err := admission.ValidatingWebhookConfigurations().Get(t.Context(), "podarmor", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range wantM.Webhooks {
				if len(h.ClientConfig.CABundle) != 0 {
					t.Fatalf("the manifest sets caBundle of %s", h.Name)
				}
			}

			// The webhook, as its service account, with the Deployment's arguments.
			w := startWebhook(t, cp, args)
			framework.WaitFor(t, time.Minute, "the webhook's caBundle in both configurations", func(ctx context.Context) (bool, error) {
				m, err := admission.MutatingWebhookConfigurations().Get(ctx, "podarmor", metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				v, err := admission.ValidatingWebhookConfigurations().Get(ctx, "podarmor", metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				for _, h := range m.Webhooks {
					if len(h.ClientConfig.CABundle) == 0 {
						return false, nil
					}
				}
				for _, h := range v.Webhooks {
					if len(h.ClientConfig.CABundle) == 0 {
						return false, nil
					}
				}
				// Only caBundle differs from the manifest.
				gotM, gotV := m.DeepCopy(), v.DeepCopy()
				for i := range gotM.Webhooks {
					gotM.Webhooks[i].ClientConfig.CABundle = nil
				}
				for i := range gotV.Webhooks {
					gotV.Webhooks[i].ClientConfig.CABundle = nil
				}
				if !reflect.DeepEqual(gotM.Webhooks, wantM.Webhooks) || !reflect.DeepEqual(gotM.Labels, wantM.Labels) || !reflect.DeepEqual(gotM.Annotations, wantM.Annotations) {
					return false, fmt.Errorf("the webhook changed its MutatingWebhookConfiguration beyond caBundle:\n got %+v\nwant %+v", gotM.Webhooks, wantM.Webhooks)
				}
				if !reflect.DeepEqual(gotV.Webhooks, wantV.Webhooks) || !reflect.DeepEqual(gotV.Labels, wantV.Labels) || !reflect.DeepEqual(gotV.Annotations, wantV.Annotations) {
					return false, fmt.Errorf("the webhook changed its ValidatingWebhookConfiguration beyond caBundle:\n got %+v\nwant %+v", gotV.Webhooks, wantV.Webhooks)
				}
				return true, nil
			})
			w.waitReady(t)

			// Reapplying the manifest (an upgrade) keeps the webhook's caBundle: the
			// manifest has none, and server-side apply leaves fields it does not own.
			if out, err := kubectl(t, cp, "apply", "--server-side", "-f", file); err != nil {
				// The default policy goes through the policy webhook, which the API
				// server cannot reach here (no node runs its pods); everything else
				// must apply.
				for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
					if strings.HasPrefix(line, "Error from server") && !strings.Contains(line, "policies.podarmor.io") {
						t.Errorf("kubectl apply again: %s", line)
					}
				}
			}
			m, err := admission.MutatingWebhookConfigurations().Get(t.Context(), "podarmor", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Webhooks[0].ClientConfig.CABundle) == 0 {
				t.Error("applying the manifest again dropped the webhook's caBundle")
			}

			// Uninstall: what helm deletes (everything but the CRDs and the default
			// policy, a pre-install hook), in reverse order, while the webhook still runs.
			for i := len(objs) - 1; i >= 0; i-- {
				o := objs[i]
				if o.u.GetKind() == "CustomResourceDefinition" || o.u.GetKind() == "Namespace" || o.u.GetAnnotations()["helm.sh/hook"] != "" {
					continue
				}
				if err := a.delete(t.Context(), o); err != nil {
					t.Errorf("uninstall: %v", err)
				}
			}
			// Give the still running webhook's leader time to act if it would; it must
			// not bring a configuration back.
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				for _, o := range objs {
					if k := o.u.GetKind(); k == "MutatingWebhookConfiguration" || k == "ValidatingWebhookConfiguration" {
						if err := a.exists(t.Context(), o); err == nil {
							t.Fatalf("after uninstall, %s exists", o)
						}
					}
				}
				time.Sleep(500 * time.Millisecond)
			}
			w.stop(t)

			// Pods are created again in a namespace that was opted in.
			ns := cp.CreateNamespace(t, map[string]string{v1alpha1.LabelEnable: "true"})
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "after-uninstall", Namespace: ns.Name},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
			}
			if _, err := cp.Clientset.CoreV1().Pods(ns.Name).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
				t.Errorf("create a pod in an opted-in namespace after uninstall: %v", err)
			}
			// What stays: the CRDs and the default policy.
			if _, err := kubectl(t, cp, "get", "clusterarmorpolicy", "default"); err != nil {
				t.Errorf("the default policy is gone after uninstall: %v", err)
			}
		})
	}
}

func mustUnmarshal(t *testing.T, data []byte, into any) {
	t.Helper()
	if err := yaml.Unmarshal(data, into); err != nil {
		t.Fatal(err)
	}
}

// checkPermissions asks the API server (SubjectAccessReview) whether each component's
// service account may do what docs/install.md says it may, and nothing beyond a few
// things it must not.
func checkPermissions(t *testing.T, cp *framework.ControlPlane) {
	t.Helper()
	type access struct {
		ns, group, resource, sub, name, verb string
		allowed                              bool
	}
	checks := map[string][]access{
		"podarmor-enforcer": {
			{"shop", "", "pods", "", "", "watch", true},
			{"shop", "", "pods", "", "web", "get", true},
			{"", "podarmor.io", "clusterarmorpolicies", "", "", "list", true},
			{"shop", "podarmor.io", "armorpolicies", "", "", "watch", true},
			{"", "podarmor.io", "armornodestatuses", "", "node-a", "update", true},
			{"", "", "nodes", "", "node-a", "get", true},
			{"shop", "events.k8s.io", "events", "", "", "create", true},
			{"default", "", "services", "", "kubernetes", "get", true},
			{"shop", "", "secrets", "", "", "get", false},
			{"shop", "", "pods", "", "web", "delete", false},
			{"default", "", "services", "", "other", "get", false},
			{"", "podarmor.io", "clusterarmorpolicies", "", "default", "update", false},
			{"", "", "nodes", "", "node-a", "patch", false},
		},
		"podarmor-webhook": {
			{"", "", "namespaces", "", "", "watch", true},
			{"", "podarmor.io", "armornodestatuses", "", "", "list", true},
			{"shop", "podarmor.io", "armorpolicies", "status", "web", "patch", true},
			{"", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "podarmor", "patch", true},
			{helm.Namespace, "", "secrets", "", "podarmor-webhook-tls", "update", true},
			{helm.Namespace, "coordination.k8s.io", "leases", "", "podarmor-webhook-certs", "update", true},
			{"", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "other", "patch", false},
			{"", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "podarmor", "delete", false},
			{helm.Namespace, "", "secrets", "", "other", "get", false},
			{"shop", "", "secrets", "", "podarmor-webhook-tls", "get", false},
			{"shop", "", "pods", "", "", "list", false},
			{"shop", "podarmor.io", "armorpolicies", "", "web", "update", false},
		},
	}
	for sa, list := range checks {
		for _, c := range list {
			review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   "system:serviceaccount:" + helm.Namespace + ":" + sa,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + helm.Namespace, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: c.ns, Group: c.group, Resource: c.resource, Subresource: c.sub, Name: c.name, Verb: c.verb,
				},
			}}
			got, err := cp.Clientset.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), review, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Status.Allowed != c.allowed {
				t.Errorf("%s: %s %s %s/%s %q in %q: allowed %v, want %v", sa, c.verb, c.group, c.resource, c.sub, c.name, c.ns, got.Status.Allowed, c.allowed)
			}
		}
	}
}

// webhookProcess is podarmor-webhook running on loopback as its service account.
type webhookProcess struct {
	cmd *exec.Cmd
	// url is the webhook's HTTPS address; metrics its plain HTTP one.
	url     string
	metrics string
	log     *bytes.Buffer
	mu      *sync.Mutex
	done    chan error
}

// startWebhook runs podarmor-webhook with args (the Deployment's), listening on
// loopback, authenticated by a token of its service account: every request it makes is
// checked against the chart's RBAC.
func startWebhook(t *testing.T, cp *framework.ControlPlane, args []string) *webhookProcess {
	t.Helper()
	webhookBin := framework.WebhookBinary(t)

	expiry := int64(3600)
	tr, err := cp.Clientset.CoreV1().ServiceAccounts(helm.Namespace).CreateToken(t.Context(), "podarmor-webhook",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for podarmor-webhook: %v", err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: cp.Config.Host, CertificateAuthorityData: cp.Config.CAData, CertificateAuthority: cp.Config.CAFile}
	kc.AuthInfos["webhook"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "webhook"}
	kc.CurrentContext = "c"
	kubeconfig := filepath.Join(t.TempDir(), "webhook.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}

	ports := freePorts(t, 2)
	w := &webhookProcess{url: "https://127.0.0.1:" + strconv.Itoa(ports[0]), metrics: "http://127.0.0.1:" + strconv.Itoa(ports[1]), log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	full := append([]string{}, args...)
	full = append(full,
		"--kubeconfig="+kubeconfig,
		"--listen-address=127.0.0.1:"+strconv.Itoa(ports[0]),
		"--metrics-address=127.0.0.1:"+strconv.Itoa(ports[1]),
		"--log-format=text",
	)
	w.cmd = exec.Command(webhookBin, full...)
	w.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+helm.Namespace)
	// The Deployment's $(POD_NAMESPACE) is the kubelet's expansion; do it here.
	for i, a := range w.cmd.Args {
		w.cmd.Args[i] = strings.ReplaceAll(a, "$(POD_NAMESPACE)", helm.Namespace)
	}
	w.cmd.Stdout, w.cmd.Stderr = lockedWriter{w.mu, w.log}, lockedWriter{w.mu, w.log}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.done <- w.cmd.Wait() }()
	t.Cleanup(func() {
		w.stop(t)
		if t.Failed() {
			w.mu.Lock()
			t.Logf("podarmor-webhook log:\n%s", w.log.String())
			w.mu.Unlock()
		}
	})
	return w
}

// waitReady waits for /readyz: the webhook's caches synced (it could list and watch
// what it needs) and its certificate loaded (it could read the Secret).
func (w *webhookProcess) waitReady(t *testing.T) {
	t.Helper()
	framework.WaitFor(t, time.Minute, "podarmor-webhook /readyz", func(ctx context.Context) (bool, error) {
		select {
		case err := <-w.done:
			w.done <- err
			return false, fmt.Errorf("podarmor-webhook exited: %v", err)
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.metrics+"/readyz", nil)
		if err != nil {
			return false, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

func (w *webhookProcess) stop(t *testing.T) {
	if w.cmd.ProcessState != nil {
		return
	}
	_ = w.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-w.done:
		w.done <- err
	case <-time.After(15 * time.Second):
		_ = w.cmd.Process.Kill()
		err := <-w.done
		w.done <- err
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// freePorts returns n free loopback ports.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// exists GETs o.
func (a *api) exists(ctx context.Context, o object) error {
	return a.do(ctx, http.MethodGet, o)
}

// delete DELETEs o (foreground: the call returns once it is gone or being finalized).
func (a *api) delete(ctx context.Context, o object) error {
	err := a.do(ctx, http.MethodDelete, o)
	var se *apierrors.StatusError
	if errors.As(err, &se) && apierrors.IsNotFound(se) {
		return nil
	}
	return err
}

func (a *api) do(ctx context.Context, method string, o object) error {
	p, err := a.path(o)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(a.cp.Config.Host, "/")+p+"/"+o.u.GetName(), nil)
	if err != nil {
		return err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, o, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return apierrors.NewNotFound(o.u.GroupVersionKind().GroupVersion().WithResource("").GroupResource(), o.u.GetName())
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: HTTP %d", method, o, resp.StatusCode)
	}
	return nil
}

// TestHelmInstallUpgradeUninstall runs the real helm against the control plane: install
// (the default policy, a pre-install hook, is created before the webhook configurations
// whose policy validation no webhook replica could answer yet), the webhook writing its
// caBundle, an upgrade that keeps the caBundle and does not touch the default policy,
// and an uninstall after which no webhook configuration blocks pod creation.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			cp := framework.StartControlPlane(t, framework.Options{Version: version})
			removePodarmorCRDs(t, cp)
			home := t.TempDir()
			helmCmd := func(args ...string) string {
				t.Helper()
				cmd := exec.CommandContext(t.Context(), helmBinary(t), append(args,
					"--kubeconfig", cp.Kubeconfig, "--namespace", helm.Namespace)...)
				cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				return string(out)
			}
			chart := filepath.Join(repoRoot(t), helm.ChartDir)
			t.Log(helmCmd("install", helm.ReleaseName, chart, "--create-namespace"))

			// The default policy is what deploy/policies/default.yaml says.
			policy := &v1alpha1.ClusterArmorPolicy{}
			if err := cp.Client.Get(t.Context(), clientKey("default"), policy); err != nil {
				t.Fatalf("the default policy after helm install: %v", err)
			}
			if policy.Spec.Mode != v1alpha1.ModeRuntimeDefault || len(policy.Spec.Enforcers) != 3 {
				t.Errorf("the default policy's spec %+v, want deploy/policies/default.yaml's", policy.Spec)
			}

			var args []string
			for _, doc := range render(t, version, nil, nil) {
				o := parse(t, doc)
				if o.u.GetKind() == "Deployment" {
					var d struct {
						Spec struct{ Template struct{ Spec corev1.PodSpec } }
					}
					mustUnmarshal(t, o.data, &d)
					args = d.Spec.Template.Spec.Containers[0].Args
				}
			}
			w := startWebhook(t, cp, args)
			admission := cp.Clientset.AdmissionregistrationV1()
			bundles := func(ctx context.Context) ([][]byte, error) {
				var out [][]byte
				m, err := admission.MutatingWebhookConfigurations().Get(ctx, "podarmor", metav1.GetOptions{})
				if err != nil {
					return nil, err
				}
				for _, h := range m.Webhooks {
					out = append(out, h.ClientConfig.CABundle)
				}
				v, err := admission.ValidatingWebhookConfigurations().Get(ctx, "podarmor", metav1.GetOptions{})
				if err != nil {
					return nil, err
				}
				for _, h := range v.Webhooks {
					out = append(out, h.ClientConfig.CABundle)
				}
				return out, nil
			}
			var before [][]byte
			framework.WaitFor(t, time.Minute, "the webhook's caBundle in both configurations", func(ctx context.Context) (bool, error) {
				b, err := bundles(ctx)
				if err != nil {
					return false, err
				}
				for _, x := range b {
					if len(x) == 0 {
						return false, nil
					}
				}
				before = b
				return true, nil
			})
			w.waitReady(t)

			// An upgrade leaves the default policy (the cluster admin's after the first
			// install) and the caBundle as they are. (Editing the policy here would go
			// through the policy webhook, which the API server cannot reach: no node
			// runs its pods.)
			policyGeneration := policy.Generation
			t.Log(helmCmd("upgrade", helm.ReleaseName, chart, "--set", "webhook.logLevel=debug", "--set", "webhook.timeoutSeconds=7"))
			after, err := bundles(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(after, before) {
				t.Error("helm upgrade changed or dropped the webhook's caBundle")
			}
			m, err := admission.MutatingWebhookConfigurations().Get(t.Context(), "podarmor", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if *m.Webhooks[0].TimeoutSeconds != 7 {
				t.Errorf("after the upgrade, timeoutSeconds %d, want 7", *m.Webhooks[0].TimeoutSeconds)
			}
			if err := cp.Client.Get(t.Context(), clientKey("default"), policy); err != nil {
				t.Fatal(err)
			}
			// (Its status changes: the webhook's leader writes it.)
			if policy.Generation != policyGeneration {
				t.Errorf("helm upgrade wrote the default policy (generation %d, was %d)", policy.Generation, policyGeneration)
			}

			t.Log(helmCmd("uninstall", helm.ReleaseName, "--wait"))
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				if _, err := admission.MutatingWebhookConfigurations().Get(t.Context(), "podarmor", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Fatalf("MutatingWebhookConfiguration podarmor after helm uninstall: %v", err)
				}
				if _, err := admission.ValidatingWebhookConfigurations().Get(t.Context(), "podarmor", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Fatalf("ValidatingWebhookConfiguration podarmor after helm uninstall: %v", err)
				}
				time.Sleep(500 * time.Millisecond)
			}
			w.stop(t)
			ns := cp.CreateNamespace(t, map[string]string{v1alpha1.LabelEnable: "true"})
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "after-uninstall", Namespace: ns.Name},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
			}
			if _, err := cp.Clientset.CoreV1().Pods(ns.Name).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
				t.Errorf("create a pod in an opted-in namespace after helm uninstall: %v", err)
			}
			if err := cp.Client.Get(t.Context(), clientKey("default"), policy); err != nil {
				t.Errorf("the default policy after helm uninstall: %v", err)
			}
		})
	}
}

func clientKey(name string) client.ObjectKey { return client.ObjectKey{Name: name} }
