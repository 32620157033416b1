package install

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podarmor/podarmor/deploy/helm"
	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// TestEnforcerRunsWithTheChartsRBAC installs the manifest and runs podarmor-enforcer
// kubernetes on the host as the chart's service account, with a token bound to a pod on
// a node as kubelet would mount it, and the DaemonSet's arguments. This host's kernel
// runs neither BPF LSM nor AppArmor, so those enforcers are reported missing; what is
// checked is the API side: the enforcer lists and watches the policies and its node's
// pods, reads the kubernetes Service, compiles the default policy, becomes ready, and
// writes its node's ArmorNodeStatus owned by the Node, all with exactly the chart's
// permissions (and, from 1.30, past the admission policy that limits it to its node).
func TestEnforcerRunsWithTheChartsRBAC(t *testing.T) {
	enforcerBinary(t) // built before the subtests' clocks start
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			cp := framework.StartControlPlane(t, framework.Options{Version: version})
			manifest := installManifest(t, cp)

			const node = "node-a"
			n, p, _ := startEnforcer(t, cp, manifest, node)

			// Its node's report, owned by the Node, with the default policy in it.
			status := &v1alpha1.ArmorNodeStatus{}
			cp.WaitForObject(t, time.Minute, client.ObjectKey{Name: node}, status, func() bool {
				for _, pol := range status.Status.Policies {
					if pol.Kind == "ClusterArmorPolicy" && pol.Name == "default" {
						return len(status.OwnerReferences) == 1 && status.OwnerReferences[0].UID == n.UID
					}
				}
				return false
			})
			// The default policy compiled and its seccomp part (RuntimeDefault) applied;
			// this kernel lacks the other two.
			for _, pol := range status.Status.Policies {
				if pol.Name != "default" {
					continue
				}
				states := map[v1alpha1.Enforcer]v1alpha1.LoadState{}
				for _, e := range pol.Enforcers {
					states[e.Enforcer] = e.State
				}
				want := map[v1alpha1.Enforcer]v1alpha1.LoadState{
					v1alpha1.EnforcerSeccomp: v1alpha1.LoadLoaded, v1alpha1.EnforcerBPF: v1alpha1.LoadUnsupported,
					v1alpha1.EnforcerAppArmor: v1alpha1.LoadUnsupported,
				}
				if !reflect.DeepEqual(states, want) {
					t.Errorf("the default policy on %s: %v, want %v", node, states, want)
				}
			}
			// Ready, and saying what this node cannot enforce.
			for _, want := range []string{"ok\n", "\nBPF LSM unavailable: ", "\nAppArmor unavailable: "} {
				if !strings.Contains(p.readyz, want) {
					t.Errorf("/readyz answered %q, want it to contain %q", p.readyz, want)
				}
			}
			if log := p.output(); strings.Contains(log, "forbidden") {
				t.Errorf("the enforcer was refused something by the API server:\n%s", grepLines(log, "forbidden"))
			}
		})
	}
}

// startEnforcer runs podarmor-enforcer kubernetes on the host as the chart's service
// account, with a token bound to a pod on node as kubelet would mount it, and the
// DaemonSet's arguments (the node's paths moved into a scratch directory, the listener
// on loopback); it waits for /readyz and returns the Node, the process and its hook
// socket.
func startEnforcer(t *testing.T, cp *framework.ControlPlane, manifest []byte, node string) (*corev1.Node, *process, string) {
	t.Helper()
	bin := enforcerBinary(t)
	var args []string
	for _, doc := range helm.Documents(manifest) {
		o := parse(t, doc)
		if o.u.GetKind() == "DaemonSet" {
			var ds struct {
				Spec struct{ Template struct{ Spec corev1.PodSpec } }
			}
			mustUnmarshal(t, o.data, &ds)
			args = ds.Spec.Template.Spec.Containers[0].Args
		}
	}
	if len(args) == 0 {
		t.Fatal("the manifest has no DaemonSet arguments")
	}

	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
	if err := cp.Client.Create(t.Context(), n); err != nil {
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
	kubeconfig := tokenKubeconfig(t, cp, tok.Status.Token)

	// The DaemonSet's arguments, with the node's paths moved into a scratch
	// directory and the listener on loopback.
	dir := t.TempDir()
	port := freePorts(t, 1)[0]
	full := []string{"kubernetes"}
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "--seccomp-root="), strings.HasPrefix(a, "--apparmor-dir="),
			strings.HasPrefix(a, "--nri-hook-path="), strings.HasPrefix(a, "--nri-socket="),
			strings.HasPrefix(a, "--listen="), strings.HasPrefix(a, "--log-format="):
			continue // replaced below
		}
		full = append(full, strings.ReplaceAll(a, "$(NODE_NAME)", node))
	}
	full = append(full,
		"--kubeconfig="+kubeconfig,
		"--listen=127.0.0.1:"+strconv.Itoa(port),
		"--socket="+filepath.Join(dir, "enforcer.sock"),
		"--unprotected-dir="+filepath.Join(dir, "unprotected"),
		"--pin-dir="+filepath.Join(dir, "bpf"),
		"--seccomp-root="+filepath.Join(dir, "seccomp"),
		"--apparmor-dir="+filepath.Join(dir, "apparmor"),
		"--events="+filepath.Join(dir, "events.json"),
		"--log-format=text",
	)
	for _, d := range []string{"unprotected", "bpf", "seccomp", "apparmor"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	p := startProcess(t, bin, full)

	framework.WaitFor(t, 2*time.Minute, "podarmor-enforcer /readyz", func(ctx context.Context) (bool, error) {
		if err := p.exited(); err != nil {
			return false, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/readyz", nil)
		if err != nil {
			return false, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return false, nil
		}
		p.readyz = string(body)
		return resp.StatusCode == http.StatusOK, nil
	})

	return n, p, filepath.Join(dir, "enforcer.sock")
}

// installManifest installs the manifest the user of cp's version applies, as
// docs/install.md says, and returns it.
func installManifest(t *testing.T, cp *framework.ControlPlane) []byte {
	t.Helper()
	removePodarmorCRDs(t, cp)
	manifest := manifestFor(t, cp.Version)
	file := filepath.Join(t.TempDir(), "podarmor.yaml")
	if err := os.WriteFile(file, manifest, 0o644); err != nil {
		t.Fatal(err)
	}
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
	}
	return manifest
}

// tokenKubeconfig writes a kubeconfig that authenticates with token.
func tokenKubeconfig(t *testing.T, cp *framework.ControlPlane, token string) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: cp.Config.Host, CertificateAuthorityData: cp.Config.CAData, CertificateAuthority: cp.Config.CAFile}
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc.CurrentContext = "c"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

var (
	enforcerBuild sync.Once
	enforcerBin   string
	enforcerErr   error
)

// enforcerBinary builds podarmor-enforcer once per test process. It links libbpf
// through cgo: the build takes hack/libbpf.sh's settings.
func enforcerBinary(t *testing.T) string {
	t.Helper()
	enforcerBuild.Do(func() {
		root := repoRoot(t)
		env := os.Environ()
		out, err := exec.Command(filepath.Join(root, "hack/libbpf.sh")).Output()
		if err != nil {
			enforcerErr = fmt.Errorf("hack/libbpf.sh: %w", err)
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "export ")
			if !ok {
				continue
			}
			k, v, _ := strings.Cut(line, "=")
			env = append(env, k+"="+strings.Trim(v, "'"))
		}
		dir, err := framework.TempDir("podarmor-install-e2e")
		if err != nil {
			enforcerErr = err
			return
		}
		enforcerBin = filepath.Join(dir, "podarmor-enforcer")
		cmd := exec.Command("go", "build", "-o", enforcerBin, "./enforcer/cmd/podarmor-enforcer")
		cmd.Dir, cmd.Env = root, env
		if out, err := cmd.CombinedOutput(); err != nil {
			enforcerErr = fmt.Errorf("go build podarmor-enforcer: %v\n%s", err, out)
		}
	})
	if enforcerErr != nil {
		t.Fatal(enforcerErr)
	}
	return enforcerBin
}

// process is a binary under test; its output is kept and shown when the test fails.
type process struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan error
	err  error
	// readyz is the body of the enforcer's last /readyz answer (startEnforcer).
	readyz string
}

func startProcess(t *testing.T, bin string, args []string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...), done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = lockedWriter{&p.mu, &p.out}, lockedWriter{&p.mu, &p.out}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.exited() == nil {
			_ = p.cmd.Process.Signal(os.Interrupt)
			select {
			case p.err = <-p.done:
			case <-time.After(15 * time.Second):
				_ = p.cmd.Process.Kill()
				p.err = <-p.done
			}
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(bin), p.output())
		}
	})
	return p
}

// exited returns an error once the process has ended.
func (p *process) exited() error {
	if p.err != nil {
		return p.err
	}
	select {
	case err := <-p.done:
		if err == nil {
			err = fmt.Errorf("exited")
		}
		p.err = fmt.Errorf("%s: %w", filepath.Base(p.cmd.Path), err)
		return p.err
	default:
		return nil
	}
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
