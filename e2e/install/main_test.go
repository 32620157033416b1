// Package install tests podarmor's install artifacts against real kube-apiservers: every
// object the Helm chart renders, with several value sets, is validated by the API server
// (a strict dry-run create), and the single-file manifest deploy/podarmor.yaml is applied
// with kubectl and removed again as `helm uninstall` would, leaving no webhook
// configuration behind. docs/install.md describes the artifacts.
package install

import (
	"testing"

	"github.com/podarmor/podarmor/e2e/framework"
)

// TestMain builds the control-plane binaries of every version in PODARMOR_KUBE_VERSIONS
// before any test runs.
func TestMain(m *testing.M) { framework.Main(m) }
