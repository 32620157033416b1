package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

const (
	testNamespace = "podarmor-system"
	// testServerName is the Service's in-cluster name, which the API server dials.
	testServerName = "podarmor-webhook.podarmor-system.svc"
)

// Durations for tests on the fake clock: short enough to read, in the same proportions
// as production.
const (
	testCAValidity      = 30 * 24 * time.Hour
	testServingValidity = 3 * 24 * time.Hour
	testOverlap         = time.Hour
)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// newFakeClock starts at the real time, so that certificates also verify in code that
// does not take the fake clock (such as a TLS server checking nothing).
func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Now().Truncate(time.Second)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set moves the clock to t.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Add moves the clock forward by d.
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testLogger logs into the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a Secret-mode Config on client and clock.
func testConfig(t *testing.T, client *fake.Clientset, clock *fakeClock, identity string) Config {
	return Config{
		Client:           client,
		Namespace:        testNamespace,
		Identity:         identity,
		DNSNames:         []string{"localhost"},
		IPAddresses:      []net.IP{net.ParseIP("127.0.0.1")},
		CAValidity:       testCAValidity,
		ServingValidity:  testServingValidity,
		Overlap:          testOverlap,
		LeaseDuration:    2 * time.Second,
		RenewDeadline:    time.Second,
		RetryPeriod:      200 * time.Millisecond,
		ResyncInterval:   20 * time.Millisecond,
		FilePollInterval: 10 * time.Millisecond,
		Now:              clock.Now,
		Logger:           testLogger(t),
	}
}

// newTestManager returns a Manager for cfg or fails the test.
func newTestManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

// run runs m until the test ends, and waits for Run to return.
func run(t *testing.T, m *Manager) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// webhookConfigurations returns the two configurations the Manager keeps, with two
// webhooks each and no caBundle, and one it must leave alone.
func webhookConfigurations() []runtime.Object {
	svc := func(path string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
			Namespace: testNamespace, Name: DefaultServiceName, Path: &path,
		}}
	}
	return []runtime.Object{
		&admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: DefaultWebhookConfigurationName},
			Webhooks: []admissionregistrationv1.MutatingWebhook{
				{Name: "pods.mutate.podarmor.io", ClientConfig: svc("/mutate-pods")},
				{Name: "more.mutate.podarmor.io", ClientConfig: svc("/mutate-more")},
			},
		},
		&admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: DefaultWebhookConfigurationName},
			Webhooks: []admissionregistrationv1.ValidatingWebhook{
				{Name: "pods.validate.podarmor.io", ClientConfig: svc("/validate-pods")},
				{Name: "policies.validate.podarmor.io", ClientConfig: svc("/validate-policies")},
			},
		},
		otherConfiguration(),
	}
}

// otherConfiguration belongs to someone else.
func otherConfiguration() *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "someone-else"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         "other.example.com",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: []byte("theirs")},
		}},
	}
}

// getSecret returns the certificate Secret or fails the test.
func getSecret(t *testing.T, client *fake.Clientset) *corev1.Secret {
	t.Helper()
	s, err := client.CoreV1().Secrets(testNamespace).Get(t.Context(), DefaultSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Secret: %v", err)
	}
	return s
}

// state is the Secret's content in a form tests can compare.
type state struct {
	cas     []*x509.Certificate
	signer  *x509.Certificate
	serving *x509.Certificate
}

// readState parses the Secret or fails the test.
func readState(t *testing.T, client *fake.Clientset) state {
	t.Helper()
	s := getSecret(t, client)
	m := parseMaterial(s.Data)
	if m.signer == nil || m.serving == nil {
		t.Fatalf("Secret lacks a usable CA or serving certificate: keys %v", keys(s.Data))
	}
	return state{cas: m.cas, signer: m.signer, serving: m.serving}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// caBundles returns the caBundle of every webhook in the two managed configurations.
func caBundles(t *testing.T, client *fake.Clientset) [][]byte {
	t.Helper()
	ctx := t.Context()
	var out [][]byte
	mut, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, DefaultWebhookConfigurationName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get mutating configuration: %v", err)
	}
	for _, w := range mut.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	val, err := client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, DefaultWebhookConfigurationName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get validating configuration: %v", err)
	}
	for _, w := range val.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	return out
}

// reconcileOK reconciles once or fails the test.
func reconcileOK(t *testing.T, m *Manager) {
	t.Helper()
	if _, err := m.reconcile(t.Context()); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
}

// eventually polls cond until it holds or ten seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// served returns the leaf m serves now, or nil.
func served(m *Manager) *x509.Certificate {
	c, err := m.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		return nil
	}
	return c.Leaf
}

// pool returns a CertPool of certs.
func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// names returns the common names of certs.
func names(certs []*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, c.Subject.CommonName)
	}
	return out
}
