package e2e

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/e2e/vm"
)

// apiServerInVM is where a VM reaches the control plane: the harness forwards it to the
// kube-apiserver on the host's loopback, and nothing else.
var apiServerInVM = vm.ForwardIP + ":6443"

// TestEnforcerKubernetesMode runs the enforcer's Kubernetes mode in a VM on each kernel
// series (real BPF LSM and AppArmor), against a real kube-apiserver on the host
// (enforcer/kube/guest_test.go says what it checks).
func TestEnforcerKubernetesMode(t *testing.T) {
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
			cp := framework.StartControlPlane(t, framework.Options{Version: version})
			ns := cp.CreateNamespace(t, nil)
			kubeconfig := guestKubeconfig(t, cp.Kubeconfig)
			vm.RunGoTest(t, series, vm.GoTest{
				Binary:    bin,
				Args:      []string{"-test.run=^TestKubernetesMode$"},
				Env:       []string{"PODARMOR_TEST_KUBECONFIG=/etc/podarmor/kubeconfig", "PODARMOR_TEST_NAMESPACE=" + ns.Name},
				Files:     []vm.File{{Source: kubeconfig, Path: "/etc/podarmor/kubeconfig"}},
				Forwards:  []vm.Forward{{GuestAddr: apiServerInVM, Host: hostOf(t, cp.Config.Host)}},
				MemoryMiB: 2048,
				Timeout:   10 * time.Minute,
			})
		})
	}
}

// guestKubeconfig rewrites a kubeconfig for the VM: the server at the forwarded address,
// checked against the certificate's name for the host's loopback.
func guestKubeconfig(t testing.TB, file string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		u, err := url.Parse(c.Server)
		if err != nil {
			t.Fatal(err)
		}
		c.TLSServerName = u.Hostname()
		u.Host = apiServerInVM
		c.Server = u.String()
		if c.CertificateAuthority != "" {
			data, err := os.ReadFile(c.CertificateAuthority)
			if err != nil {
				t.Fatal(err)
			}
			c.CertificateAuthority, c.CertificateAuthorityData = "", data
		}
	}
	for _, a := range cfg.AuthInfos {
		if a.TokenFile != "" {
			data, err := os.ReadFile(a.TokenFile)
			if err != nil {
				t.Fatal(err)
			}
			a.TokenFile, a.Token = "", string(data)
		}
	}
	out := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// hostOf is the host:port of a URL.
func hostOf(t testing.TB, server string) string {
	t.Helper()
	u, err := url.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		t.Fatalf("API server %s: %v", server, err)
	}
	return u.Host
}

// BenchmarkNodeAgentInVM runs enforcer/kube's BenchmarkNodeAgent in a VM on each kernel
// series against a real kube-apiserver on the host, and reports its figures: the
// latency the OCI hook adds to a container's start (p50, p99, next to a hook that does
// nothing) and the time from a policy update to its enforcement (p50, max of 10).
func BenchmarkNodeAgentInVM(b *testing.B) {
	vm.Require(b)
	version := framework.Versions(b)[0]
	bin := vm.BuildGoTest(b, vm.GoTest{
		Package:  "../enforcer/kube",
		Tags:     []string{"netgo", "osusergo"},
		BuildEnv: []string{"CGO_ENABLED=1"},
		LDFlags:  "-extldflags -static",
	})
	const guestBin = "/podarmor/bin/kube.test"
	for _, series := range vm.Series() {
		b.Run(series, func(b *testing.B) {
			cp := framework.StartControlPlane(b, framework.Options{Version: version})
			ns := cp.CreateNamespace(b, nil)
			env := []string{"PODARMOR_TEST_KUBECONFIG=/etc/podarmor/kubeconfig", "PODARMOR_TEST_NAMESPACE=" + ns.Name}
			if v := os.Getenv("PODARMOR_BENCH_ROUNDS"); v != "" {
				env = append(env, "PODARMOR_BENCH_ROUNDS="+v)
			}
			res := vm.RunTest(b, vm.Config{
				Kernel:  vm.KernelT(b, series),
				Command: []string{guestBin, "-test.run=^$", "-test.bench=^BenchmarkNodeAgent$", "-test.benchtime=1x", "-test.timeout=25m"},
				Env:     env,
				Files: []vm.File{
					{Path: guestBin, Source: bin, Mode: 0o755},
					{Source: guestKubeconfig(b, cp.Kubeconfig), Path: "/etc/podarmor/kubeconfig"},
				},
				Forwards:  []vm.Forward{{GuestAddr: apiServerInVM, Host: hostOf(b, cp.Config.Host)}},
				MemoryMiB: 2048,
				Timeout:   30 * time.Minute,
			})
			if res.ExitCode != 0 {
				b.Fatalf("the guest benchmark failed on kernel %s: exit code %d\n%s", series, res.ExitCode, res.Output)
			}
			found := false
			for line := range strings.Lines(res.Output) {
				rest, ok := strings.CutPrefix(strings.TrimSpace(line), "nodeagent ")
				if !ok {
					continue
				}
				found = true
				b.Log(line)
				for _, kv := range strings.Fields(rest) {
					k, v, _ := strings.Cut(kv, "=")
					f, err := strconv.ParseFloat(v, 64)
					if err != nil {
						b.Fatalf("figure %q: %v", kv, err)
					}
					if k != "rounds" {
						b.ReportMetric(f, strings.ReplaceAll(k, "_", "-"))
					}
				}
			}
			if !found {
				b.Fatalf("no figures in the guest's output:\n%s", res.Output)
			}
		})
	}
}
