package framework

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WebhookNamespace is where the e2e tests run podarmor's own objects (the certificate
// Secret, the leader-election Lease).
const WebhookNamespace = "podarmor-system"

// WebhookOptions chooses how StartWebhook runs podarmor-webhook.
type WebhookOptions struct {
	// Args are appended to the command line (they win over the defaults).
	Args []string
}

// Webhook is a podarmor-webhook process serving the control plane from loopback, with
// the webhook configurations registered by URL.
type Webhook struct {
	cp   *ControlPlane
	args []string
	proc *process
	log  string
	// URL is the HTTPS base URL of the webhook; MetricsURL serves /metrics, /healthz and
	// /readyz over plain HTTP.
	URL        string
	MetricsURL string
}

var (
	webhookBinOnce sync.Once
	webhookBin     string
	webhookBinErr  error
)

// WebhookBinary builds podarmor-webhook once per test process and returns its path.
func WebhookBinary(t testing.TB) string {
	webhookBinOnce.Do(func() {
		root, err := repoRoot()
		if err != nil {
			webhookBinErr = err
			return
		}
		dir, err := TempDir("podarmor-webhook-bin")
		if err != nil {
			webhookBinErr = err
			return
		}
		webhookBin = filepath.Join(dir, "podarmor-webhook")
		cmd := exec.Command("go", "build", "-o", webhookBin, "./webhook/cmd/podarmor-webhook")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			webhookBinErr = fmt.Errorf("go build podarmor-webhook: %v\n%s", err, out)
		}
	})
	if webhookBinErr != nil {
		t.Fatal(webhookBinErr)
	}
	return webhookBin
}

// StartWebhook builds and starts podarmor-webhook against the control plane, registers
// its webhook configurations, and waits until the API server calls it. t.Cleanup stops it.
func (cp *ControlPlane) StartWebhook(t testing.TB, opts WebhookOptions) *Webhook {
	t.Helper()
	bin := WebhookBinary(t)
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = cp.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: WebhookNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", WebhookNamespace, err)
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	metricsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	w := &Webhook{
		cp:         cp,
		URL:        "https://" + listen,
		MetricsURL: "http://" + metricsAddr,
		log:        filepath.Join(cp.Dir, "podarmor-webhook.log"),
	}
	w.args = append([]string{bin,
		"--kubeconfig", cp.Kubeconfig,
		"--listen-address", listen,
		"--metrics-address", metricsAddr,
		"--register-url", w.URL,
		"--tls-ip-addresses", "127.0.0.1",
		"--namespace", WebhookNamespace,
		"--log-format", "text",
		"--log-level", "debug",
	}, opts.Args...)
	w.Start(t)
	t.Cleanup(func() { w.Stop(t) })
	return w
}

// Start starts the webhook (again, after Kill or Stop) on the same addresses and waits
// until it is ready and the API server reaches it.
func (w *Webhook) Start(t testing.TB) {
	t.Helper()
	p, err := startProcess(w.args, w.log)
	if err != nil {
		t.Fatal(err)
	}
	w.proc = p
	WaitFor(t, 60*time.Second, "podarmor-webhook ready and called by the API server", func(ctx context.Context) (bool, error) {
		select {
		case <-p.exited:
			return false, p.exitError()
		default:
		}
		if code, _ := w.get(ctx, "/readyz"); code != http.StatusOK {
			return false, nil
		}
		return w.reachable(ctx)
	})
}

// reachable reports whether the API server calls the webhook: a dry-run pod in an
// opted-in namespace comes back mutated or refused by podarmor.
func (w *Webhook) reachable(ctx context.Context) (bool, error) {
	const probe = "podarmor-e2e-probe"
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: probe, Labels: map[string]string{"podarmor.io/enable": "true"}}}
	if _, err := w.cp.Clientset.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return false, err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: probe}}
	if _, err := w.cp.Clientset.CoreV1().ServiceAccounts(probe).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return false, err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: probe},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	got, err := w.cp.Clientset.CoreV1().Pods(probe).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return strings.Contains(err.Error(), "podarmor"), nil
	}
	return got.Labels["podarmor.io/profile"] != "", nil
}

// Kill stops the webhook with SIGKILL, as a crash would.
func (w *Webhook) Kill(t testing.TB) {
	t.Helper()
	_ = w.proc.cmd.Process.Signal(syscall.SIGKILL)
	<-w.proc.exited
}

// Stop stops the webhook with SIGTERM (SIGKILL after a timeout).
func (w *Webhook) Stop(t testing.TB) {
	w.proc.stop(t)
}

// CPUTime returns the CPU time (user and system) the running webhook process has used.
func (w *Webhook) CPUTime() (time.Duration, error) {
	return w.proc.cpuTime()
}

// Metrics returns the webhook's /metrics text.
func (w *Webhook) Metrics(t testing.TB) string {
	t.Helper()
	code, body := w.get(context.Background(), "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d %s", w.MetricsURL, code, body)
	}
	return body
}

func (w *Webhook) get(ctx context.Context, path string) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.MetricsURL+path, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
