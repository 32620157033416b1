package node

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/podarmor/podarmor/e2e/vm"
)

// TestMain builds the node image before any test starts, so that a fresh machine's
// long build does not count against go test's -timeout. The tests call the same script
// again and find it cached. (The node joining a control plane is e2e/cluster's: its
// TestCluster brings up the whole cluster.)
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
		{"node-image.sh"},
	} {
		cmd := exec.Command(filepath.Join(root, "hack", argv[0]), argv[1:]...)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("hack/%s: %w", argv[0], err)
		}
	}
	return nil
}
