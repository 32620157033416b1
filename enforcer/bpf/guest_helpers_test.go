//go:build vmguest

package bpf

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

var pins atomic.Int32

// load loads the enforcer into a fresh pin directory and unloads it at the end of the test.
func load(t *testing.T) *Enforcer {
	t.Helper()
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("podarmor-test-%d", pins.Add(1)))
	e, err := Load(Options{PinDir: dir})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Unpin(); err != nil {
			t.Errorf("Unpin: %v", err)
		}
		e.Close()
		os.RemoveAll(dir)
	})
	return e
}
