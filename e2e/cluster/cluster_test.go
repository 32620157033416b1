// Package cluster runs podarmor end to end on the local cluster (hack/local-cluster.sh:
// a control plane on loopback and a kubelet+containerd node in a QEMU VM), with podarmor
// installed by Helm. A cluster boot costs minutes of CPU under TCG, so the package brings
// up one cluster and runs everything on it, in order, as subtests of TestCluster:
//
//  1. demo: `make demo`'s script, hack/demo.sh, which brings the cluster up, installs
//     podarmor, deploys deploy/examples/demo.yaml and runs five attacks;
//  2. the tests of what the demo leaves running (a policy change reaching the running
//     pod, an ephemeral container, the three enforcers in one pod, the enforcer pod
//     deleted, helm upgrade, containerd restarted, the node rebooted), each leaving the
//     cluster as it found it;
//  3. helm uninstall, last, since it removes podarmor.
//
// The cluster is torn down at the end whatever happened. When a step fails, the
// following ones still run unless they need what failed (the demo failing ends the
// test). PODARMOR_E2E_CLUSTER=DIR runs the tests after the demo against a cluster that
// `make demo` left up in DIR (PODARMOR_CLUSTER_DIR), and leaves it up: for developing
// the tests by hand, never in CI.
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podarmor/podarmor/e2e/vm"
)

// Where the demo runs (deploy/examples/demo.yaml) and what it creates.
const (
	demoNamespace = "demo"
	demoPolicy    = "demo-app"
	demoProfile   = "ap.demo.demo-app"
	demoImage     = "localhost/podarmor/demo-app:0.1.0"
	releaseNS     = "podarmor-system"
)

// cluster is the running local cluster: its directory and the tools that talk to it.
type cluster struct {
	root       string // the repository
	dir        string // PODARMOR_CLUSTER_DIR
	kubeconfig string
	kubectlBin string
	helmBin    string
}

func TestCluster(t *testing.T) {
	vm.Require(t)
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{root: root}
	if dir := os.Getenv("PODARMOR_E2E_CLUSTER"); dir != "" {
		c.dir = dir
		t.Logf("PODARMOR_E2E_CLUSTER: using the cluster in %s, left up at the end", dir)
	} else {
		// The API server's egress socket lives in the cluster's directory, and a unix
		// socket's path is limited to 107 bytes: a short directory, not t.TempDir().
		tmp, err := os.MkdirTemp("", "podarmor-demo-")
		if err != nil {
			t.Fatal(err)
		}
		c.dir = filepath.Join(tmp, "cluster")
		t.Cleanup(func() {
			if t.Failed() && c.kubectlBin != "" {
				for _, args := range [][]string{
					{"get", "pods", "-A", "-o", "wide"},
					{"get", "events", "-A", "--sort-by=.lastTimestamp"},
				} {
					t.Logf("kubectl %s (the end):\n%s", strings.Join(args, " "), lastLines(c.output(args...), 60))
				}
			}
			if t.Failed() {
				for _, f := range []string{"kube-apiserver.log", "node-vm.log", "console.log", "logs/journal.log"} {
					t.Logf("the end of %s:\n%s", f, tail(filepath.Join(c.dir, f), 60))
				}
			}
			down := exec.Command(filepath.Join(root, "hack", "local-cluster.sh"), "down")
			down.Env = append(os.Environ(), "PODARMOR_CLUSTER_DIR="+c.dir)
			if out, err := down.CombinedOutput(); err != nil {
				t.Errorf("hack/local-cluster.sh down: %v\n%s", err, out)
			}
			os.RemoveAll(tmp)
		})
		if !t.Run("demo", func(t *testing.T) { testDemo(t, c) }) {
			t.Fatal("the demo failed; the tests that need its cluster do not run")
		}
	}
	if err := c.tools(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	t.Run("policy-change", func(t *testing.T) { testPolicyChange(t, c) })
	t.Run("ephemeral-container", func(t *testing.T) { testEphemeralContainer(t, c) })
	t.Run("three-enforcers", func(t *testing.T) { testThreeEnforcers(t, c) })
	t.Run("helm-upgrade", func(t *testing.T) { testHelmUpgrade(t, c) })
	t.Run("containerd-restart", func(t *testing.T) { testContainerdRestart(t, c) })
	t.Run("node-reboot", func(t *testing.T) { testNodeReboot(t, c) })
	t.Run("helm-uninstall", func(t *testing.T) { testHelmUninstall(t, c) })
	t.Logf("the tests after the demo took %s", time.Since(start).Round(time.Second))
}

// tools finds the cluster's kubeconfig, and the kubectl and helm that the demo used.
func (c *cluster) tools() error {
	c.kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	if _, err := os.Stat(c.kubeconfig); err != nil {
		return fmt.Errorf("the cluster's kubeconfig: %w", err)
	}
	version, err := os.ReadFile(filepath.Join(c.dir, "version"))
	if err != nil {
		return fmt.Errorf("the cluster's Kubernetes version: %w", err)
	}
	bin, err := c.hack("kube-binaries.sh", "--cluster", strings.TrimSpace(string(version)))
	if err != nil {
		return err
	}
	c.kubectlBin = filepath.Join(bin, "kubectl")
	c.helmBin, err = c.hack("helm.sh")
	return err
}

// hack runs a script of hack/ that prints one path, and returns the path.
func (c *cluster) hack(script string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(c.root, "hack", script), args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/%s %s: %v\n%s", script, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// result is what a command printed and how it exited.
type result struct {
	out  string // stdout and stderr, interleaved
	code int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d: %s", r.code, strings.TrimSpace(r.out))
}

// run runs bin (kubectl or helm) against the cluster with a time limit; a command that
// could not run or ran out of time fails the test, any exit code is returned. Its
// context is not the test's, which ends before the test's cleanups run, and cleanups
// use run too.
func (c *cluster) run(t *testing.T, timeout time.Duration, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: no answer in %s; output: %s", filepath.Base(bin), strings.Join(args, " "), timeout, out.String())
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return result{out: out.String()}
	case errors.As(err, &exit):
		return result{out: out.String(), code: exit.ExitCode()}
	default:
		t.Fatalf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
		return result{}
	}
}

// output runs kubectl for a failure's report: what it printed, or why it could not.
func (c *cluster) output(args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.kubectlBin, append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s(%v)", out, err)
	}
	return string(out)
}

// kubectl runs kubectl and returns what it printed; it must succeed.
func (c *cluster) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	r := c.run(t, 3*time.Minute, c.kubectlBin, args...)
	if r.code != 0 {
		t.Fatalf("kubectl %s: %s", strings.Join(args, " "), r)
	}
	return r.out
}

// apply applies a manifest.
func (c *cluster) apply(t *testing.T, manifest string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl apply:\n%s", c.kubectl(t, "apply", "-f", f))
}

// exec runs a command in a container of a pod of the demo namespace and returns its
// output and exit code (kubectl exec exits with the command's code).
func (c *cluster) exec(t *testing.T, pod, container string, argv ...string) result {
	t.Helper()
	args := append([]string{"-n", demoNamespace, "exec", pod, "-c", container, "--"}, argv...)
	return c.run(t, 3*time.Minute, c.kubectlBin, args...)
}

// getJSON decodes `kubectl get -o json` of ARGS into v.
func (c *cluster) getJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := c.kubectl(t, append([]string{"get", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("kubectl get %s: %v", strings.Join(args, " "), err)
	}
}

// waitFor polls cond every two seconds until it holds, and fails the test after timeout
// with the last state cond described.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ok, state := cond()
		if ok {
			t.Logf("%s after %s", what, time.Since(start).Round(100*time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last: %s", timeout, what, state)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("waiting for %s: %v", what, t.Context().Err())
		case <-time.After(2 * time.Second):
		}
	}
}

func tail(file string, n int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	return lastLines(string(data), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// repoRoot walks up from the working directory (go test runs in the package's) to the
// module's root.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.HasPrefix(string(data), "module github.com/podarmor/podarmor\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the podarmor module")
		}
		dir = parent
	}
}
