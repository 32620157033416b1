package seccomp

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSyscallTableIsGenerated regenerates the table from this machine's headers and
// compares everything but the header comment, which names the headers' patch release.
func TestSyscallTableIsGenerated(t *testing.T) {
	for _, need := range []string{"/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm-generic/unistd.h"} {
		if _, err := os.Stat(need); err != nil {
			skipUnlessCI(t, "kernel headers are not installed (linux-libc-dev): %v", err)
		}
	}
	if _, err := exec.LookPath("cpp"); err != nil {
		skipUnlessCI(t, "cpp is not installed (gcc): %v", err)
	}
	out := filepath.Join(t.TempDir(), "table.go")
	cmd := exec.Command("go", "run", "gen_syscalls.go", "-o", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run gen_syscalls.go: %v\n%s", err, msg)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("syscalls_table.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body(got), body(want)) {
		t.Errorf("syscalls_table.go is not what gen_syscalls.go makes of this machine's headers; run go generate")
	}
}

// body drops a Go file's comment lines.
func body(src []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(src, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("//")) {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// skipUnlessCI skips a test that needs a tool the machine lacks; under CI (make test sets
// CI=true after hack/deps.sh installed the tools) a missing tool is a failure instead.
func skipUnlessCI(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}
