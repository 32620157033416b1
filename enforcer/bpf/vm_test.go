//go:build !vmguest

package bpf

import (
	"testing"
	"time"

	"github.com/podarmor/podarmor/e2e/vm"
)

// TestInVM runs this package's guest tests (files tagged vmguest) inside a VM on each
// kernel series: loading BPF LSM programs needs a kernel with BPF in its LSM list, which
// the host's is not. The binary is static (libbpf through cgo, see hack/libbpf.sh).
// The suite is long and has no deadline of its own to meet, so its two VMs run niced:
// in make test they share two cores with the local cluster (e2e/cluster), whose
// kubelet, probes and rollouts do.
func TestInVM(t *testing.T) {
	vm.Require(t)
	bin := vm.BuildGoTest(t, vm.GoTest{
		Package:  ".",
		Tags:     []string{"netgo", "osusergo"},
		BuildEnv: []string{"CGO_ENABLED=1"},
		LDFlags:  "-extldflags -static",
	})
	for _, series := range vm.Series() {
		t.Run(series, func(t *testing.T) {
			t.Parallel()
			var args []string
			if series == "6.1" {
				// The enforcer-process faults (killed in a loop, restarted while
				// containers are created) exercise the enforcer's start and the
				// adoption of its pinned state, which other tests check on both
				// kernels; at 10-13 minutes a kernel under emulation they run on
				// 6.12 only.
				args = []string{"-test.skip", "^(TestEnforcerKilledInALoop|TestEnforcerRestartedWhileContainersAreCreated)$"}
			}
			vm.RunGoTest(t, series, vm.GoTest{Binary: bin, Args: args, Timeout: 55 * time.Minute, MemoryMiB: 2048, Nice: 10,
				// the attacks' containers run under the cluster's default policy
				Files: []vm.File{{Path: "/podarmor/default-policy.yaml", Source: "../../deploy/policies/default.yaml", Mode: 0o644}}})
		})
	}
}
