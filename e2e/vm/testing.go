package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// GuestTag is the build tag of tests that run only inside the VM. A file holding such
// tests starts with
//
//	//go:build vmguest
//
// so that the host's `go test ./...` never compiles them (and never has to skip them);
// RunGoTest builds them with the tag and runs them in the guest.
const GuestTag = "vmguest"

// RunTest boots a VM for t as Run does, with the context and deadline of t. It skips t
// where the host lacks QEMU or the guest's tools (a failure instead when the CI
// environment variable is set) and under -short, and fails t when the VM could not run
// cfg.Command to its end. The command's exit code is left to the caller. The command's
// output goes to t.Output() as it arrives unless cfg.Output is set; when t fails, the whole
// console is written to a file in t.ArtifactDir() (kept with go test -artifacts).
func RunTest(t testing.TB, cfg Config) Result {
	t.Helper()
	Require(t)
	ctx := t.Context()
	if deadline, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := deadline.Deadline(); ok {
			// Leave time to report before go test's own timeout panics.
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, d.Add(-10*time.Second))
			defer cancel()
		}
	}
	if cfg.Output == nil {
		cfg.Output = t.Output()
	}
	res, err := Run(ctx, cfg)
	t.Cleanup(func() {
		if t.Failed() && res.Console != "" {
			saveConsole(t, res.Console)
		}
	})
	if err != nil {
		t.Fatalf("vm %s: %v", strings.Join(cfg.Command, " "), err)
	}
	return res
}

// Require skips t where the VM cannot run: under -short, or when a host tool is missing
// (hack/deps.sh vm installs them). With the CI environment variable set, a missing tool
// fails t instead, since CI installed them.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM; skipped with -short")
	}
	if err := ToolsMissing(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set, and the VM cannot run: %v", err)
		}
		t.Skipf("the VM cannot run (CI fails here instead of skipping): %v", err)
	}
}

// KernelT returns the kernel image of series for t, fetching it on first use; t fails
// if that does not work.
func KernelT(t testing.TB, series string) string {
	t.Helper()
	k, err := Kernel(t.Context(), series)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func saveConsole(t testing.TB, console string) {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	file := filepath.Join(t.ArtifactDir(), name+"-console.log")
	if err := os.WriteFile(file, []byte(console), 0o644); err != nil {
		t.Logf("save the VM console: %v", err)
		return
	}
	t.Logf("the VM console is in %s (kept with go test -artifacts)", file)
}

// GoTest is a Go test package to build for the guest and run there.
type GoTest struct {
	// Package is the package to test, as `go test` takes it in the caller's working
	// directory (go test runs a test in its package's directory): "./internal/guest",
	// or an import path. Required unless Binary is set.
	Package string
	// Binary is a test binary built already (BuildGoTest), to run instead of building
	// Package again; Package, if set too, still names the testdata to copy.
	Binary string
	// Tags are build tags besides GuestTag, which is always set.
	Tags []string
	// BuildEnv is added to the environment of `go test -c`, e.g. "CGO_ENABLED=1" and
	// CGO_CFLAGS/CGO_LDFLAGS for a cgo package. Without it CGO_ENABLED=0: a pure Go
	// binary is static. A dynamic binary runs too; its libraries are copied along.
	BuildEnv []string
	// LDFlags are passed as -ldflags, e.g. "-extldflags -static" for a static cgo build.
	LDFlags string
	// Args are the test binary's arguments after -test.v, e.g. "-test.run=TestX".
	// Without -test.timeout one is added, shorter than the VM's timeout, so a stuck
	// test prints its goroutines before the VM is killed.
	Args []string
	// Env holds KEY=VALUE pairs for the test binary's environment in the guest.
	Env []string
	// Files and Dirs go into the guest besides the binary and the testdata.
	Files []File
	Dirs  []string
	// MemoryMiB, Timeout, CPUs, Bench, Nice, KernelArgs and Forwards are those of
	// Config.
	MemoryMiB  int
	Timeout    time.Duration
	CPUs       int
	Bench      bool
	Nice       int
	KernelArgs []string
	Forwards   []Forward
}

// guestPackageDir is where a test's package directory is in the guest: its testdata is
// copied there and the test runs there, as go test runs it in the package's directory.
const guestPackageDir = "/podarmor/pkg"

// RunGoTest builds a Go test package with the vmguest tag (BuildGoTest), boots a VM on
// the kernel of series with it and the package's testdata, runs it with -test.v and
// gt.Args, and streams its output to t.Output(). t fails unless the guest's test binary
// exits 0. Call it once per series, from a subtest named by the series:
//
//	for _, series := range vm.Series() {
//		t.Run(series, func(t *testing.T) {
//			vm.RunGoTest(t, series, vm.GoTest{Package: "./internal/guest"})
//		})
//	}
func RunGoTest(t *testing.T, series string, gt GoTest) Result {
	t.Helper()
	Require(t)
	kernel := KernelT(t, series)
	binary := gt.Binary
	if binary == "" {
		binary = BuildGoTest(t, gt)
	}
	var files []File
	if gt.Package != "" {
		dir, err := packageDir(gt.Package)
		if err != nil {
			t.Fatal(err)
		}
		if info, err := os.Stat(filepath.Join(dir, "testdata")); err == nil && info.IsDir() {
			files, err = treeFiles(filepath.Join(dir, "testdata"), path.Join(guestPackageDir, "testdata"))
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	guestBinary := path.Join("/podarmor/bin", filepath.Base(binary))
	files = append(files, File{Path: guestBinary, Source: binary, Mode: 0o755})

	timeout := gt.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	args := []string{guestBinary, "-test.v"}
	if !slices.ContainsFunc(gt.Args, func(a string) bool {
		return strings.HasPrefix(a, "-test.timeout") || strings.HasPrefix(a, "--test.timeout")
	}) {
		// The guest boots in 5-15 s; what is left, less a margin for the report.
		args = append(args, "-test.timeout="+max(timeout-30*time.Second, timeout/2).String())
	}
	args = append(args, gt.Args...)

	res := RunTest(t, Config{
		Kernel:     kernel,
		Command:    args,
		Env:        gt.Env,
		Dir:        guestPackageDir,
		Files:      append(files, gt.Files...),
		Dirs:       append([]string{guestPackageDir}, gt.Dirs...),
		MemoryMiB:  gt.MemoryMiB,
		Timeout:    timeout,
		CPUs:       gt.CPUs,
		Bench:      gt.Bench,
		Nice:       gt.Nice,
		KernelArgs: gt.KernelArgs,
		Forwards:   gt.Forwards,
	})
	t.Logf("%s on %s: exit code %d; booted in %s (guest %s), %s in all",
		filepath.Base(binary), series, res.ExitCode, res.Boot.Round(time.Millisecond),
		res.GuestBoot, res.Elapsed.Round(time.Millisecond))
	if res.ExitCode != 0 {
		t.Errorf("the guest test %s failed on kernel %s: exit code %d", filepath.Base(binary), series, res.ExitCode)
	}
	return res
}

// BuildGoTest builds gt.Package's tests with `go test -c -tags vmguest,...` into a
// temporary directory of t and returns the binary's path. Build several series' VMs
// from one binary by passing it as GoTest.Binary.
func BuildGoTest(t testing.TB, gt GoTest) string {
	t.Helper()
	if gt.Package == "" {
		t.Fatal("vm.GoTest: no package")
	}
	dir, err := packageDir(gt.Package)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(dir)+".test")
	args := []string{"test", "-c", "-o", out, "-tags", strings.Join(append([]string{GuestTag}, gt.Tags...), ",")}
	if gt.LDFlags != "" {
		args = append(args, "-ldflags", gt.LDFlags)
	}
	args = append(args, gt.Package)
	cmd := exec.CommandContext(t.Context(), "go", args...)
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0"), gt.BuildEnv...)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, output.String())
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatalf("go %s wrote no binary (does %s have tests with the %s tag?): %v", strings.Join(args, " "), gt.Package, GuestTag, err)
	}
	t.Logf("built %s in %s", filepath.Base(out), time.Since(start).Round(time.Millisecond))
	return out
}

// packageDir is the source directory of a package pattern, as go list resolves it.
func packageDir(pkg string) (string, error) {
	out, err := exec.Command("go", "list", "-tags", GuestTag, "-f", "{{.Dir}}", pkg).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return "", fmt.Errorf("go list %s: %w\n%s", pkg, err, stderr)
	}
	return strings.TrimSpace(string(out)), nil
}

// treeFiles lists the regular files below the host directory dir as Files below guest.
func treeFiles(dir, guest string) ([]File, error) {
	var files []File
	err := filepath.WalkDir(dir, func(host string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, host)
		if err != nil {
			return err
		}
		files = append(files, File{Path: path.Join(guest, filepath.ToSlash(rel)), Source: host})
		return nil
	})
	return files, err
}
