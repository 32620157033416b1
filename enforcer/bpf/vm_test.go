//go:build !vmguest

package bpf

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
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
				args = []string{"-test.skip", "^(" + strings.Join(sixOneSkips, "|") + ")$"}
			}
			vm.RunGoTest(t, series, vm.GoTest{Binary: bin, Args: args, Timeout: 65 * time.Minute, MemoryMiB: 2048, Nice: 10,
				// the attacks' containers run under the cluster's default policy
				Files: []vm.File{{Path: "/podarmor/default-policy.yaml", Source: "../../deploy/policies/default.yaml", Mode: 0o644}}})
		})
	}
}

// sixOneSkips are the guest tests 6.1 leaves to 6.12: they exercise the enforcer's
// process (its start, its adoption of the pinned state, its hook server, runc) rather
// than what differs between kernels, which the other tests check on both: the hooks and
// helpers the object attaches and calls, the verifier's verdict, every rule kind, the
// catalog, the attacks, events, counters and maps. Together they took 25 minutes of the
// 6.12 suite's 40 in make test, the VM niced next to the local cluster's.
var sixOneSkips = []string{
	"TestEnforcerKilledInALoop", "TestEnforcerRestartedWhileContainersAreCreated",
	"TestAdoptionCleansLeftRuleBodies", "TestHookBeforeFirstInstruction", "TestEnforcerReadsNamespaceLinks",
}

// TestSixOneSkipsNameGuestTests keeps sixOneSkips true to the guest tests: a renamed or
// removed test would otherwise leave a name that skips nothing, and the renamed test
// would run on 6.1 unnoticed.
func TestSixOneSkipsNameGuestTests(t *testing.T) {
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	guest := map[string]bool{}
	fset := token.NewFileSet()
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(src, []byte("//go:build vmguest\n")) {
			continue
		}
		file, err := parser.ParseFile(fset, f, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil && strings.HasPrefix(fn.Name.Name, "Test") {
				guest[fn.Name.Name] = true
			}
		}
	}
	if len(sixOneSkips) == 0 || len(guest) == 0 {
		t.Fatalf("%d names in sixOneSkips, %d guest tests found", len(sixOneSkips), len(guest))
	}
	for _, n := range sixOneSkips {
		if !guest[n] {
			t.Errorf("sixOneSkips names %s, which is no guest test of this package", n)
		}
	}
}
