// Package metrics is the Prometheus side of the webhook's metrics. Every label has a
// fixed set of values: webhook paths, operations, results and admission outcomes.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podarmor/podarmor/webhook/admission"
)

// Recorder implements server.Metrics with Prometheus collectors.
type Recorder struct {
	reviews   *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	decisions *prometheus.CounterVec
	outcomes  *prometheus.CounterVec
}

// LatencyBuckets start at 100 µs: the handler answers in well under a millisecond, and
// coarser buckets would hide a regression.
var LatencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// New registers the webhook's collectors with reg. cacheSize reports the number of
// policies in the cache when scraped.
func New(reg prometheus.Registerer, cacheSize func() int) (*Recorder, error) {
	r := &Recorder{
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podarmor_webhook_http_requests_total",
			Help: "HTTP requests to each webhook, by whether they were answered, malformed (bad-request) or failed (error).",
		}, []string{"webhook", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "podarmor_webhook_request_duration_seconds",
			Help:    "Time to answer an admission review, from request to response, by webhook.",
			Buckets: LatencyBuckets,
		}, []string{"webhook"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podarmor_webhook_admission_reviews_total",
			Help: "Admission reviews answered, by webhook, operation and result (mutated, unchanged, allowed, denied, error).",
		}, []string{"webhook", "operation", "result"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podarmor_webhook_pod_outcomes_total",
			Help: "What the webhook decided for admitted or refused pods (confined, opted-out, kept-own-apparmor, rejected-not-ready, ...).",
		}, []string{"outcome"}),
	}
	size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "podarmor_webhook_policy_cache_policies",
		Help: "ArmorPolicies and ClusterArmorPolicies in the webhook's cache.",
	}, func() float64 { return float64(cacheSize()) })
	for _, c := range []prometheus.Collector{r.reviews, r.latency, r.decisions, r.outcomes, size} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Every outcome exists from the start, so rate() and alerts see a zero, not nothing.
	for _, o := range admission.Outcomes {
		r.outcomes.WithLabelValues(string(o))
	}
	return r, nil
}

// Review implements server.Metrics.
func (r *Recorder) Review(webhook, httpResult string, d time.Duration) {
	r.reviews.WithLabelValues(webhook, httpResult).Inc()
	r.latency.WithLabelValues(webhook).Observe(d.Seconds())
}

// Decision implements server.Metrics.
func (r *Recorder) Decision(webhook, operation, result string) {
	r.decisions.WithLabelValues(webhook, operation, result).Inc()
}

// Outcome implements server.Metrics.
func (r *Recorder) Outcome(o admission.Outcome) {
	r.outcomes.WithLabelValues(string(o)).Inc()
}
