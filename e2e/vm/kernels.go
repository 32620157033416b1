package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// The kernel series the VM boots: Debian's stable kernels, which both ship BPF LSM,
// AppArmor and BTF built in.
const (
	// Series61 is bookworm's kernel (Debian 12).
	Series61 = "6.1"
	// Series612 is trixie's kernel (Debian 13).
	Series612 = "6.12"
)

// Series returns every kernel series, oldest first. Tests that prove something on real
// kernels run once per series, as subtests named by it.
func Series() []string { return []string{Series61, Series612} }

// modulePath identifies the repository root while walking up from the working directory.
const modulePath = "github.com/podarmor/podarmor"

// Kernels returns the kernel image of every series, keyed by series: the vmlinux ELF,
// with the bzImage (vmlinuz-*) and its config-* beside it. They come from
// hack/vm-kernels.sh, which downloads Debian's kernel packages once (about 30 s) and then
// answers from ~/.cache/podarmor/kernels at once; its progress goes to stderr.
func Kernels(ctx context.Context) (map[string]string, error) {
	return kernels(ctx, Series()...)
}

// Kernel returns the kernel image (vmlinux) of one series, e.g. Series612.
func Kernel(ctx context.Context, series string) (string, error) {
	if !slices.Contains(Series(), series) {
		return "", fmt.Errorf("kernel series %q: not one of %s", series, strings.Join(Series(), ", "))
	}
	paths, err := kernels(ctx, series)
	if err != nil {
		return "", err
	}
	return paths[series], nil
}

func kernels(ctx context.Context, series ...string) (map[string]string, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "vm-kernels.sh"), series...)
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("hack/vm-kernels.sh %s: %w", strings.Join(series, " "), err)
	}
	paths := map[string]string{}
	for line := range strings.Lines(stdout.String()) {
		s, path, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || !filepath.IsAbs(path) {
			return nil, fmt.Errorf("hack/vm-kernels.sh printed %q, want \"SERIES /path/to/vmlinux\"", line)
		}
		paths[s] = path
	}
	for _, s := range series {
		if paths[s] == "" {
			return nil, fmt.Errorf("hack/vm-kernels.sh printed no kernel of series %s", s)
		}
	}
	return paths, nil
}

// repoRoot finds the repository by walking up from the working directory (go test runs
// in the package's directory) to podarmor's go.mod, or else from this source file's
// directory, which a binary built from a checkout (hack/vm-run.sh) still knows.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	if root, err := findRoot(wd); err == nil {
		return root, nil
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		if root, err := findRoot(filepath.Dir(file)); err == nil {
			return root, nil
		}
	}
	return "", fmt.Errorf("no go.mod of %s above the working directory %s", modulePath, wd)
}

func findRoot(dir string) (string, error) {
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}
