//go:build vmguest

package bpf

import (
	"testing"
)

// The tests in files tagged vmguest run inside a VM on a real kernel with BPF LSM
// (e2e/vm); the host suite builds and boots them (enforcer/bpf/vm_test.go).

func TestLoadAttachesEveryHook(t *testing.T) {
	e := load(t)
	for _, h := range e.Hooks() {
		if !h.Attached {
			t.Errorf("hook %s not attached: %s", h.Name, h.Reason)
		}
	}
}
