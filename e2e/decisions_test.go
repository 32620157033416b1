package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/e2e/vm"
)

// Environment of BenchmarkDecisionsInVM.
const (
	// envDecisionsCSV is the file the samples are written to; required.
	envDecisionsCSV = "PODARMOR_DECISIONS_CSV"
	// envDecisionsSeries is the kernel series to run on; 6.12 by default.
	envDecisionsSeries = "PODARMOR_DECISIONS_SERIES"
)

// BenchmarkDecisionsInVM runs enforcer/kube's BenchmarkDecisions in a VM against a real
// kube-apiserver on the host: a workload of denied reads and audited execs in a
// sandboxed container for a minute, with the enforcer's /metrics scraped every second.
// It writes the samples to $PODARMOR_DECISIONS_CSV (seconds, profile, rule, action,
// decisions so far), from which hack/plot-decisions.sh draws
// docs/observability/decisions.png. It is data for a figure, not a timing.
func BenchmarkDecisionsInVM(b *testing.B) {
	out := os.Getenv(envDecisionsCSV)
	if out == "" {
		b.Fatalf("%s must name the CSV file to write (hack/plot-decisions.sh sets it)", envDecisionsCSV)
	}
	series := os.Getenv(envDecisionsSeries)
	if series == "" {
		series = "6.12"
	}
	vm.Require(b)
	version := framework.Versions(b)[0]
	bin := vm.BuildGoTest(b, vm.GoTest{
		Package:  "../enforcer/kube",
		Tags:     []string{"netgo", "osusergo"},
		BuildEnv: []string{"CGO_ENABLED=1"},
		LDFlags:  "-extldflags -static",
	})
	const guestBin = "/podarmor/bin/kube.test"
	cp := framework.StartControlPlane(b, framework.Options{Version: version})
	ns := cp.CreateNamespace(b, nil)
	env := []string{"PODARMOR_TEST_KUBECONFIG=/etc/podarmor/kubeconfig", "PODARMOR_TEST_NAMESPACE=" + ns.Name}
	if v := os.Getenv("PODARMOR_DECISIONS_FOR"); v != "" {
		env = append(env, "PODARMOR_DECISIONS_FOR="+v)
	}
	res := vm.RunTest(b, vm.Config{
		Kernel:  vm.KernelT(b, series),
		Command: []string{guestBin, "-test.run=^$", "-test.bench=^BenchmarkDecisions$", "-test.benchtime=1x", "-test.timeout=20m"},
		Env:     env,
		Files: []vm.File{
			{Path: guestBin, Source: bin, Mode: 0o755},
			{Source: guestKubeconfig(b, cp.Kubeconfig), Path: "/etc/podarmor/kubeconfig"},
		},
		Forwards:  []vm.Forward{{GuestAddr: apiServerInVM, Host: hostOf(b, cp.Config.Host)}},
		MemoryMiB: 2048,
		Timeout:   25 * time.Minute,
	})
	if res.ExitCode != 0 {
		b.Fatalf("the guest benchmark failed on kernel %s: exit code %d\n%s", series, res.ExitCode, res.Output)
	}
	var csv strings.Builder
	fmt.Fprintf(&csv, "# kernel %s, Kubernetes %s; enforcer/kube BenchmarkDecisions: denied reads and audited execs in one container, /metrics scraped every second\n", series, version)
	csv.WriteString("seconds,profile,rule,action,decisions\n")
	samples := 0
	for line := range strings.Lines(res.Output) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "decisions,"); ok {
			// The profile names the test's namespace, random per run: keep its policy.
			fields := strings.Split(rest, ",")
			if len(fields) != 5 {
				b.Fatalf("sample %q: want 5 fields", line)
			}
			if _, policy, ok := strings.Cut(strings.TrimPrefix(fields[1], "ap."), "."); ok {
				fields[1] = "ap.<namespace>." + policy
			}
			csv.WriteString(strings.Join(fields, ",") + "\n")
			samples++
		}
	}
	if samples == 0 {
		b.Fatalf("no samples in the guest's output:\n%s", res.Output)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(out, []byte(csv.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d samples written to %s", samples, out)
}
