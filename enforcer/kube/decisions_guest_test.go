//go:build vmguest

package kube

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/podarmor/podarmor/enforcer/hook"
)

// envDecisionsFor sets how long BenchmarkDecisions runs its workload (a Go duration;
// 60s by default).
const envDecisionsFor = "PODARMOR_DECISIONS_FOR"

// BenchmarkDecisions is the data of docs/observability's plot, not a timing: a hooked
// container of a labelled pod runs a workload of denied reads (custom/no-secret) and
// audited execs (custom/audit-exec) whose rates change over time, while the agent's real
// /metrics is scraped every second. Each scrape prints one line per decision series:
//
//	decisions,SECONDS,PROFILE,RULE,ACTION,VALUE
//
// The host side (e2e BenchmarkDecisionsInVM) collects them into a CSV file. At the end
// the counters must equal the operations the workload did.
func BenchmarkDecisions(b *testing.B) {
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	length := time.Minute
	if v := os.Getenv(envDecisionsFor); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("%s=%q: %v", envDecisionsFor, v, err)
		}
		length = d
	}
	h := startAgent(b, ctx, io.Discard, slog.LevelWarn)
	id := "ap." + h.ns + ".web"
	pod := h.createPod(b, ctx, "web", id)
	cid := strings.Repeat("ab", 32)
	ctr := startContainer(b, pod, cid)
	resp, err := (&hook.Client{Socket: h.socket, Timeout: 10 * time.Second}).Do(ctx, hook.Request{
		Op: hook.OpRegister, ContainerID: cid, PID: ctr.Process.Pid, Status: "creating",
		Annotations: podAnnotations(pod, "app"),
	})
	if err != nil || resp.MountNamespace == 0 {
		b.Fatalf("register: %+v, %v", resp, err)
	}
	pid := ctr.Process.Pid

	// Each operation runs a process in the container (tens of milliseconds of the one
	// vCPU under emulation, at the lowest priority, so that the scrapes keep their
	// second): the rates are what a loop with these pauses reaches, in four phases.
	type phase struct{ deny, audit time.Duration } // pause between operations
	const off = -1                                 // no operations of the kind
	quarter := length / 4
	phases := []phase{
		{deny: 300 * time.Millisecond, audit: off},             // denials only
		{deny: 2 * time.Second, audit: 250 * time.Millisecond}, // mostly audits
		{deny: off, audit: off},                                // quiet
		{deny: 0, audit: time.Second},                          // an attack loop: reads back to back
	}
	last := map[string]float64{}
	hooks := map[string]map[string]bool{} // by rule/action: the hooks that decided
	scrapeOnce := func(at time.Duration) {
		// The samples (and hack/plot) have no hook column: one line per profile, rule
		// and action, summed over hooks.
		var order []decision
		sums := map[decision]float64{}
		for _, s := range decisionSeries(b, h.httpAddr) {
			key := decision{profile: s.profile, rule: s.rule, action: s.action}
			if _, ok := sums[key]; !ok {
				order = append(order, key)
			}
			sums[key] += s.value
			if hooks[s.rule+"/"+s.action] == nil {
				hooks[s.rule+"/"+s.action] = map[string]bool{}
			}
			hooks[s.rule+"/"+s.action][s.hook] = true
		}
		for _, key := range order {
			fmt.Printf("decisions,%.3f,%s,%s,%s,%g\n", at.Seconds(), key.profile, key.rule, key.action, sums[key])
			last[key.rule+"/"+key.action] = sums[key]
		}
	}
	start := time.Now()
	scrapeOnce(0)
	var mu sync.Mutex
	counts := map[string]int{}
	var failures []error
	loop := func(rule string, pause func(phase) time.Duration, op func() error) {
		// Niceness is a thread's, and what it starts inherits it: the workload's
		// processes are started from this thread only.
		runtime.LockOSThread()
		if err := unix.Setpriority(unix.PRIO_PROCESS, 0, 19); err != nil {
			mu.Lock()
			failures = append(failures, fmt.Errorf("lower the workload's priority: %w", err))
			mu.Unlock()
			return
		}
		for {
			since := time.Since(start)
			if since >= length {
				return
			}
			ph := phases[min(int(since/quarter), len(phases)-1)]
			p := pause(ph)
			if p < 0 {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			err := op()
			mu.Lock()
			counts[rule]++
			if err != nil {
				failures = append(failures, err)
			}
			mu.Unlock()
			if err != nil {
				return
			}
			time.Sleep(p)
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		loop("custom/no-secret", func(p phase) time.Duration { return p.deny }, func() error {
			out, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-m", "cat", "/secret").CombinedOutput()
			if err == nil || !strings.Contains(string(out), "Operation not permitted") {
				return fmt.Errorf("cat /secret in the container was not denied: %v: %s", err, out)
			}
			return nil
		})
	}()
	go func() {
		defer wg.Done()
		loop("custom/audit-exec", func(p phase) time.Duration { return p.audit }, func() error {
			if out, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-m", auditedExec).CombinedOutput(); err != nil {
				return fmt.Errorf("run %s in the container: %v: %s", auditedExec, err, out)
			}
			return nil
		})
	}()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(start) < length+2*time.Second {
		<-tick.C
		scrapeOnce(time.Since(start))
	}
	wg.Wait()
	if len(failures) > 0 {
		b.Fatalf("the workload failed: %v", failures)
	}
	scrapeOnce(time.Since(start))
	if got, want := last["custom/no-secret/enforce"], float64(counts["custom/no-secret"]); got != want {
		b.Errorf("denials counted %v, the workload made %v", got, want)
	}
	if got, want := last["custom/audit-exec/audit"], float64(counts["custom/audit-exec"]); got != want {
		b.Errorf("audits counted %v, the workload made %v", got, want)
	}
	for series, want := range map[string]string{"custom/no-secret/enforce": "file_open", "custom/audit-exec/audit": "bprm_check_security"} {
		if got := hooks[series]; len(got) != 1 || !got[want] {
			b.Errorf("hooks that decided %s: %v, want only %s", series, got, want)
		}
	}
	b.Logf("workload: %v", counts)
}

type decision struct {
	profile, rule, hook, action string
	value                       float64
}

// decisionSeries scrapes /metrics and returns podarmor_enforcer_decisions_total.
func decisionSeries(tb testing.TB, addr string) []decision {
	tb.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		tb.Fatalf("parse /metrics: %v", err)
	}
	var out []decision
	if mf := families["podarmor_enforcer_decisions_total"]; mf != nil {
		for _, m := range mf.GetMetric() {
			d := decision{value: m.GetCounter().GetValue()}
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "profile":
					d.profile = l.GetValue()
				case "rule":
					d.rule = l.GetValue()
				case "hook":
					d.hook = l.GetValue()
				case "action":
					d.action = l.GetValue()
				}
			}
			out = append(out, d)
		}
	}
	return out
}
