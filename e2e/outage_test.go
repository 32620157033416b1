package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/deploy/helm"
	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/e2e/vm"
)

// outageSwitchInVM is where the guest flips the switch of its path to the API server.
var outageSwitchInVM = vm.ForwardIP + ":6444"

// TestEnforcerAPIServerOutage runs the enforcer's Kubernetes mode in a VM on each kernel
// series with the API server behind a switch the guest flips, for 30 s. On 6.1 the
// switch cuts the network path: every connection is closed and new ones are closed at
// once. On 6.12 it stops kube-apiserver and starts it again on the same port and etcd
// (one kind of outage per kernel keeps the test to two VMs).
// enforcer/kube/outage_guest_test.go says what is checked during and after. The enforcer
// runs as the chart's service account with the chart's RBAC (deploy/podarmor.yaml), with
// a token bound to a pod on its node; the API server's audit log shows that it was
// refused nothing (outside a restart's unready window) and that it created and patched
// Events for its denials, which e2e/install's RBAC test cannot cause on a kernel without
// BPF LSM.
func TestEnforcerAPIServerOutage(t *testing.T) {
	vm.Require(t)
	version := framework.Versions(t)[0]
	bin := vm.BuildGoTest(t, vm.GoTest{
		Package:  "../enforcer/kube",
		Tags:     []string{"netgo", "osusergo"},
		BuildEnv: []string{"CGO_ENABLED=1"},
		LDFlags:  "-extldflags -static",
	})
	for _, series := range vm.Series() {
		t.Run(series, func(t *testing.T) {
			t.Parallel()
			auditLog := filepath.Join(t.TempDir(), "audit.log")
			cp := framework.StartControlPlane(t, framework.Options{Version: version, APIServerFlags: auditFlags(t, auditLog, enforcerUser)})
			ns := cp.CreateNamespace(t, nil)
			agentKubeconfig := chartEnforcerKubeconfig(t, cp, "vm-node")
			sw := newCutSwitch(t, hostOf(t, cp.Config.Host))
			if series != "6.1" {
				sw.stop = func() error { cp.StopAPIServer(t); return nil }
				sw.start = func() error { return cp.StartAPIServer(t) }
			}
			vm.RunGoTest(t, series, vm.GoTest{
				Binary: bin,
				Args:   []string{"-test.run=^TestAPIServerOutage$"},
				Env: []string{"PODARMOR_TEST_KUBECONFIG=/etc/podarmor/kubeconfig", "PODARMOR_TEST_NAMESPACE=" + ns.Name,
					"PODARMOR_TEST_AGENT_KUBECONFIG=/etc/podarmor/agent.kubeconfig", "PODARMOR_TEST_OUTAGE_URL=http://" + outageSwitchInVM},
				Files: []vm.File{
					{Source: guestKubeconfig(t, cp.Kubeconfig), Path: "/etc/podarmor/kubeconfig"},
					{Source: guestKubeconfig(t, agentKubeconfig), Path: "/etc/podarmor/agent.kubeconfig"},
				},
				Forwards: []vm.Forward{
					{GuestAddr: apiServerInVM, Host: sw.proxy},
					{GuestAddr: outageSwitchInVM, Host: sw.control},
				},
				MemoryMiB: 2048,
				Timeout:   10 * time.Minute,
			})
			sw.mu.Lock()
			cuts, refused, restarted, ready := sw.cuts, sw.refused, sw.restarted, sw.ready
			sw.mu.Unlock()
			if cuts != 1 || refused == 0 {
				t.Errorf("the switch was cut %d times and refused %d connections; want one cut that refused some", cuts, refused)
			}
			t.Logf("during the outage %d connections were refused", refused)
			used, refusals, uris := auditOf(t, auditLog, enforcerUser)
			for _, r := range refusals {
				// A restarted kube-apiserver answers before its RBAC informers have
				// synced, and until then refuses everyone ("clusterrole ... not found");
				// /readyz waits for that sync. Refusals in that window are the API
				// server's, not gaps in the chart's RBAC, and the enforcer retries them.
				if !restarted.IsZero() && !r.at.Before(restarted) && !r.at.After(ready) {
					t.Logf("refused while the restarted API server was not ready yet: %s", r.what)
					continue
				}
				t.Errorf("the enforcer was refused %s", r.what)
			}
			for _, want := range []string{"create events.k8s.io/events", "patch events.k8s.io/events"} {
				if !slices.Contains(used, want) {
					t.Errorf("the enforcer did not %s with the chart's RBAC; it did: %v", want, used)
				}
			}
			// Its pod informer sees only the pods of its own node. (It may list with a
			// watch: client-go's streaming list.)
			if len(uris["watch pods"]) == 0 {
				t.Errorf("the enforcer did not watch pods; it did: %v", used)
			}
			for _, k := range []string{"list pods", "watch pods"} {
				for _, uri := range uris[k] {
					if !strings.Contains(uri, "fieldSelector=spec.nodeName%3Dvm-node") {
						t.Errorf("the enforcer's %s is not limited to its node: %s", k, uri)
					}
				}
			}
			t.Logf("the enforcer's requests, as the chart's service account: %v", used)
		})
	}
}

// cutSwitch is a TCP proxy to the API server (proxy) with an HTTP switch (control):
// GET /cut closes every proxied connection and, until GET /restore, closes new ones as
// soon as they are accepted. With stop and start set, GET /cut calls stop instead (the
// API server goes away) and GET /restore calls start.
type cutSwitch struct {
	target, proxy, control string
	stop, start            func() error

	mu      sync.Mutex
	cut     bool
	conns   map[net.Conn]bool
	cuts    int
	refused int

	// restarted and ready bound the restart of the API server (start set): from
	// the call to start to its /readyz answering ok.
	restarted, ready time.Time
}

func newCutSwitch(t *testing.T, target string) *cutSwitch {
	t.Helper()
	s := &cutSwitch{target: target, conns: map[net.Conn]bool{}}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.proxy, s.control = pl.Addr().String(), cl.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cut", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.cuts++
		if s.stop != nil {
			s.mu.Unlock()
			if err := s.stop(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			t.Log("kube-apiserver stopped")
			return
		}
		defer s.mu.Unlock()
		s.cut = true
		for c := range s.conns {
			c.Close()
		}
		t.Logf("API server cut off (%d connections closed)", len(s.conns))
	})
	mux.HandleFunc("GET /restore", func(w http.ResponseWriter, r *http.Request) {
		if s.start != nil {
			start := time.Now()
			err := s.start()
			s.mu.Lock()
			s.restarted, s.ready = start, time.Now()
			s.mu.Unlock()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			t.Logf("kube-apiserver started again, ready in %v", time.Since(start).Round(time.Millisecond))
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.cut = false
		t.Log("API server reachable again")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(cl)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := pl.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	t.Cleanup(func() {
		pl.Close()
		srv.Close()
		<-done
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	return s
}

// serve relays one connection unless the switch is cut.
func (s *cutSwitch) serve(c net.Conn) {
	s.mu.Lock()
	if s.cut {
		s.refused++
		s.mu.Unlock()
		c.Close()
		return
	}
	s.mu.Unlock()
	up, err := net.Dial("tcp", s.target)
	if err != nil { // the API server is stopped
		s.mu.Lock()
		s.refused++
		s.mu.Unlock()
		c.Close()
		return
	}
	s.mu.Lock()
	if s.cut { // cut while dialling
		s.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	s.conns[c], s.conns[up] = true, true
	s.mu.Unlock()
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		// EOF, a reset or the switch's Close: either way the relay ends.
		_, _ = io.Copy(dst, src)
		dst.Close()
		src.Close()
	}
	wg.Add(2)
	go pipe(up, c)
	go pipe(c, up)
	wg.Wait()
	s.mu.Lock()
	delete(s.conns, c)
	delete(s.conns, up)
	s.mu.Unlock()
}

// enforcerUser is the chart's enforcer service account.
const enforcerUser = "system:serviceaccount:" + helm.Namespace + ":podarmor-enforcer"

// auditFlags are kube-apiserver flags that write every request of user to file.
func auditFlags(t *testing.T, file, user string) []string {
	t.Helper()
	policy := filepath.Join(t.TempDir(), "audit-policy.yaml")
	data := fmt.Sprintf("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n    users: [%q]\n  - level: None\n", user)
	if err := os.WriteFile(policy, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"--audit-policy-file=" + policy, "--audit-log-path=" + file, "--audit-log-mode=blocking"}
}

// refusal is a request the API server refused, and when it received it.
type refusal struct {
	at   time.Time
	what string
}

// auditOf reads the audit log: the distinct "verb group/resource" of user's allowed
// requests, sorted, and its refused requests.
func auditOf(t *testing.T, file, user string) (used []string, refused []refusal, uris map[string][]string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e struct {
			Verb        string
			User        struct{ Username string }
			RequestURI  string
			ObjectRef   *struct{ Resource, Subresource, APIGroup string }
			Annotations map[string]string

			RequestReceivedTimestamp metav1.MicroTime
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit log line %q: %v", sc.Text(), err)
		}
		if e.User.Username != user {
			continue
		}
		if d := e.Annotations["authorization.k8s.io/decision"]; d != "allow" {
			refused = append(refused, refusal{e.RequestReceivedTimestamp.Time, fmt.Sprintf("%s %s (%s, %s)", e.Verb, e.RequestURI, d, e.Annotations["authorization.k8s.io/reason"])})
			continue
		}
		if e.ObjectRef == nil {
			continue
		}
		r := e.ObjectRef.Resource
		if e.ObjectRef.Subresource != "" {
			r += "/" + e.ObjectRef.Subresource
		}
		if e.ObjectRef.APIGroup != "" {
			r = e.ObjectRef.APIGroup + "/" + r
		}
		k := e.Verb + " " + r
		if !slices.Contains(used, k) {
			used = append(used, k)
		}
		if uris == nil {
			uris = map[string][]string{}
		}
		uris[k] = append(uris[k], e.RequestURI)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(used)
	return used, refused, uris
}

// chartEnforcerKubeconfig creates the enforcer's service account, RBAC and node-status
// admission policy from deploy/podarmor.yaml (the chart rendered for the newest
// Kubernetes), a Node and a pod of the enforcer on it, and returns a kubeconfig with a
// token of the service account bound to that pod, as kubelet mounts it.
func chartEnforcerKubeconfig(t *testing.T, cp *framework.ControlPlane, node string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "deploy", "podarmor.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	created := 0
	for _, doc := range helm.Documents(data) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("deploy/podarmor.yaml: %v", err)
		}
		switch k := u.GetKind(); {
		case k == "Namespace",
			(k == "ServiceAccount" || k == "ClusterRole" || k == "ClusterRoleBinding") && u.GetName() == "podarmor-enforcer",
			strings.HasPrefix(k, "ValidatingAdmissionPolicy"):
			if err := cp.Client.Create(t.Context(), u); err != nil {
				t.Fatalf("create %s %s from deploy/podarmor.yaml: %v", k, u.GetName(), err)
			}
			created++
		}
	}
	if created != 6 {
		t.Fatalf("deploy/podarmor.yaml: %d of the enforcer's 6 objects (namespace, service account, RBAC, admission policy)", created)
	}
	if err := cp.Client.Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "podarmor-enforcer-" + node, Namespace: helm.Namespace},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "podarmor-enforcer",
			Containers: []corev1.Container{{Name: "enforcer", Image: "localhost/podarmor/enforcer:0.1.0"}}},
	}
	if err := cp.Client.Create(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	expiry := int64(3600)
	tok, err := cp.Clientset.CoreV1().ServiceAccounts(helm.Namespace).CreateToken(t.Context(), "podarmor-enforcer", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry, BoundObjectRef: &authenticationv1.BoundObjectReference{
			Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID,
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: cp.Config.Host, CertificateAuthorityData: cp.Config.CAData}
	kc.AuthInfos["enforcer"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "enforcer"}
	kc.CurrentContext = "c"
	path := filepath.Join(t.TempDir(), "enforcer.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}
