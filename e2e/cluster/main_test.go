package cluster

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/e2e/vm"
)

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
