package node

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/e2e/vm"
)

// TestMain builds what the node tests boot and run before any test starts, so that a
// fresh machine's long builds (the cluster's Kubernetes binaries, the node image,
// podarmor's images) do not count against go test's -timeout. The tests call the same
// scripts again and find everything cached.
func TestMain(m *testing.M) {
	flag.Parse()
	// Without the VM's tools the tests skip (vm.Require), outside CI; nothing to build.
	if !testing.Short() && (vm.ToolsMissing() == nil || os.Getenv("CI") != "") {
		if err := prebuild(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e/node:", err)
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
		{"kube-binaries.sh", "--cluster", framework.DefaultVersions[0]},
		{"node-image.sh"},
		{"images.sh"},
	} {
		cmd := exec.Command(filepath.Join(root, "hack", argv[0]), argv[1:]...)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("hack/%s: %w", argv[0], err)
		}
	}
	return nil
}
