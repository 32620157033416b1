//go:build vmguest

package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podarmor/podarmor/enforcer/hook"
)

// envHook makes the test binary the OCI hook (`podarmor-enforcer oci-hook`) against the
// socket it names, and envNoop makes it exit at once: the cost of starting a hook.
const (
	envHook = "PODARMOR_TEST_OCI_HOOK"
	envNoop = "PODARMOR_TEST_NOOP"
	// envOpenWrite makes it open the file it names for writing (no O_CREAT, which
	// would make the check a create one on some kernels) and say how that went.
	envOpenWrite = "PODARMOR_TEST_OPEN_WRITE"
)

// openWrite opens file for writing, prints the result, stays a few seconds (so that the
// enforcer finds the process's cgroup) and exits.
func openWrite(file string) {
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err == nil {
		f.Close()
	}
	fmt.Printf("open %s for writing: %v\n", file, err)
	time.Sleep(3 * time.Second)
	os.Exit(0)
}

func TestMain(m *testing.M) {
	if os.Getenv(envNoop) != "" {
		os.Exit(0)
	}
	if file := os.Getenv(envOpenWrite); file != "" {
		openWrite(file)
	}
	if socket := os.Getenv(envHook); socket != "" {
		err := hook.RunOCI(context.Background(), hook.OCIConfig{Client: hook.Client{Socket: socket}}, os.Stdin)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkNodeAgent measures, against the real API server on the host:
//   - the latency the OCI hook adds to a container's start: the hook binary run as the
//     runtime runs it (container state on stdin), registering a container of a labelled
//     pod with the agent, next to the same binary exiting at once;
//   - the time from a policy change (an update through the API server) to its
//     enforcement in a running container.
//
// It prints one "nodeagent" line of key=value figures for the host benchmark to report.
func BenchmarkNodeAgent(b *testing.B) {
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	h := startAgent(b, ctx, io.Discard, slog.LevelWarn)
	id := "ap." + h.ns + ".web"
	pod := h.createPod(b, ctx, "web", id)
	rounds := 100
	if v, err := strconv.Atoi(os.Getenv("PODARMOR_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}

	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	run := func(env string, stdin []byte) time.Duration {
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), env)
		cmd.Stdin = bytes.NewReader(stdin)
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v: %s", env, err, out)
		}
		return time.Since(start)
	}
	var hookTimes, noopTimes []time.Duration
	for i := range rounds {
		cid := fmt.Sprintf("%064x", i+1)
		ctr := startContainer(b, pod, cid)
		state, err := json.Marshal(specs.State{
			Version: specs.Version, ID: cid, Status: specs.StateCreating, Pid: ctr.Process.Pid,
			Bundle: "/tmp", Annotations: podAnnotations(pod, "app"),
		})
		if err != nil {
			b.Fatal(err)
		}
		// Alternate, so both see the same load.
		noopTimes = append(noopTimes, run(envNoop+"=1", state))
		hookTimes = append(hookTimes, run(envHook+"="+h.socket, state))
		regs, err := h.enf.Registered()
		if _, ok := regs[mountNamespace(b, ctr.Process.Pid)]; err != nil || !ok {
			b.Fatalf("container %d not registered after its hook", i)
		}
		ctr.Process.Kill()
		ctr.Wait()
	}

	// Policy changes: the rule moves between /secret and /other; each change is timed
	// from the update to the moment a new process in the container sees it.
	ctr := startContainer(b, pod, fmt.Sprintf("%064x", rounds+1))
	resp, err := (&hook.Client{Socket: h.socket, Timeout: 10 * time.Second}).Do(ctx, hook.Request{
		Op: hook.OpRegister, ContainerID: fmt.Sprintf("%064x", rounds+1), PID: ctr.Process.Pid, Status: "creating",
		Annotations: podAnnotations(pod, "app"),
	})
	if err != nil || resp.MountNamespace == 0 {
		b.Fatalf("register: %+v, %v", resp, err)
	}
	if err := os.WriteFile("/other", []byte("other\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	var changes []time.Duration
	denied := "/secret"
	for range 10 {
		next := map[string]string{"/secret": "/other", "/other": "/secret"}[denied]
		cur, err := h.policies.Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		upd := policyObject(b, h.ns, `"BPF","AppArmor","Seccomp"`, ``, next)
		upd.SetResourceVersion(cur.GetResourceVersion())
		start := time.Now()
		if _, err := h.policies.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		// The old path becomes readable when the change is in force.
		waitFor(b, 90*time.Second, "the policy change", func() bool { return canRead(ctr.Process.Pid, denied) })
		changes = append(changes, time.Since(start))
		denied = next
	}

	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64)
	}
	fmt.Printf("nodeagent rounds=%d hook_p50_ms=%s hook_p99_ms=%s noop_p50_ms=%s noop_p99_ms=%s change_p50_ms=%s change_max_ms=%s\n",
		rounds, ms(percentile(hookTimes, 50)), ms(percentile(hookTimes, 99)), ms(percentile(noopTimes, 50)), ms(percentile(noopTimes, 99)),
		ms(percentile(changes, 50)), ms(slices.Max(changes)))
}

// percentile is the p-th percentile of ds (nearest rank).
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	return s[max(i, 0)]
}
