package node

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/e2e/vm"
)

// TestNodeJoin boots the node VM with the kubelet and kube-proxy of the newest
// Kubernetes version against a control plane on the host (etcd, kube-apiserver,
// kube-scheduler, kube-controller-manager laid out by e2e/framework for a cluster with
// a node), and waits for the node to be Ready. It then reaches the kubelet through the
// API server's egress path (HTTP CONNECT over the unix socket, the hostfwd, the guest's
// proxy).
func TestNodeJoin(t *testing.T) {
	vm.Require(t)
	version := framework.DefaultVersions[0]
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute)
	defer cancel()

	bin := kubeBinaries(ctx, t, version)
	image, err := Image(ctx, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	setup, err := framework.NewSetup(framework.SetupConfig{
		Dir: dir, BinDir: bin, Version: version,
		Cluster: &framework.ClusterConfig{NodeName: Name, AdvertiseAddress: vm.ForwardIP},
		// The API server checks that a node's name resolves (on the host) before it
		// proxies to it (nodes/NAME/proxy); the node's address needs no lookup. exec and
		// logs take the same address.
		APIServerFlags: []string{"--kubelet-preferred-address-types=InternalIP,Hostname"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := setup.Cluster.NodeDir; got != filepath.Join(dir, shareDir) {
		t.Fatalf("the setup's node directory is %s, want %s (the node's share)", got, filepath.Join(dir, shareDir))
	}
	for _, b := range []string{"kubelet", "kube-proxy"} {
		copyFile(t, filepath.Join(bin, b), filepath.Join(dir, shareDir, "bin", b), 0o755)
	}
	// The pause image (containerd's sandbox_image) and the demo's workload, from
	// hack/images.sh.
	images, demoApp := podarmorImages(ctx, t)
	for _, f := range []string{"pause.tar", "demo-app.tar"} {
		copyFile(t, filepath.Join(images, f), filepath.Join(dir, shareDir, "images", f), 0o644)
	}

	startProcess(t, setup.Etcd, filepath.Join(dir, "etcd.log"))
	startProcess(t, setup.APIServer, filepath.Join(dir, "kube-apiserver.log"))
	cs, err := kubernetes.NewForConfig(setup.Config)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "kube-apiserver /readyz", func() error {
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	})
	startProcess(t, setup.Cluster.Scheduler, filepath.Join(dir, "kube-scheduler.log"))
	startProcess(t, setup.Cluster.ControllerManager, filepath.Join(dir, "kube-controller-manager.log"))

	u, err := url.Parse(setup.APIServerURL)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	v, err := Start(ctx, Config{Dir: dir, Image: image, APIServer: u.Host, ProxySocket: setup.Cluster.EgressSocket,
		Log: func(s string) { t.Log(s) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{ConsoleFile, "logs/journal.log", "kube-apiserver.log", "kube-controller-manager.log"} {
				data, _ := os.ReadFile(filepath.Join(dir, f))
				t.Logf("--- %s (end):\n%s", f, tail(string(data), 60))
			}
		}
		if err := v.Shutdown(90 * time.Second); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	up, err := v.WaitUp(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("up after %s: %s", time.Since(start).Round(time.Second), up)
	if !strings.Contains(up, "podarmor-kubelet=active") {
		t.Errorf("the node's up line lacks %q", "podarmor-kubelet=active")
	}
	// kube-proxy's health server (0.0.0.0:10256), through the guest's proxy from the host.
	waitFor(ctx, t, "kube-proxy's /healthz", func() error {
		_, err := getThroughProxy(v.ProxyAddr, GuestIP+":10256", "/healthz")
		return err
	})

	var node *corev1.Node
	waitFor(ctx, t, "node "+Name+" Ready", func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		node = n
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				if c.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("Ready=%s: %s", c.Status, c.Message)
			}
		}
		return fmt.Errorf("no Ready condition yet")
	})
	t.Logf("node Ready after %s: kubelet %s, runtime %s, kernel %s, pod CIDR %s, addresses %v",
		time.Since(start).Round(time.Second), node.Status.NodeInfo.KubeletVersion, node.Status.NodeInfo.ContainerRuntimeVersion,
		node.Status.NodeInfo.KernelVersion, node.Spec.PodCIDR, node.Status.Addresses)
	if node.Status.NodeInfo.KubeletVersion != version {
		t.Errorf("kubelet version %s, want %s", node.Status.NodeInfo.KubeletVersion, version)
	}

	// The API server reaches the kubelet (port 10250 on the node's address) through its
	// egress selector: the unix socket, the hostfwd and the guest's proxy. The kubelet
	// takes no anonymous requests: it answers only because the API server presents its
	// client certificate of the cluster CA (apiserver-kubelet-client, system:masters),
	// which the kubelet authenticates and authorizes by asking the API server back.
	hc, err := rest.HTTPClientFor(setup.Config)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(setup.APIServerURL + "/api/v1/nodes/" + Name + "/proxy/healthz")
	if err != nil {
		t.Fatalf("GET nodes/%s/proxy/healthz: %v", Name, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("GET nodes/%s/proxy/healthz: %s %s", Name, resp.Status, bytes.TrimSpace(body))
	if resp.StatusCode != 200 || string(bytes.TrimSpace(body)) != "ok" {
		t.Errorf("GET nodes/%s/proxy/healthz through the egress path: %s %q, want the kubelet's 200 ok", Name, resp.Status, body)
	}

	// A pod of the demo's workload runs on the node (sandbox from our pause image, an
	// address from the bridge), and the API server reaches it through the same path.
	waitFor(ctx, t, "the default service account", func() error {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "demo", Image: demoApp, ImagePullPolicy: corev1.PullNever,
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
		}}},
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	podStart := time.Now()
	waitFor(ctx, t, "pod demo Running", func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "demo", metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod = p
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s, conditions %v, containers %v", p.Status.Phase, p.Status.Conditions, p.Status.ContainerStatuses)
		}
		return nil
	})
	t.Logf("pod demo Running after %s at %s", time.Since(podStart).Round(time.Second), pod.Status.PodIP)
	if !strings.HasPrefix(pod.Status.PodIP, "10.244.0.") {
		t.Errorf("pod IP %s is not in the node's pod CIDR 10.244.0.0/24", pod.Status.PodIP)
	}
	var health []byte
	waitFor(ctx, t, "GET the pod's /healthz through the API server", func() error {
		health, err = cs.CoreV1().Pods("default").ProxyGet("http", "demo", "8080", "/healthz", nil).DoRaw(ctx)
		return err
	})
	if strings.TrimSpace(string(health)) != "ok" {
		t.Errorf("the pod's /healthz through the API server: %q, want ok", health)
	}
}

// podarmorImages returns the directory of podarmor's image archives (hack/images.sh)
// and the name of the demo-app image in it (from its images.txt).
func podarmorImages(ctx context.Context, t *testing.T) (dir, demoApp string) {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "images.sh"))
	cmd.Stdout, cmd.Stderr = &stdout, testWriter{t}
	if err := cmd.Run(); err != nil {
		t.Fatalf("hack/images.sh: %v", err)
	}
	dir = strings.TrimSpace(stdout.String())
	list, err := os.ReadFile(filepath.Join(dir, "images.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(list)) {
		if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, "localhost/podarmor/demo-app:") {
			return dir, name
		}
	}
	t.Fatalf("%s/images.txt names no localhost/podarmor/demo-app image:\n%s", dir, list)
	return "", ""
}

// kubeBinaries returns the directory of version's binaries (hack/kube-binaries.sh),
// which must hold kubelet and kube-proxy besides the control plane's.
func kubeBinaries(ctx context.Context, t *testing.T, version string) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "kube-binaries.sh"), "--cluster", version)
	cmd.Stdout, cmd.Stderr = &stdout, testWriter{t}
	if err := cmd.Run(); err != nil {
		t.Fatalf("hack/kube-binaries.sh --cluster %s: %v", version, err)
	}
	bin := strings.TrimSpace(stdout.String())
	for _, b := range []string{"etcd", "kube-apiserver", "kube-scheduler", "kube-controller-manager", "kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Fatalf("hack/kube-binaries.sh %s: %v", version, err)
		}
	}
	return bin
}

// startProcess starts argv with its output in logPath; the test's cleanup stops it.
func startProcess(t *testing.T, argv []string, logPath string) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", filepath.Base(argv[0]), err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
}

// waitFor calls f every 2 s until it returns nil; the test fails with f's last error
// when ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, f func() error) {
	t.Helper()
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last: %v)", what, ctx.Err(), err)
		case <-time.After(2 * time.Second):
		}
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
