// Package cluster runs podarmor end to end on the local cluster: `make demo`'s script,
// hack/demo.sh, against a cluster of its own (hack/local-cluster.sh: a control plane on
// loopback and a kubelet+containerd node in a QEMU VM), with podarmor installed by Helm.
// The script checks every step itself (each attack must fail with a permission error,
// the workload must keep serving, the enforcer must count the denials) and exits
// non-zero otherwise; the test runs it, checks its exit and its report, and tears the
// cluster down.
package cluster

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/e2e/vm"
)

// The attacks hack/demo.sh runs; each must be reported denied.
const attacks = 5

// TestMain builds what the cluster runs before the test clock starts: on a fresh machine
// the Kubernetes binaries, the node image, helm and podarmor's images take long, and
// that must not count against go test's -timeout.
func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Short() && (vm.ToolsMissing() == nil || os.Getenv("CI") != "") {
		if err := prebuild(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e/cluster:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func prebuild() error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	for _, argv := range [][]string{
		{"deps.sh", "node"},
		{"kube-binaries.sh", "--cluster", framework.DefaultVersions[0]},
		{"node-image.sh"},
		{"images.sh"},
		{"helm.sh"},
	} {
		cmd := exec.Command(filepath.Join(root, "hack", argv[0]), argv[1:]...)
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("hack/%s: %w", strings.Join(argv, " "), err)
		}
	}
	return nil
}

func TestDemo(t *testing.T) {
	vm.Require(t)
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 35*time.Minute)
	defer cancel()

	// The API server's egress socket lives in the cluster's directory, and a unix
	// socket's path is limited to 107 bytes: a short directory, not t.TempDir().
	dir, err := os.MkdirTemp("", "podarmor-demo-")
	if err != nil {
		t.Fatal(err)
	}
	clusterDir := filepath.Join(dir, "cluster")
	env := append(os.Environ(), "PODARMOR_CLUSTER_DIR="+clusterDir)
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"kube-apiserver.log", "node-vm.log", "console.log", "logs/journal.log"} {
				t.Logf("the end of %s:\n%s", f, tail(filepath.Join(clusterDir, f), 60))
			}
		}
		down := exec.Command(filepath.Join(root, "hack", "local-cluster.sh"), "down")
		down.Env = env
		if out, err := down.CombinedOutput(); err != nil {
			t.Errorf("hack/local-cluster.sh down: %v\n%s", err, out)
		}
		os.RemoveAll(dir)
	})

	var out lockedBuffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "demo.sh"))
	cmd.Dir, cmd.Env = root, env
	cmd.Stdout = &out
	cmd.Stderr = io.MultiWriter(&out, testLog{t})
	cmd.WaitDelay = time.Minute
	err = cmd.Run()
	report := out.String()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("hack/demo.sh failed (%v); its last lines:\n%s", err, lastLines(report, 30))
		}
		t.Fatalf("hack/demo.sh: %v", err)
	}
	if n := strings.Count(report, "-> denied"); n != attacks {
		t.Errorf("the demo reports %d attacks denied, want %d", n, attacks)
	}
	for _, want := range []string{
		"GET :8080/healthz -> ok",
		"podarmor_enforcer_decisions_total{",
		"Every attack was denied and the workload kept serving.",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the demo's report lacks %q", want)
		}
	}
	if strings.Contains(report, "FAILED") {
		t.Errorf("the demo's report has a failure:\n%s", lastLines(report, 30))
	}
}

// lockedBuffer collects the demo's output from two pipes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLog passes the demo's progress to the test log as it comes (go test -v shows it).
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
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
