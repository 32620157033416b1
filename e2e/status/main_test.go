// Package status holds the end-to-end tests of policy status: the enforcer's node
// status writer (enforcer/nodestatus), the webhook leader's aggregation into policy
// status (webhook/policystatus) and the webhook's Ready gate on it, against a real
// kube-apiserver. docs/status.md describes what they check.
package status

import (
	"testing"

	"github.com/podarmor/podarmor/e2e/framework"
)

// TestMain builds the control-plane binaries of every version in PODARMOR_KUBE_VERSIONS
// before any test runs.
func TestMain(m *testing.M) { framework.Main(m) }
