package kube

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podarmor/podarmor/enforcer/bpf"
	"github.com/podarmor/podarmor/enforcer/registrar"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// metrics are the Kubernetes mode's own metrics; the BPF enforcer's decisions, drops
// and hooks come from enforcer/bpf's collector.
type metrics struct {
	registrations *prometheus.CounterVec
	delay         *prometheus.HistogramVec
	applyDuration prometheus.Histogram
	profiles      *prometheus.GaugeVec
	policies      *prometheus.GaugeVec
	registered    prometheus.GaugeFunc
	unregistered  prometheus.GaugeFunc
	suppressed    prometheus.CounterFunc

	compileDuration *prometheus.HistogramVec
	compileErrors   *prometheus.CounterVec
	loadDuration    *prometheus.HistogramVec
	loadErrors      *prometheus.CounterVec
	features        *prometheus.GaugeVec
	podDenials      *prometheus.CounterVec
	auditLost       prometheus.Counter
}

// backends are the values of the backend label: the enforcers, as the compiler's
// backends are named.
var backends = map[v1alpha1.Enforcer]string{
	v1alpha1.EnforcerBPF:      "bpf",
	v1alpha1.EnforcerAppArmor: "apparmor",
	v1alpha1.EnforcerSeccomp:  "seccomp",
}

func backendName(e v1alpha1.Enforcer) string {
	if b, ok := backends[e]; ok {
		return b
	}
	return strings.ToLower(string(e))
}

func newMetrics(a *agent) *metrics {
	m := &metrics{
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podarmor_enforcer_registrations_total",
			Help: "Registrations of sandboxed containers with the BPF enforcer, by how they came about (hook: before the first instruction; unprotected: after the hook let the container run while the enforcer was away; reconcile: found running unregistered) and result.",
		}, []string{"source", "result"}),
		delay: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "podarmor_enforcer_registration_delay_seconds",
			Help:    "How long a sandboxed container ran before it was registered, for registrations not made by the hook (those are made before the container runs).",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}, []string{"source"}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "podarmor_enforcer_policy_apply_duration_seconds",
			Help:    "Time to compile every policy and bring the node's profiles up to date after a change.",
			Buckets: prometheus.ExponentialBuckets(0.001, 3, 12),
		}),
		profiles: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "podarmor_enforcer_profiles",
			Help: "Policies' profiles on this node by enforcer and state (Loaded, Failed, Unsupported).",
		}, []string{"enforcer", "state"}),
		policies: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "podarmor_enforcer_policies",
			Help: "Policies on this node by whether every enforcer loaded them (ready) or not (failed, compile_error).",
		}, []string{"state"}),
		registered: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "podarmor_enforcer_containers_registered",
			Help: "Sandboxed containers registered with the BPF enforcer.",
		}, func() float64 { return float64(a.reg.Registered()) }),
		unregistered: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "podarmor_enforcer_containers_unregistered",
			Help: "Sandboxed containers running on the node that the last reconciliation could not register with the BPF enforcer (should be 0).",
		}, func() float64 { return float64(a.reg.Unregistered()) }),
		suppressed: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "podarmor_enforcer_pod_events_suppressed_total",
			Help: "Denials that did not become a Kubernetes Event on their pod because that pod and rule had used up their budget (every denial is still counted and logged).",
		}, func() float64 { return float64(a.podEvents.Suppressed()) }),
		compileDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "podarmor_enforcer_profile_compile_duration_seconds",
			Help:    "Time a backend (bpf, apparmor, seccomp) took to render one policy's profile.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"backend"}),
		compileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podarmor_enforcer_profile_compile_errors_total",
			Help: "Policies that did not compile on this node, counted at each attempt once per backend the policy names (the policy is then enforced by none of them).",
		}, []string{"backend"}),
		loadDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "podarmor_enforcer_profile_load_duration_seconds",
			Help:    "Time to load one profile into its enforcer: BPF rule tables written, apparmor_parser run, seccomp file written; failed loads included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"backend"}),
		loadErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podarmor_enforcer_profile_load_errors_total",
			Help: "Profiles an enforcer failed to load (the previous version, if any, stays loaded; the policy is not ready).",
		}, []string{"backend"}),
		features: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "podarmor_enforcer_kernel_feature",
			Help: "1 when the node offers a feature podarmor uses, 0 when not: bpf_lsm, apparmor, seccomp, apparmor_audit (the audit log that reports AppArmor's decisions can be read), and lsm_hook/<hook> for each LSM hook of the BPF programs (probed when BPF LSM is available).",
		}, []string{"feature"}),
		podDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podarmor_enforcer_pod_denials_total",
			Help: "Denials (BPF and AppArmor) of the containers of a pod on this node, by namespace, pod and policy, counted from the events the enforcer receives: a lower bound when events are dropped or rate-limited (decisions_total is exact). A pod's series are deleted when it leaves the node.",
		}, []string{"namespace", "pod", "policy"}),
		auditLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podarmor_enforcer_audit_overflows_total",
			Help: "Times the kernel reported that audit records (AppArmor's decisions) were lost because the enforcer's audit socket buffer was full.",
		}),
	}
	for _, b := range backends {
		m.compileErrors.WithLabelValues(b)
		m.loadErrors.WithLabelValues(b)
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.registrations, m.delay, m.applyDuration, m.profiles, m.policies, m.registered, m.unregistered, m.suppressed,
		m.compileDuration, m.compileErrors, m.loadDuration, m.loadErrors, m.features, m.podDenials, m.auditLost}
}

// observeLoad is profiles.Config.Observe.
func (m *metrics) observeLoad(e v1alpha1.Enforcer, took time.Duration, err error) {
	b := backendName(e)
	m.loadDuration.WithLabelValues(b).Observe(took.Seconds())
	if err != nil {
		m.loadErrors.WithLabelValues(b).Inc()
	}
}

// observeCompileErrors counts the policies that did not compile, once per enforcer
// each names.
func (m *metrics) observeCompileErrors(failed []PolicyResult) {
	for _, f := range failed {
		for _, e := range f.SpecEnforcers {
			m.compileErrors.WithLabelValues(backendName(e)).Inc()
		}
	}
}

// timed wraps the compiler's backends so that each render is observed.
func (m *metrics) timed(bs map[v1alpha1.Enforcer]compile.Backend) map[v1alpha1.Enforcer]compile.Backend {
	out := make(map[v1alpha1.Enforcer]compile.Backend, len(bs))
	for e, b := range bs {
		out[e] = timedBackend{Backend: b, duration: m.compileDuration.WithLabelValues(backendName(e))}
	}
	return out
}

// timedBackend is a compiler backend whose renders are timed.
type timedBackend struct {
	compile.Backend
	duration prometheus.Observer
}

func (b timedBackend) Render(rs *ruleset.RuleSet) ([]byte, error) {
	start := time.Now()
	out, err := b.Backend.Render(rs)
	b.duration.Observe(time.Since(start).Seconds())
	return out, err
}

// setFeatures publishes what the node's kernel offers, as the node status reports it,
// and which LSM hooks the BPF programs found.
func (m *metrics) setFeatures(f v1alpha1.NodeFeatures, hooks []bpf.Hook) {
	flag := func(name string, on bool) {
		v := 0.0
		if on {
			v = 1
		}
		m.features.WithLabelValues(name).Set(v)
	}
	flag("bpf_lsm", f.BPFLSM)
	flag("apparmor", f.AppArmor)
	flag("seccomp", f.Seccomp)
	for _, h := range hooks {
		flag("lsm_hook/"+h.Name, h.Attached)
	}
}

// setFeature publishes one feature flag.
func (m *metrics) setFeature(name string, on bool) {
	v := 0.0
	if on {
		v = 1
	}
	m.features.WithLabelValues(name).Set(v)
}

// countPodDenial counts a denial of a container of pod namespace/name.
func (m *metrics) countPodDenial(namespace, name, policy string) {
	m.podDenials.WithLabelValues(namespace, name, policy).Inc()
}

// forgetPod deletes the denial counters of a pod that left the node, which keeps their
// number bounded by the pods on the node.
func (m *metrics) forgetPod(namespace, name string) {
	m.podDenials.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "pod": name})
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

func (m *metrics) observeRegistration(src registrar.Source, _ string, delay time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.registrations.WithLabelValues(string(src), result).Inc()
	if err == nil && src != registrar.SourceHook {
		m.delay.WithLabelValues(string(src)).Observe(delay.Seconds())
	}
}

func (m *metrics) observeApply(results []PolicyResult, took time.Duration) {
	m.applyDuration.Observe(took.Seconds())
	m.profiles.Reset()
	m.policies.Reset()
	for _, st := range []string{"ready", "failed", "compile_error"} {
		m.policies.WithLabelValues(st)
	}
	for _, r := range results {
		switch {
		case r.CompileError != "":
			m.policies.WithLabelValues("compile_error").Inc()
		case r.Ready():
			m.policies.WithLabelValues("ready").Inc()
		default:
			m.policies.WithLabelValues("failed").Inc()
		}
		for _, e := range r.Enforcers {
			m.profiles.WithLabelValues(string(e.Enforcer), string(e.State)).Inc()
		}
	}
}
