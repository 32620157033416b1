package e2e

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// TestSlowWebhook puts a proxy that holds back each of the webhook's answers in front
// of podarmor-webhook, whose configurations carry the chart's timeoutSeconds and
// failurePolicy Fail (webhook/registration writes both, as the chart does): an answer
// later than the timeout refuses pods of opted-in namespaces and policies with a
// timeout error after about timeoutSeconds, while pods of other namespaces are created
// at once; an answer slower than usual but within the timeout admits the pod mutated.
func TestSlowWebhook(t *testing.T) {
	timeout := chartTimeoutSeconds(t)
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			e := startWebhookEnv(t, version, "--default-policy", "baseline")
			shop := e.cp.CreateNamespace(t, map[string]string{v1alpha1.LabelEnable: "true"})
			plain := e.cp.CreateNamespace(t, nil)
			e.createClusterPolicy(t, &v1alpha1.ClusterArmorPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: "baseline"},
				Spec: v1alpha1.ClusterArmorPolicySpec{ArmorPolicySpec: v1alpha1.ArmorPolicySpec{
					Target:    v1alpha1.Target{Selector: metav1.LabelSelector{}},
					Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF, v1alpha1.EnforcerSeccomp},
					Mode:      v1alpha1.ModeRuntimeDefault,
				}, NamespaceSelector: metav1.LabelSelector{}},
			}, &ready)
			e.waitForProfile(t, testPod(shop.Name, "web"), "cap.baseline", "")

			// The registration is the chart's: failurePolicy Fail and its timeout on
			// every webhook.
			admission := e.cp.Clientset.AdmissionregistrationV1()
			m, err := admission.MutatingWebhookConfigurations().Get(t.Context(), "podarmor", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			v, err := admission.ValidatingWebhookConfigurations().Get(t.Context(), "podarmor", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			check := func(name string, fp *admissionregistrationv1.FailurePolicyType, ts *int32) {
				if fp == nil || *fp != admissionregistrationv1.Fail || ts == nil || *ts != timeout {
					t.Fatalf("webhook %s: failurePolicy %v, timeoutSeconds %v; want Fail and the chart's %d", name, fp, ts, timeout)
				}
			}
			for _, h := range m.Webhooks {
				check(h.Name, h.FailurePolicy, h.TimeoutSeconds)
			}
			for _, h := range v.Webhooks {
				check(h.Name, h.FailurePolicy, h.TimeoutSeconds)
			}

			// The API server calls the webhook through the proxy from now on.
			u, err := url.Parse(e.wh.URL)
			if err != nil {
				t.Fatal(err)
			}
			slow := newSlowProxy(t, u.Host)
			via := func(s *string) {
				if s == nil || !strings.HasPrefix(*s, e.wh.URL) {
					t.Fatalf("webhook URL %v, want one under %s", s, e.wh.URL)
				}
				*s = "https://" + slow.addr + strings.TrimPrefix(*s, e.wh.URL)
			}
			for i := range m.Webhooks {
				via(m.Webhooks[i].ClientConfig.URL)
			}
			for i := range v.Webhooks {
				via(v.Webhooks[i].ClientConfig.URL)
			}
			if _, err := admission.MutatingWebhookConfigurations().Update(t.Context(), m, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := admission.ValidatingWebhookConfigurations().Update(t.Context(), v, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			// Until the API server's configuration cache has the proxy, calls go
			// straight to the webhook; each one through the proxy counts.
			e.waitForProfile(t, testPod(shop.Name, "web"), "cap.baseline", "")
			framework.WaitFor(t, 30*time.Second, "the API server to call the webhook through the proxy", func(ctx context.Context) (bool, error) {
				_, err := e.dryRun(ctx, testPod(shop.Name, "web"))
				return err == nil && slow.calls() > 0, nil
			})

			limit := time.Duration(timeout) * time.Second
			t.Run("an answer later than timeoutSeconds refuses opted-in pods and policies", func(t *testing.T) {
				slow.setDelay(limit + 3*time.Second)
				start := time.Now()
				_, err := e.cp.Clientset.CoreV1().Pods(shop.Name).Create(t.Context(), testPod(shop.Name, "web"), metav1.CreateOptions{})
				took := time.Since(start)
				if err == nil {
					t.Fatal("a pod of an opted-in namespace was created though the webhook answered after the timeout")
				}
				if !isTimeout(err) || !strings.Contains(err.Error(), "pods.podarmor.io") {
					t.Errorf("refusal %q, want a timeout calling pods.podarmor.io", err)
				}
				// Not before the timeout; the upper bound is loose for a loaded machine
				// (an API server that waited for the answer would have admitted the pod).
				if took < limit || took > 2*limit {
					t.Errorf("refused after %v, want about timeoutSeconds (%v)", took, limit)
				}
				t.Logf("opted-in pod refused after %v: %v", took.Round(time.Millisecond), err)

				start = time.Now()
				p := &v1alpha1.ArmorPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: shop.Name},
					Spec:       enhanceSpec("web"),
				}
				err = e.cp.Client.Create(t.Context(), p)
				took = time.Since(start)
				if err == nil {
					t.Fatal("an ArmorPolicy was created though its validation answered after the timeout")
				}
				if !isTimeout(err) || !strings.Contains(err.Error(), "policies.podarmor.io") {
					t.Errorf("refusal %q, want a timeout calling policies.podarmor.io", err)
				}
				t.Logf("ArmorPolicy refused after %v", took.Round(time.Millisecond))

				start = time.Now()
				if _, err := e.cp.Clientset.CoreV1().Pods(plain.Name).Create(t.Context(), testPod(plain.Name, "web"), metav1.CreateOptions{}); err != nil {
					t.Errorf("a pod of another namespace was refused: %v", err)
				}
				took = time.Since(start)
				if took >= limit {
					t.Errorf("a pod of another namespace took %v, want well under timeoutSeconds (%v): the webhook is not called for it", took, limit)
				}
				t.Logf("pod of another namespace created in %v", took.Round(time.Millisecond))
			})

			t.Run("an answer slower than usual but within timeoutSeconds admits the pod mutated", func(t *testing.T) {
				const delay = time.Second
				slow.setDelay(delay)
				// Answers still held back by the longer delay drain first.
				e.waitForProfile(t, testPod(shop.Name, "web"), "cap.baseline", "")
				start := time.Now()
				got, err := e.cp.Clientset.CoreV1().Pods(shop.Name).Create(t.Context(), testPod(shop.Name, "web"), metav1.CreateOptions{})
				took := time.Since(start)
				if err != nil {
					t.Fatalf("a pod whose webhook answered within the timeout was refused after %v: %v", took, err)
				}
				if got.Labels[v1alpha1.LabelProfile] != "cap.baseline" {
					t.Errorf("pod labels %v, want profile cap.baseline", got.Labels)
				}
				if took < delay {
					t.Errorf("created in %v, before the proxy's delay of %v: the call did not go through it", took, delay)
				}
				t.Logf("opted-in pod created in %v with the answers held back %v", took.Round(time.Millisecond), delay)
			})
		})
	}
}

// isTimeout reports whether an admission error is the API server giving up on a webhook.
func isTimeout(err error) bool {
	s := err.Error()
	return strings.Contains(s, "context deadline exceeded") || strings.Contains(s, "Timeout") || strings.Contains(s, "timeout")
}

// chartTimeoutSeconds is webhook.timeoutSeconds of the chart's values.yaml.
func chartTimeoutSeconds(t *testing.T) int32 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "deploy/helm/podarmor/values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Webhook struct {
			TimeoutSeconds int32 `json:"timeoutSeconds"`
		} `json:"webhook"`
	}
	if err := yaml.Unmarshal(data, &values); err != nil {
		t.Fatal(err)
	}
	if values.Webhook.TimeoutSeconds <= 0 {
		t.Fatal("values.yaml has no webhook.timeoutSeconds")
	}
	return values.Webhook.TimeoutSeconds
}

// slowProxy relays TCP connections to the webhook and holds back what the webhook sends
// after each thing the API server sent: the answer to a request (and the TLS
// handshake's) leaves the proxy a delay after the request reached it. TLS passes
// through untouched.
type slowProxy struct {
	addr string

	mu    sync.Mutex
	delay time.Duration
	n     int
}

func newSlowProxy(t *testing.T, target string) *slowProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn) {
		mu.Lock()
		conns[c] = true
		mu.Unlock()
	}
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			track(c)
			track(up)
			wg.Go(func() { p.relay(c, up) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

func (p *slowProxy) setDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// calls is how many times the API server sent something through the proxy.
func (p *slowProxy) calls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// relay copies both ways. What the webhook sends after the API server last sent
// something leaves the proxy no earlier than that moment plus the delay; the rest of an
// answer follows as it comes.
func (p *slowProxy) relay(client, webhook net.Conn) {
	defer client.Close()
	defer webhook.Close()
	var (
		mu             sync.Mutex
		sent, answered time.Time
	)
	go func() {
		defer webhook.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				p.mu.Lock()
				p.n++
				p.mu.Unlock()
				mu.Lock()
				sent = time.Now()
				mu.Unlock()
				if _, werr := webhook.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := webhook.Read(buf)
		if n > 0 {
			mu.Lock()
			at := sent
			hold := at.After(answered)
			answered = at
			mu.Unlock()
			if hold {
				p.mu.Lock()
				d := p.delay
				p.mu.Unlock()
				time.Sleep(time.Until(at.Add(d)))
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
