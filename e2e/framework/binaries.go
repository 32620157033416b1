package framework

import (
	"bytes"
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
)

// VersionsEnv names the environment variable that chooses the Kubernetes versions the
// tests run against: comma-separated releases, e.g. "v1.37.2" or "v1.37.2,v1.29.15".
const VersionsEnv = "PODARMOR_KUBE_VERSIONS"

// DefaultVersions are the versions used when VersionsEnv is unset: the newest release
// the module proxy serves that builds with our Go (1.26), and the last release before
// AppArmor became a field of the pod's securityContext (1.30), whose pods carry AppArmor
// in annotations only. hack/local-cluster.sh defaults to the first.
var DefaultVersions = []string{"v1.37.2", "v1.29.15"}

// modulePath identifies the repository root while walking up from the working directory.
const modulePath = "github.com/podarmor/podarmor"

// Versions returns the Kubernetes versions to test against, from VersionsEnv or
// DefaultVersions. Run each as a subtest named by the version.
func Versions(tb testing.TB) []string {
	tb.Helper()
	versions, err := versionsFromEnv()
	if err != nil {
		tb.Fatal(err)
	}
	return versions
}

func versionsFromEnv() ([]string, error) {
	env := os.Getenv(VersionsEnv)
	if strings.TrimSpace(env) == "" {
		return DefaultVersions, nil
	}
	var versions []string
	seen := map[string]bool{}
	for v := range strings.SplitSeq(env, ",") {
		v = strings.TrimSpace(v)
		if v == "" || seen[v] {
			continue
		}
		if !versionPattern.MatchString(v) {
			return nil, fmt.Errorf("%s: %q is not a Kubernetes release such as v1.37.2", VersionsEnv, v)
		}
		seen[v] = true
		versions = append(versions, v)
	}
	return versions, nil
}

// Main is the TestMain of an e2e test package:
//
//	func TestMain(m *testing.M) { framework.Main(m) }
//
// It builds the binaries of every version in VersionsEnv before the tests run. The first
// build takes minutes per version; go test's -timeout starts only after it (inside
// m.Run), so a first `go test ./e2e/...` does not time out. With -short it builds
// nothing and StartControlPlane skips.
func Main(m *testing.M) {
	flag.Parse()
	if !testing.Short() {
		versions, err := versionsFromEnv()
		if err == nil {
			for _, v := range versions {
				if _, err = binaries(v, os.Stderr); err != nil {
					break
				}
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	removeTempDirs()
	os.Exit(code)
}

var (
	tempDirsMu sync.Mutex
	tempDirs   []string
)

// TempDir makes a directory that lives as long as the test process, for what is built
// once and shared by its tests (a binary): Main removes it after the tests, where
// t.TempDir would remove it after the first test that asked.
func TempDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	tempDirsMu.Lock()
	tempDirs = append(tempDirs, dir)
	tempDirsMu.Unlock()
	return dir, nil
}

func removeTempDirs() {
	tempDirsMu.Lock()
	defer tempDirsMu.Unlock()
	for _, dir := range tempDirs {
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
		}
	}
	tempDirs = nil
}

// binaries returns the directory holding etcd, kube-apiserver and kubectl of version,
// building them with hack/kube-binaries.sh unless they are cached. The script's progress
// goes to progress.
func binaries(version string, progress io.Writer) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	var stdout bytes.Buffer
	cmd := exec.Command(filepath.Join(root, "hack", "kube-binaries.sh"), version)
	cmd.Stdout = &stdout
	cmd.Stderr = progress
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/kube-binaries.sh %s: %w", version, err)
	}
	dir := strings.TrimSpace(stdout.String())
	if dir == "" {
		return "", fmt.Errorf("hack/kube-binaries.sh %s printed no directory", version)
	}
	return dir, nil
}

// repoRoot finds the repository by walking up from the working directory (go test runs
// in the package's directory) to podarmor's go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", modulePath)
		}
		dir = parent
	}
}
