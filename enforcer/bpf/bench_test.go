//go:build !vmguest

package bpf

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podarmor/podarmor/e2e/vm"
	"github.com/podarmor/podarmor/enforcer/tables"
	"github.com/podarmor/podarmor/policies/compile/apparmor"
	"github.com/podarmor/podarmor/policies/pattern"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// BenchmarkEnforcerInVM measures what podarmor's BPF LSM programs cost the processes
// they confine, and the processes they do not, against AppArmor with the same rules. It
// boots one benchmark VM per kernel series (deterministic: one vCPU, instruction
// counting, see vm.Config.Bench) and runs BenchmarkEnforcerGuest (bench_guest_test.go)
// there: an open/stat/read/close loop, an exec loop, a TCP connect loop on loopback and a
// mixed workload (unpacking and "building" a Go source tree with busybox tools), each in
// a new mount namespace in these configurations, interleaved round by round:
//
//	bare           no podarmor programs and no AppArmor profile
//	empty-prog     a program that only returns on every hook podarmor uses: the floor
//	apparmor-N     the AppArmor profile of the N-rule policy (podarmor's AppArmor backend)
//	unsandboxed    podarmor loaded, the process in no sandbox
//	bpf-N          podarmor loaded, the process in a sandbox of the N-rule policy
//
// where the policies have N = 8 and 1,024 rules of every kind, none of which matches what
// the workloads do. It prints medians and their ratios to bare, the targets of the
// performance issue, and the run time of each program from the kernel's BPF statistics.
// `make bench` (hack/bench.sh enforcer) runs it and keeps the output in
// docs/benchmarks/enforcer.txt. The ratios are reported as metrics. PODARMOR_BENCH_SERIES
// (e.g. 6.12) runs one kernel series only; the guest's PODARMOR_BENCH_* variables pass
// through (BenchmarkEnforcerGuest).
func BenchmarkEnforcerInVM(b *testing.B) {
	vm.Require(b)
	files := benchGuestFiles(b)
	bin := vm.BuildGoTest(b, vm.GoTest{
		Package:  ".",
		Tags:     []string{"netgo", "osusergo"},
		BuildEnv: []string{"CGO_ENABLED=1"},
		LDFlags:  "-extldflags -static",
	})
	const guestBin = "/podarmor/bin/bpf.test"
	files = append(files, vm.File{Path: guestBin, Source: bin, Mode: 0o755})
	var env []string
	for _, k := range []string{"PODARMOR_BENCH_ROUNDS", "PODARMOR_BENCH_WARMUP", "PODARMOR_BENCH_SCALE", "PODARMOR_BENCH_WORKLOADS"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	for _, series := range vm.Series() {
		// PODARMOR_BENCH_SERIES limits the run to one kernel series (while iterating).
		if only := os.Getenv("PODARMOR_BENCH_SERIES"); only != "" && only != series {
			continue
		}
		b.Run(series, func(b *testing.B) {
			res := vm.RunTest(b, vm.Config{
				Kernel: vm.KernelT(b, series),
				Command: []string{guestBin, "-test.run=^$", "-test.bench=^BenchmarkEnforcerGuest$",
					"-test.benchtime=1x", "-test.timeout=40m"},
				Env:       env,
				Files:     files,
				MemoryMiB: 2048,
				Timeout:   45 * time.Minute,
				Bench:     true,
				Output:    os.Stdout,
			})
			if res.ExitCode != 0 {
				b.Fatalf("the guest benchmark failed on kernel %s: exit code %d", series, res.ExitCode)
			}
			for line := range strings.Lines(res.Output) {
				rest, ok := strings.CutPrefix(strings.TrimSpace(line), "ratios ")
				if !ok {
					continue
				}
				for _, kv := range strings.Fields(rest) {
					k, v, _ := strings.Cut(kv, "=")
					if f, err := strconv.ParseFloat(v, 64); err == nil {
						b.ReportMetric(f, k)
					}
				}
			}
		})
	}
}

// benchGuestFiles are the files BenchmarkEnforcerGuest needs: the mixed workload's source
// tree and the AppArmor profiles, compiled here.
func benchGuestFiles(tb testing.TB) []vm.File {
	tb.Helper()
	src, _ := benchSourceTree(tb)
	files := []vm.File{{Path: benchSource, Data: src}}
	for _, n := range benchRuleCounts {
		text, name, err := benchAppArmorProfile(benchRuleSet(n))
		if err != nil {
			tb.Fatal(err)
		}
		bin, err := compileAppArmor(tb, text, "-S")
		if err != nil {
			tb.Fatal(err)
		}
		files = append(files, vm.File{Path: "/bench/" + name + ".bin", Data: bin})
	}
	return files
}

// compileAppArmor runs apparmor_parser on a profile without loading it, with the given
// options besides -Q -K, and returns its standard output.
func compileAppArmor(tb testing.TB, profile []byte, opts ...string) ([]byte, error) {
	f := filepath.Join(tb.TempDir(), "profile")
	if err := os.WriteFile(f, profile, 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("apparmor_parser", append(append([]string{"-Q", "-K"}, opts...), f)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("apparmor_parser: %w\n%s", err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// benchSourcePackages are the packages of the Go distribution whose source the mixed
// workload unpacks and builds: Go's parser and printer, 54 files and 0.56 MB of real
// source in 6 directories (Go 1.26), a size that keeps a run near a third of a second of
// guest time.
var benchSourcePackages = []string{"go/ast", "go/format", "go/parser", "go/printer", "go/scanner", "go/token"}

// benchSourceTree is a tar archive of benchSourcePackages (their testdata left out), and
// the names of the files in it. Times and owners are fixed, so the archive depends on the
// Go version only.
func benchSourceTree(tb testing.TB) ([]byte, []string) {
	tb.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		tb.Fatalf("go env GOROOT: %v", err)
	}
	root := filepath.Join(strings.TrimSpace(string(out)), "src")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var names []string
	mtime := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatUSTAR})
	}
	err = dir("go")
	for _, pkg := range benchSourcePackages {
		if err != nil {
			break
		}
		err = filepath.WalkDir(filepath.Join(root, pkg), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Name() == "testdata" {
				return filepath.SkipDir
			}
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			name := filepath.ToSlash(rel)
			switch {
			case d.IsDir():
				return dir(name)
			case !d.Type().IsRegular():
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			names = append(names, name)
			hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime, Format: tar.FormatUSTAR}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			_, err = tw.Write(data)
			return err
		})
	}
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		tb.Fatalf("archive the Go source tree: %v", err)
	}
	return buf.Bytes(), names
}

// TestBenchProfiles checks the policies of BenchmarkEnforcerInVM on the host, where a
// mistake costs seconds instead of a VM boot: each has its number of rules of every kind,
// fits the enforcer's default table limits, compiles for AppArmor, and no path rule
// matches a file the workloads touch. (The benchmark also fails if any rule decides
// anything while it runs.)
func TestBenchProfiles(t *testing.T) {
	_, names := benchSourceTree(t)
	paths := []string{benchDataFile, "/bin/busybox", "/podarmor/bin/bpf.test", "/bench/mixed.sh", benchSource,
		"/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "/dev/null", "/dev/urandom"}
	dir := benchWorkDir + "/mixed"
	for _, f := range []string{"", "/files", "/app", "/funcs", "/sums"} {
		paths = append(paths, dir+f)
	}
	for _, name := range names {
		paths = append(paths, dir+"/"+name, dir+"/obj/"+strings.TrimSuffix(name, ".go")+".o")
	}
	for _, n := range benchRuleCounts {
		rs := benchRuleSet(n)
		kinds := map[ruleset.Kind]int{}
		for _, r := range rs.Rules {
			kinds[r.Kind]++
		}
		for _, k := range []ruleset.Kind{ruleset.KindFile, ruleset.KindExec, ruleset.KindSocket, ruleset.KindEgress,
			ruleset.KindCapability, ruleset.KindPtrace, ruleset.KindMount, ruleset.KindOperation} {
			if kinds[k] != n {
				t.Errorf("%s: %d %s rules, want %d", rs.ProfileID, kinds[k], k, n)
			}
		}
		if _, err := tables.Build(benchBPFProfile(rs), tables.Limits{}); err != nil {
			t.Errorf("%s: %v", rs.ProfileID, err)
		}
		bad, err := benchPathsMatched(rs, paths)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range bad {
			t.Errorf("%s: %s", rs.ProfileID, m)
		}
	}
	if _, err := exec.LookPath("apparmor_parser"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("apparmor_parser is not in PATH and CI is set: %v", err)
		}
		t.Skip("apparmor_parser is not in PATH (apt-get install -y apparmor); CI fails here instead of skipping")
	}
	for _, n := range benchRuleCounts {
		text, _, err := benchAppArmorProfile(benchRuleSet(n))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := compileAppArmor(t, text); err != nil {
			t.Errorf("apparmor_parser -Q -K on the profile of %s: %v", benchProfileID(n), err)
		}
	}
}

// benchAppArmorProfile renders a rule set as podarmor's AppArmor backend does; it returns
// the profile and its name. Rules AppArmor cannot express (egress addresses, kernel
// operations, some ptrace and mount shapes) are comments in it.
func benchAppArmorProfile(rs *ruleset.RuleSet) ([]byte, string, error) {
	be, err := apparmor.New(apparmor.Config{})
	if err != nil {
		return nil, "", err
	}
	text, err := be.Render(rs)
	return text, apparmor.ProfileName(rs.ProfileID), err
}

// benchPathsMatched returns the patterns of rs that match one of paths.
func benchPathsMatched(rs *ruleset.RuleSet, paths []string) ([]string, error) {
	var bad []string
	for _, r := range rs.Rules {
		var pats []string
		switch {
		case r.File != nil:
			pats = r.File.Paths
		case r.Exec != nil:
			pats = r.Exec.Paths
		case r.Mount != nil:
			pats = r.Mount.Targets
		}
		for _, text := range pats {
			p, err := pattern.Parse(text)
			if err != nil {
				return nil, fmt.Errorf("rule %s: %w", r.ID, err)
			}
			for _, path := range paths {
				if p.Match(path) {
					bad = append(bad, fmt.Sprintf("%s: %s matches %s", r.ID, text, path))
				}
			}
		}
	}
	return bad, nil
}
