package kube

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"

	"github.com/podarmor/podarmor/deploy/monitoring/inventory"
	"github.com/podarmor/podarmor/enforcer/bpf"
	"github.com/podarmor/podarmor/enforcer/nri"
	"github.com/podarmor/podarmor/enforcer/profiles"
	"github.com/podarmor/podarmor/enforcer/registrar"
	"github.com/podarmor/podarmor/enforcer/tables"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
)

var update = flag.Bool("update", false, "rewrite deploy/monitoring/inventory/enforcer.json")

// fakeKernel stands in for a loaded BPF object: the collector reads it as it reads an
// *bpf.Enforcer.
type fakeKernel struct{}

func (fakeKernel) Counters() (map[bpf.Decision]uint64, error) {
	return map[bpf.Decision]uint64{
		{Profile: "ap.shop.web", Rule: "block-write-etc", Hook: tables.HookFileOpen, Action: tables.ActionEnforce}: 3,
		{Profile: "ap.shop.web", Rule: "audit-exec", Hook: tables.HookExec, Action: tables.ActionAudit}:            1,
	}, nil
}

func (fakeKernel) Uncounted() (uint64, error) { return 0, nil }

func (fakeKernel) Drops() ([tables.NumDrops]uint64, error) {
	return [tables.NumDrops]uint64{}, nil
}

func (fakeKernel) Hooks() []bpf.Hook {
	return []bpf.Hook{{Name: "file_open", Attached: true}, {Name: "path_mkdir", Attached: false}}
}

func (fakeKernel) MapUsage() ([]bpf.MapUsage, error) {
	return []bpf.MapUsage{{Map: "containers", Entries: 12, MaxEntries: 4096}, {Map: "dfa_trans", Entries: 3000, MaxEntries: 1 << 22}}, nil
}

func (fakeKernel) ProgramStats() ([]bpf.ProgramStats, error) {
	return []bpf.ProgramStats{{Program: "file_open", Hook: "file_open", Runs: 1000, RunTime: 2 * time.Millisecond}}, nil
}

// enforcerMetrics gathers what the Kubernetes mode serves on /metrics: the real
// handler of serveHTTP, scraped over loopback, after the agent observed one policy
// apply and one registration, plus enforcer/bpf's collector over a fake kernel (the
// handler adds it only when BPF LSM is loaded).
func enforcerMetrics(t *testing.T) prometheus.Gatherer {
	t.Helper()
	a := &agent{
		cfg: Config{Listen: "127.0.0.1:0"}, reg: &registrar.Registrar{},
		podEvents: newPodEvents(func(*corev1.ObjectReference, string, string) {}, DefaultEventBurst, DefaultEventInterval),
	}
	a.metrics = newMetrics(a)
	// An NRI plugin that never connects: its gauge and counter are served from the start.
	plugin, err := nri.New(nri.Config{Socket: filepath.Join(t.TempDir(), "nri.sock"), Hook: nri.HookConfig{Path: "/opt/podarmor/podarmor-enforcer"}})
	if err != nil {
		t.Fatal(err)
	}
	a.nri = plugin
	a.metrics.observeRegistration(registrar.SourceReconcile, "ap.shop.web", 2*time.Second, nil)
	a.metrics.observeRegistration(registrar.SourceHook, "ap.shop.web", 0, errors.New("no such process"))
	a.metrics.observeApply([]PolicyResult{
		{Name: "web", Enforcers: []profiles.EnforcerResult{{Enforcer: v1alpha1.EnforcerBPF, State: profiles.Loaded}}},
		{Name: "db", CompileError: "unknown rule"},
	}, 40*time.Millisecond)
	a.metrics.observeCompileErrors([]PolicyResult{{Name: "db", CompileError: "unknown rule", SpecEnforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerAppArmor}}})
	a.metrics.observeLoad(v1alpha1.EnforcerBPF, 3*time.Millisecond, nil)
	a.metrics.observeLoad(v1alpha1.EnforcerAppArmor, 300*time.Millisecond, errors.New("apparmor_parser: exit 1"))
	backends, err := compile.DefaultBackends()
	if err != nil {
		t.Fatal(err)
	}
	if _, errs := compile.Compile(compile.Policy{Kind: "ArmorPolicy", Namespace: "shop", Name: "web", Spec: v1alpha1.ArmorPolicySpec{
		Enforcers: []v1alpha1.Enforcer{v1alpha1.EnforcerBPF}, Mode: v1alpha1.ModeEnhanceProtect,
	}}, compile.Options{Backends: a.metrics.timed(backends)}); len(errs) > 0 {
		t.Fatal(errs)
	}
	a.metrics.setFeatures(v1alpha1.NodeFeatures{BPFLSM: true, AppArmor: true}, fakeKernel{}.Hooks())
	a.metrics.setFeature("apparmor_audit", true)
	a.metrics.countPodDenial("shop", "web-1", "ArmorPolicy shop/web")

	addr, stop, err := a.serveHTTP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", res.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	scraped, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	served := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		out := make([]*dto.MetricFamily, 0, len(scraped))
		for _, mf := range scraped {
			out = append(out, mf)
		}
		return out, nil
	})
	kernel := prometheus.NewRegistry()
	kernel.MustRegister(bpf.NewCollector(fakeKernel{}))
	return prometheus.Gatherers{served, kernel}
}

func TestPromlint(t *testing.T) {
	problems, err := inventory.Lint(enforcerMetrics(t))
	if err != nil {
		t.Fatal(err)
	}
	if problems != "" {
		t.Errorf("promlint found problems in the enforcer's metrics:\n%s", problems)
	}
}

// TestInventory keeps deploy/monitoring/inventory/enforcer.json, which the dashboard,
// the alerts and docs/observability.md are checked against, equal to what the
// enforcer serves.
func TestInventory(t *testing.T) {
	got, err := inventory.Gather(enforcerMetrics(t), "podarmor_")
	if err != nil {
		t.Fatal(err)
	}
	if err := inventory.Check("../../deploy/monitoring/inventory/enforcer.json", got, *update); err != nil {
		t.Error(err)
	}
}

// TestPodDenials: denials are counted per pod and policy, and a pod that leaves the
// node takes its series with it, leaving other pods' alone.
func TestPodDenials(t *testing.T) {
	m := newMetrics(&agent{})
	for range 3 {
		m.countPodDenial("shop", "web-1", "ArmorPolicy shop/web")
	}
	m.countPodDenial("shop", "web-1", "ClusterArmorPolicy default")
	m.countPodDenial("shop", "web-2", "ArmorPolicy shop/web")
	m.countPodDenial("bank", "web-1", "ArmorPolicy bank/web")
	value := func(ns, pod, policy string) float64 {
		var out dto.Metric
		if err := m.podDenials.WithLabelValues(ns, pod, policy).Write(&out); err != nil {
			t.Fatal(err)
		}
		return out.GetCounter().GetValue()
	}
	if got := value("shop", "web-1", "ArmorPolicy shop/web"); got != 3 {
		t.Errorf("shop/web-1 = %v, want 3", got)
	}
	m.forgetPod("shop", "web-1")
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.podDenials)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range s.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			left = append(left, fmt.Sprintf("%s/%s %s = %v", l["namespace"], l["pod"], l["policy"], s.GetCounter().GetValue()))
		}
	}
	want := []string{"bank/web-1 ArmorPolicy bank/web = 1", "shop/web-2 ArmorPolicy shop/web = 1"}
	slices.Sort(left)
	if !slices.Equal(left, want) {
		t.Errorf("after shop/web-1 left: %q, want %q", left, want)
	}
}

// TestServedValues reads back, from the real /metrics handler, the exact values of what
// enforcerMetrics observed: a failed AppArmor load and a policy that did not compile for
// AppArmor count one error each and nothing for the other backends, every load is timed,
// and the Go and process collectors are served beside podarmor's metrics.
func TestServedValues(t *testing.T) {
	mfs, err := enforcerMetrics(t).Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			key := mf.GetName()
			for _, lp := range s.GetLabel() {
				key += fmt.Sprintf(" %s=%s", lp.GetName(), lp.GetValue())
			}
			switch {
			case s.Counter != nil:
				got[key] = s.GetCounter().GetValue()
			case s.Gauge != nil:
				got[key] = s.GetGauge().GetValue()
			case s.Histogram != nil:
				got[key+" count"] = float64(s.GetHistogram().GetSampleCount())
				got[key+" sum"] = s.GetHistogram().GetSampleSum()
			}
		}
	}
	for key, want := range map[string]float64{
		"podarmor_enforcer_profile_load_errors_total backend=apparmor":           1,
		"podarmor_enforcer_profile_load_errors_total backend=bpf":                0,
		"podarmor_enforcer_profile_load_errors_total backend=seccomp":            0,
		"podarmor_enforcer_profile_load_duration_seconds backend=apparmor count": 1,
		"podarmor_enforcer_profile_load_duration_seconds backend=bpf count":      1,
		"podarmor_enforcer_profile_compile_errors_total backend=apparmor":        1,
		"podarmor_enforcer_profile_compile_errors_total backend=bpf":             0,
		"podarmor_enforcer_registrations_total result=ok source=reconcile":       1,
		"podarmor_enforcer_registrations_total result=error source=hook":         1,
		"podarmor_enforcer_registration_delay_seconds source=reconcile count":    1,
		"podarmor_enforcer_registration_delay_seconds source=reconcile sum":      2,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (served: %v), want %v", key, v, ok, want)
		}
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_start_time_seconds", "process_resident_memory_bytes"} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s is not served: the Go and process collectors are missing", name)
		}
	}
}
