package kube

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podarmor/podarmor/enforcer/registrar"
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
}

func newMetrics(a *agent) *metrics {
	return &metrics{
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
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.registrations, m.delay, m.applyDuration, m.profiles, m.policies, m.registered, m.unregistered, m.suppressed}
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
