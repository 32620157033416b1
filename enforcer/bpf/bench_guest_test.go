//go:build vmguest

package bpf

// The guest half of the enforcer benchmark (BenchmarkEnforcerInVM in bench_test.go boots
// it): every workload in every configuration, interleaved, in one boot.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/enforcer/tables"
)

// benchMixedScript is the mixed workload: unpack a Go source tree and "build" it with
// what busybox has (there is no compiler in the guest): one exec of sed per source file
// to make its object, reading every object to "link", a make-like up-to-date check that
// stats every source and object, a grep over the tree, checksums written and verified,
// and the clean-up. It opens, creates, stats, execs and deletes files by the hundred.
const benchMixedScript = `# mixed.sh DIR TARBALL: unpack a Go source tree in DIR and build it with busybox tools
set -eu
w=$1
rm -rf "$w"
mkdir -p "$w"
cd "$w"
/bin/tar -xf "$2"
find go -type f -name '*.go' | sort > files
while read -r f; do
	o="obj/${f%.go}.o"
	[ -d "${o%/*}" ] || mkdir -p "${o%/*}"
	/bin/sed -e 's://.*$::' -e '/^[[:space:]]*$/d' "$f" > "$o"
done < files
find obj -name '*.o' | sort | xargs /bin/cat | /usr/bin/sha256sum > app
while read -r f; do
	[ "obj/${f%.go}.o" -nt "$f" ] || { echo "stale object for $f" >&2; exit 1; }
done < files
/bin/grep -rl 'func ' go > funcs
xargs /usr/bin/sha256sum < files > sums
/usr/bin/sha256sum -c -s sums
cd /
rm -rf "$w"
`

// benchLauncher starts a sandbox's worker. It runs in the sandbox's new mount namespace,
// waits until the benchmark has registered it (or not), asks AppArmor to confine the next
// exec with profile $1 when one is named ($2 is the attribute file), and execs the
// worker: that exec arms a BPF registration and enters the AppArmor profile, as a
// container's first exec does.
const benchLauncher = `read go
if [ -n "$1" ]; then printf 'exec %s' "$1" > "$2" || exit 125; fi
shift 2
exec "$@"`

const (
	benchPinDir     = "/sys/fs/bpf/podarmor-bench"
	benchScriptPath = "/bench/mixed.sh"
)

// A benchWorkload is one program the sandboxes run.
type benchWorkload struct {
	name string
	arg  string // the worker's argument
}

// benchWorkloads are the workloads, the microbenchmarks' iterations scaled by scale. At
// scale 1 each lasts 30-150 ms of guest time, the mixed one about a third of a second.
func benchWorkloads(scale float64) []benchWorkload {
	n := func(v int) int { return max(1, int(float64(v)*scale)) }
	return []benchWorkload{
		{"open", fmt.Sprintf("open:%s:%d", benchDataFile, n(5000))},
		{"openclose", fmt.Sprintf("openclose:%s:%d", benchDataFile, n(5000))},
		{"exec", fmt.Sprintf("exec:%s:%d", benchExecFile, n(200))},
		{"connect", fmt.Sprintf("connect:%d:%d", benchPort, n(500))},
		{"mixed", fmt.Sprintf("mixed:%s:%s/mixed:%s", benchScriptPath, benchWorkDir, benchSource)},
	}
}

// A benchConfig is one way of running the workloads.
type benchConfig struct {
	name     string
	podarmor bool   // podarmor's programs are attached
	empty    bool   // a program that only returns is attached to every hook podarmor uses
	profile  string // the BPF profile the sandbox is registered with
	apparmor string // the AppArmor profile the workloads run under
}

// benchConfigs lists the configurations in the order a round runs them: those that attach
// the same programs next to each other, so that a round attaches and detaches programs
// as few times as it can.
func benchConfigs() []benchConfig {
	cs := []benchConfig{{name: "bare"}}
	for _, n := range benchRuleCounts {
		cs = append(cs, benchConfig{name: fmt.Sprintf("apparmor-%d", n), apparmor: "podarmor-" + benchProfileID(n)})
	}
	cs = append(cs, benchConfig{name: "empty-prog", empty: true}, benchConfig{name: "unsandboxed", podarmor: true})
	for _, n := range benchRuleCounts {
		cs = append(cs, benchConfig{name: fmt.Sprintf("bpf-%d", n), podarmor: true, profile: benchProfileID(n)})
	}
	return cs
}

// benchRig holds the benchmark's state in the guest.
type benchRig struct {
	tb       testing.TB
	self     string
	attr     string    // AppArmor's exec attribute of the current process
	e        *Enforcer // loaded once, with both profiles
	attached bool      // podarmor's programs are attached
	empty    map[string]*ebpf.Program
	links    []link.Link                     // of the empty programs, while attached
	workers  map[string]*benchWorker         // by configuration
	results  map[string]map[string][]float64 // workload -> config -> ns/op of each round
	ops      map[string]int                  // workload -> operations timed in a run
	untimed  map[string]int                  // workload -> operations before the timed ones
}

// A benchWorker is the one process of a sandbox (see bench_worker_test.go).
type benchWorker struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr bytes.Buffer
	ns     uint32
}

// BenchmarkEnforcerGuest runs the enforcer benchmark inside the benchmark VM that
// BenchmarkEnforcerInVM boots; it needs the files that one puts in the guest. The
// environment tunes it: PODARMOR_BENCH_ROUNDS measured rounds (default 5) after
// PODARMOR_BENCH_WARMUP warm-up rounds (default 1), and PODARMOR_BENCH_SCALE (default 1)
// scales the iterations of the microbenchmarks. While iterating on the programs,
// PODARMOR_BENCH_WORKLOADS (e.g. openclose,mixed) runs only the workloads it names, and
// PODARMOR_BENCH_ROUNDS=0 PODARMOR_BENCH_WARMUP=0 only the BPF statistics: neither
// reports the targets.
func BenchmarkEnforcerGuest(b *testing.B) {
	rounds := envInt(b, "PODARMOR_BENCH_ROUNDS", 5)
	warmup := envInt(b, "PODARMOR_BENCH_WARMUP", 1)
	scale := 1.0
	if s := os.Getenv("PODARMOR_BENCH_SCALE"); s != "" {
		var err error
		if scale, err = strconv.ParseFloat(s, 64); err != nil {
			b.Fatalf("PODARMOR_BENCH_SCALE: %v", err)
		}
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	fmt.Printf("# guest kernel %s, 1 vCPU, QEMU TCG -icount shift=0,sleep=off (guest time counts instructions)\n", unix.ByteSliceToString(uts.Release[:]))
	r := newBenchRig(b)
	workloads := benchWorkloads(scale)
	if only := os.Getenv("PODARMOR_BENCH_WORKLOADS"); only != "" {
		names := strings.Split(only, ",")
		workloads = slices.DeleteFunc(workloads, func(w benchWorkload) bool { return !slices.Contains(names, w.name) })
		if len(workloads) != len(names) {
			b.Fatalf("PODARMOR_BENCH_WORKLOADS=%s: a name is not one of the workloads open, openclose, exec, connect, mixed", only)
		}
	}
	configs := benchConfigs()
	fmt.Printf("# %d warm-up round(s), then %d measured rounds; a round runs every configuration once, in this order\n", warmup, rounds)
	fmt.Printf("# (odd rounds in the reverse order, so that a drift over time weighs on every configuration alike):\n#   ")
	for _, c := range configs {
		fmt.Printf(" %s", c.name)
	}
	fmt.Printf("\n# each configuration has one sandbox (a new mount namespace) whose worker runs the workloads one after the other:\n")
	for _, w := range workloads {
		fmt.Printf("#   %s\n", w.arg)
	}

	start := time.Now()
	for i := range warmup + rounds {
		order := slices.Clone(configs)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, c := range order {
			r.enter(c)
			res := r.run(c, workloads)
			for _, w := range workloads {
				kind := "measured"
				if i < warmup {
					kind = "warm-up"
				}
				fmt.Printf("run %d (%s) %-9s %-14s %12.0f ns/op\n", i, kind, w.name, c.name, res[w.name])
				if i < warmup {
					continue
				}
				if r.results[w.name] == nil {
					r.results[w.name] = map[string][]float64{}
				}
				r.results[w.name][c.name] = append(r.results[w.name][c.name], res[w.name])
			}
		}
	}
	fmt.Printf("# the rounds took %s of guest time\n", time.Since(start).Round(time.Millisecond))
	if rounds > 0 {
		r.report(workloads, configs, rounds)
	}
	r.programStats(workloads, configs)
	r.hookTimes(workloads, configs)
	r.checkCounters()
	r.checkAppArmor()
}

func envInt(tb testing.TB, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return n
}

// newBenchRig writes the workloads' files, loads the AppArmor profiles, loads the enforcer
// with the BPF profiles, starts a sandbox for each configuration and makes the empty
// programs.
func newBenchRig(tb testing.TB) *benchRig {
	r := &benchRig{tb: tb, empty: map[string]*ebpf.Program{}, workers: map[string]*benchWorker{},
		results: map[string]map[string][]float64{}, ops: map[string]int{}, untimed: map[string]int{}}
	var err error
	if r.self, err = os.Executable(); err != nil {
		tb.Fatal(err)
	}
	if _, err := os.Stat(benchSource); err != nil {
		tb.Fatalf("the mixed workload's source tree: %v (BenchmarkEnforcerInVM puts it into the guest)", err)
	}
	line := []byte(`{"key": "value", "list": [1, 2, 3]}` + "\n")
	data := bytes.Repeat(line, 4096/len(line)+1)[:4096]
	for _, f := range []struct {
		path string
		data []byte
	}{{benchDataFile, data}, {benchScriptPath, []byte(benchMixedScript)}} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(f.path, f.data, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.MkdirAll(benchWorkDir, 0o755); err != nil {
		tb.Fatal(err)
	}

	r.attr = "/proc/self/attr/apparmor/exec"
	if _, err := os.Stat(r.attr); err != nil {
		r.attr = "/proc/self/attr/exec"
	}
	for _, n := range benchRuleCounts {
		name := "podarmor-" + benchProfileID(n)
		t0 := time.Now()
		// compiled on the host (BenchmarkEnforcerInVM): compiling the 1,024-rule profile
		// takes seconds there, minutes under emulation
		out, err := exec.Command("apparmor_parser", "-r", "-B", "/bench/"+name+".bin").CombinedOutput()
		if err != nil {
			tb.Fatalf("apparmor_parser -r -B %s: %v\n%s", name, err, out)
		}
		fmt.Printf("# AppArmor profile %s loaded in %s\n", name, time.Since(t0).Round(time.Millisecond))
	}

	t0 := time.Now()
	if r.e, err = Load(Options{PinDir: benchPinDir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
		tb.Fatalf("Load: %v", err)
	}
	r.attached = true
	tb.Cleanup(func() {
		r.stopWorkers()
		r.detachEmpty()
		for _, p := range r.empty {
			p.Close()
		}
		if err := r.e.Unpin(); err != nil {
			tb.Error(err)
		}
		r.e.Close()
	})
	fmt.Printf("# enforcer loaded in %s\n", time.Since(t0).Round(time.Millisecond))
	for _, n := range benchRuleCounts {
		t0 := time.Now()
		img, err := tables.Build(benchBPFProfile(benchRuleSet(n)), tables.Limits{})
		if err != nil {
			tb.Fatal(err)
		}
		t1 := time.Now()
		if err := r.e.SetImage(img); err != nil {
			tb.Fatalf("SetImage %s: %v", img.ProfileID, err)
		}
		fmt.Printf("# BPF profile %s: %d rules, path automaton of %d states x %d classes; built in %s, written in %s\n",
			img.ProfileID, len(img.Rules), img.DFA.NumStates, img.DFA.NumClasses, t1.Sub(t0).Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
	}

	// Every sandbox starts now, with podarmor's programs attached: a registration is
	// armed by the first exec in its namespace.
	t0 = time.Now()
	for _, c := range benchConfigs() {
		r.startWorker(c)
	}
	fmt.Printf("# a sandbox started for each configuration in %s\n", time.Since(t0).Round(time.Millisecond))

	for _, h := range r.e.Hooks() {
		if !h.Attached {
			fmt.Printf("# hook %s is not attached on this kernel: %s\n", h.Name, h.Reason)
			continue
		}
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name:         "empty",
			Type:         ebpf.LSM,
			AttachType:   ebpf.AttachLSMMac,
			AttachTo:     h.Name,
			License:      "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		})
		if err != nil {
			tb.Fatalf("empty program for LSM hook %s: %v", h.Name, err)
		}
		r.empty[h.Name] = p
	}
	return r
}

// detachPodarmor detaches podarmor's programs, keeping them and their maps loaded: the
// links are unpinned and released. attachPodarmor attaches the same programs again, as
// Load does. Neither verifies a program again, which takes most of Load's time.
func (r *benchRig) detachPodarmor() {
	if err := os.RemoveAll(filepath.Join(benchPinDir, "links")); err != nil {
		r.tb.Fatal(err)
	}
	if err := r.e.mod.DetachPrograms(); err != nil {
		r.tb.Fatalf("detach podarmor's programs: %v", err)
	}
	r.attached = false
}

func (r *benchRig) attachPodarmor() {
	if err := os.MkdirAll(filepath.Join(benchPinDir, "links"), 0o700); err != nil {
		r.tb.Fatal(err)
	}
	if err := r.e.attach(); err != nil {
		r.tb.Fatal(err)
	}
	r.attached = true
}

func (r *benchRig) attachEmpty() {
	for _, p := range r.empty {
		l, err := link.AttachLSM(link.LSMOptions{Program: p})
		if err != nil {
			r.tb.Fatalf("attach empty program: %v", err)
		}
		r.links = append(r.links, l)
	}
}

func (r *benchRig) detachEmpty() {
	for _, l := range r.links {
		l.Close()
	}
	r.links = nil
}

// enter puts the node into the state configuration c needs.
func (r *benchRig) enter(c benchConfig) {
	switch {
	case c.podarmor && !r.attached:
		r.attachPodarmor()
	case !c.podarmor && r.attached:
		r.detachPodarmor()
	}
	switch {
	case c.empty && r.links == nil:
		r.attachEmpty()
	case !c.empty && r.links != nil:
		r.detachEmpty()
	}
}

// startWorker starts the sandbox of configuration c, in a new mount namespace, and
// checks that it is confined as c says.
func (r *benchRig) startWorker(c benchConfig) {
	w := &benchWorker{}
	w.cmd = exec.Command("/bin/busybox", "sh", "-c", benchLauncher, "sh", c.apparmor, r.attr, r.self)
	// No garbage collection and no preemption signals: less that varies between runs.
	w.cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", benchWorkerEnv + "=1", "GOGC=off", "GODEBUG=asyncpreemptoff=1"}
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	w.cmd.Stderr = &w.stderr
	var err error
	if w.in, err = w.cmd.StdinPipe(); err != nil {
		r.tb.Fatal(err)
	}
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		r.tb.Fatal(err)
	}
	w.out = bufio.NewReader(out)
	if err := w.cmd.Start(); err != nil {
		r.tb.Fatalf("start the sandbox of %s: %v", c.name, err)
	}
	r.workers[c.name] = w
	if w.ns, err = hook.MountNamespace(fmt.Sprintf("/proc/%d/ns/mnt", w.cmd.Process.Pid)); err != nil {
		r.tb.Fatal(err)
	}
	if c.profile != "" {
		if err := r.e.Register(w.ns, c.profile, false); err != nil {
			r.tb.Fatal(err)
		}
	}
	if _, err := io.WriteString(w.in, "go\n"); err != nil {
		r.tb.Fatal(err)
	}
	label := strings.TrimPrefix(r.readLine(c, w), "ready label=")
	want := "unconfined"
	if c.apparmor != "" {
		want = c.apparmor + "_(enforce)"
	}
	if label != want {
		r.tb.Fatalf("the sandbox of %s runs under AppArmor label %q, want %q", c.name, label, want)
	}
	if c.profile != "" {
		regs, err := r.e.Registered()
		if err != nil {
			r.tb.Fatal(err)
		}
		if regs[w.ns].Armed != 1 {
			r.tb.Fatalf("the sandbox of %s: the registration of its mount namespace was not armed by its exec", c.name)
		}
	}
}

// readLine reads a line from a worker; a worker that fails or ends fails the benchmark.
func (r *benchRig) readLine(c benchConfig, w *benchWorker) string {
	line, err := w.out.ReadString('\n')
	if err != nil || strings.HasPrefix(line, "error ") {
		rest, _ := io.ReadAll(w.out)
		r.tb.Fatalf("the sandbox of %s: %s%s (%v)\n%s", c.name, line, rest, err, w.stderr.String())
	}
	return strings.TrimSpace(line)
}

// stopWorkers ends every sandbox and forgets its registration.
func (r *benchRig) stopWorkers() {
	for name, w := range r.workers {
		w.in.Close()
		if err := w.cmd.Wait(); err != nil {
			r.tb.Errorf("the sandbox of %s: %v\n%s", name, err, w.stderr.String())
		}
		if r.e != nil {
			_ = r.e.Unregister(w.ns)
		}
	}
	r.workers = map[string]*benchWorker{}
}

// benchSettle is how long the node rests before each run: the work that attaching or
// detaching programs, and the previous run, leave to kernel threads and RCU callbacks is
// done by then rather than during the run. Under -icount sleep=off an idle guest's clock
// jumps ahead, so resting costs little real time.
const benchSettle = time.Second

// run runs the workloads in the sandbox of configuration c and returns each one's time
// per operation.
func (r *benchRig) run(c benchConfig, workloads []benchWorkload) map[string]float64 {
	time.Sleep(benchSettle)
	w := r.workers[c.name]
	var args []string
	for _, wl := range workloads {
		args = append(args, wl.arg)
	}
	if _, err := io.WriteString(w.in, strings.Join(args, " ")+"\n"); err != nil {
		r.tb.Fatalf("the sandbox of %s: %v", c.name, err)
	}
	res := map[string]float64{}
	for {
		line := r.readLine(c, w)
		if line == "end" {
			break
		}
		var name string
		var nsec int64
		var ops, untimed int
		if _, err := fmt.Sscanf(line, "%s ns=%d ops=%d untimed=%d", &name, &nsec, &ops, &untimed); err != nil {
			r.tb.Fatalf("the sandbox of %s answered %q: %v", c.name, line, err)
		}
		res[name] = float64(nsec) / float64(ops)
		r.ops[name], r.untimed[name] = ops, untimed
	}
	for _, wl := range workloads {
		if _, ok := res[wl.name]; !ok {
			r.tb.Fatalf("the sandbox of %s: no result for %s", c.name, wl.name)
		}
	}
	return res
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// spread is the range of xs relative to their median.
func spread(xs []float64) float64 {
	return (slices.Max(xs) - slices.Min(xs)) / median(xs)
}

// report prints the medians, the ratios to the bare kernel and the targets.
func (r *benchRig) report(workloads []benchWorkload, configs []benchConfig, rounds int) {
	fmt.Printf("\n## medians of %d runs: time per operation, and ratio to bare (no podarmor programs, no AppArmor profile)\n", rounds)
	fmt.Printf("%-9s %-14s %12s %8s %8s\n", "workload", "config", "ns/op", "ratio", "spread")
	for _, w := range workloads {
		bare := median(r.results[w.name]["bare"])
		for _, c := range configs {
			xs := r.results[w.name][c.name]
			m := median(xs)
			fmt.Printf("%-9s %-14s %12.0f %8.4f %7.2f%%\n", w.name, c.name, m, m/bare, 100*spread(xs))
		}
	}
	ratio := func(w, c string) float64 { return median(r.results[w][c]) / median(r.results[w]["bare"]) }
	// extra is what configuration c adds to bare: the ratio less one, and ns/op.
	extra := func(w, c string) string {
		return fmt.Sprintf("%s %+.2f%% (%+.0f ns/op)", c, 100*(ratio(w, c)-1), median(r.results[w][c])-median(r.results[w]["bare"]))
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT MET"
	}
	lo, hi := strconv.Itoa(benchRuleCounts[0]), strconv.Itoa(benchRuleCounts[len(benchRuleCounts)-1])
	fmt.Printf("\n## targets (costs are what a configuration adds to bare)\n")
	if r.results["mixed"] != nil {
		m := ratio("mixed", "bpf-"+hi)
		fmt.Printf("target mixed: bpf-%s / bare = %.4f, at most 1.03: %s\n", hi, m, verdict(m <= 1.03))
	}
	for _, w := range workloads {
		for _, n := range []string{lo, hi} {
			bp, aa := ratio(w.name, "bpf-"+n), ratio(w.name, "apparmor-"+n)
			fmt.Printf("target %s: %s vs %s, no slower: %s\n", w.name, extra(w.name, "bpf-"+n), extra(w.name, "apparmor-"+n), verdict(bp <= aa))
		}
	}
	for _, w := range workloads {
		cl, ch := ratio(w.name, "bpf-"+lo)-1, ratio(w.name, "bpf-"+hi)-1
		v := verdict(ch <= 1.10*cl)
		if noise := max(spread(r.results[w.name]["bpf-"+lo]), spread(r.results[w.name]["bpf-"+hi])); ch > 1.10*cl && ch-cl <= noise {
			v = "within the spread of the runs"
		}
		fmt.Printf("target %s: %s vs %s: %.2fx the cost, at most 1.10x: %s\n", w.name, extra(w.name, "bpf-"+hi), extra(w.name, "bpf-"+lo), ch/cl, v)
	}
	for _, w := range workloads {
		fmt.Printf("floor %s: %s vs %s\n", w.name, extra(w.name, "unsandboxed"), extra(w.name, "empty-prog"))
	}
	// One line for BenchmarkEnforcerInVM to report as metrics.
	var b strings.Builder
	for _, w := range workloads {
		for _, c := range []string{"unsandboxed", "bpf-" + hi, "apparmor-" + hi} {
			fmt.Fprintf(&b, " %s/%s=%.4f", w.name, c, ratio(w.name, c))
		}
	}
	fmt.Printf("ratios%s\n", b.String())
}

type progStat struct {
	runtime time.Duration
	count   uint64
}

// programStats runs each workload once more, alone in its sandbox, in the configurations
// with BPF programs, with the kernel's BPF statistics on (they cost time of their own,
// which is why the rounds run without them), and prints what each program took: calls per
// operation, nanoseconds per call and per operation. Reading the statistics is itself a
// bpf() call that podarmor's bpf hook sees; the calls and time of one reading are
// subtracted.
func (r *benchRig) programStats(workloads []benchWorkload, configs []benchConfig) {
	progs := map[string]*ebpf.Program{}
	for hook, p := range r.empty {
		progs["empty/"+hook] = p
	}
	for _, h := range r.e.Hooks() {
		if !h.Attached {
			continue
		}
		bp, err := r.e.mod.GetProgram(h.Program)
		if err != nil {
			r.tb.Fatal(err)
		}
		fd, err := unix.Dup(bp.FileDescriptor())
		if err != nil {
			r.tb.Fatal(err)
		}
		p, err := ebpf.NewProgramFromFD(fd)
		if err != nil {
			r.tb.Fatal(err)
		}
		defer p.Close()
		progs[h.Program] = p
	}
	read := func() map[string]progStat {
		m := map[string]progStat{}
		for name, p := range progs {
			s, err := p.Stats()
			if err != nil {
				r.tb.Fatalf("statistics of program %s: %v", name, err)
			}
			m[name] = progStat{s.Runtime, s.RunCount}
		}
		return m
	}
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		r.tb.Fatalf("enable BPF statistics: %v", err)
	}
	defer stats.Close()

	fmt.Printf("\n## BPF programs (bpf_stats, one run of each workload alone): calls per operation, ns per call, ns per operation\n")
	for _, w := range workloads {
		for _, c := range configs {
			if !c.podarmor && !c.empty {
				continue
			}
			r.enter(c)
			b0 := read()
			b1 := read()
			res := r.run(c, []benchWorkload{w})
			a := read()
			// the statistics count the untimed operations too
			ops := float64(r.ops[w.name] + r.untimed[w.name])
			var names []string
			for name := range a {
				names = append(names, name)
			}
			slices.Sort(names)
			var total float64
			var lines []string
			for _, name := range names {
				calls := float64(a[name].count-b1[name].count) - float64(b1[name].count-b0[name].count)
				ns := float64(a[name].runtime-b1[name].runtime) - float64(b1[name].runtime-b0[name].runtime)
				if calls < 0.5 {
					continue
				}
				total += ns / ops
				lines = append(lines, fmt.Sprintf("    %-26s %9.2f calls/op %7.0f ns/call %10.0f ns/op", name, calls/ops, ns/calls, ns/ops))
			}
			fmt.Printf("stats %-9s %-14s %12.0f ns/op, in BPF programs %10.0f ns/op (%.2f%%)\n", w.name, c.name, res[w.name], total, 100*total/res[w.name])
			for _, l := range lines {
				fmt.Println(l)
			}
		}
	}
}

// checkCounters fails if a rule of the benchmark's profiles decided anything: the rules
// must not match what the workloads do.
func (r *benchRig) checkCounters() {
	c, err := r.e.Counters()
	if err != nil {
		r.tb.Fatal(err)
	}
	for d, n := range c {
		if n > 0 {
			r.tb.Errorf("rule %s of profile %s decided %d operations (action %v): the benchmark's rules must not match its workloads", d.Rule, d.Profile, n, d.Action)
		}
	}
	drops, err := r.e.Drops()
	if err != nil {
		r.tb.Fatal(err)
	}
	for why, n := range drops {
		if n > 0 {
			r.tb.Errorf("the programs dropped %d decisions or events for reason %d", n, why)
		}
	}
}

// checkAppArmor fails if AppArmor refused anything during the benchmark.
func (r *benchRig) checkAppArmor() {
	out, err := exec.Command("dmesg").CombinedOutput()
	if err != nil {
		r.tb.Fatalf("dmesg: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, `apparmor="DENIED"`) {
			r.tb.Errorf("AppArmor refused an operation of the benchmark: %s", strings.TrimSpace(line))
		}
	}
}
