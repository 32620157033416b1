// Package e2e holds podarmor's end-to-end tests: Go tests against a real kube-apiserver
// (and, with later issues, real kernels in VMs). README.md says how to run them;
// skeleton_test.go is the test to copy.
package e2e

import (
	"testing"

	"github.com/podarmor/podarmor/e2e/framework"
)

// TestMain builds the control-plane binaries of every version in PODARMOR_KUBE_VERSIONS
// before any test runs. A new e2e package needs the same one line.
func TestMain(m *testing.M) { framework.Main(m) }
