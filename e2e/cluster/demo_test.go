package cluster

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The attacks hack/demo.sh runs; each must be reported denied.
const attacks = 5

// testDemo runs `make demo`'s script, which brings the cluster up in c.dir. The script
// checks every step itself (each attack must fail with a permission error, the workload
// must keep serving, the enforcer must count the denials) and exits non-zero otherwise;
// the test checks its exit and its report.
func testDemo(t *testing.T, c *cluster) {
	ctx, cancel := context.WithTimeout(t.Context(), 35*time.Minute)
	defer cancel()
	var out lockedBuffer
	cmd := exec.CommandContext(ctx, filepath.Join(c.root, "hack", "demo.sh"))
	cmd.Dir = c.root
	cmd.Env = append(os.Environ(), "PODARMOR_CLUSTER_DIR="+c.dir)
	cmd.Stdout = &out
	cmd.Stderr = io.MultiWriter(&out, testLog{t})
	cmd.WaitDelay = time.Minute
	err := cmd.Run()
	report := out.String()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("hack/demo.sh failed (%v); its last lines:\n%s", err, lastLines(report, 30))
		}
		t.Fatalf("hack/demo.sh: %v", err)
	}
	if n := strings.Count(report, "-> denied"); n != attacks {
		t.Errorf("the demo reports %d attacks denied, want %d", n, attacks)
	}
	for _, want := range []string{
		"GET :8080/healthz -> ok",
		"podarmor_enforcer_decisions_total{",
		"Every attack was denied and the workload kept serving.",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the demo's report lacks %q", want)
		}
	}
	if strings.Contains(report, "FAILED") {
		t.Errorf("the demo's report has a failure:\n%s", lastLines(report, 30))
	}
}

// lockedBuffer collects the demo's output from two pipes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLog passes the demo's progress to the test log as it comes (go test -v shows it).
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
