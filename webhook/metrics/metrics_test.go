package metrics_test

import (
	"flag"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/podarmor/podarmor/deploy/monitoring/inventory"
	"github.com/podarmor/podarmor/webhook/admission"
	"github.com/podarmor/podarmor/webhook/metrics"
)

var update = flag.Bool("update", false, "rewrite deploy/monitoring/inventory/webhook.json")

// registry is what podarmor-webhook serves on /metrics (webhook/cmd/podarmor-webhook):
// the Go and process collectors and the Recorder's, with every vector touched once so
// each family is gathered.
func registry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rec, err := metrics.New(reg, func() int { return 3 })
	if err != nil {
		t.Fatal(err)
	}
	rec.Review("mutate-pods", "answered", 300*time.Microsecond)
	rec.Decision("mutate-pods", "CREATE", "mutated")
	rec.Outcome(admission.OutcomeConfined)
	return reg
}

func TestPromlint(t *testing.T) {
	problems, err := inventory.Lint(registry(t))
	if err != nil {
		t.Fatal(err)
	}
	if problems != "" {
		t.Errorf("promlint found problems in the webhook's metrics:\n%s", problems)
	}
}

// TestInventory keeps deploy/monitoring/inventory/webhook.json, which the dashboard,
// the alerts and docs/observability.md are checked against, equal to the registry.
func TestInventory(t *testing.T) {
	got, err := inventory.Gather(registry(t), "podarmor_")
	if err != nil {
		t.Fatal(err)
	}
	if err := inventory.Check("../../deploy/monitoring/inventory/webhook.json", got, *update); err != nil {
		t.Error(err)
	}
}

func TestRecorder(t *testing.T) {
	reg := prometheus.NewRegistry()
	rec, err := metrics.New(reg, func() int { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.New(reg, func() int { return 0 }); err == nil {
		t.Error("registering the webhook's collectors twice in one registry succeeded")
	}
	rec.Review("validate-pods", "error", time.Millisecond)
	rec.Review("validate-pods", "answered", time.Millisecond)
	rec.Review("validate-pods", "answered", 2*time.Millisecond)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "podarmor_webhook_http_requests_total":
			got := map[string]float64{}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "result" {
						got[l.GetValue()] = m.GetCounter().GetValue()
					}
				}
			}
			if got["answered"] != 2 || got["error"] != 1 {
				t.Errorf("requests by result = %v, want answered 2, error 1", got)
			}
		case "podarmor_webhook_request_duration_seconds":
			if n := mf.GetMetric()[0].GetHistogram().GetSampleCount(); n != 3 {
				t.Errorf("latency observations = %d, want 3", n)
			}
		case "podarmor_webhook_pod_outcomes_total":
			if len(mf.GetMetric()) != len(admission.Outcomes) {
				t.Errorf("pod outcomes has %d series before any pod, want one per outcome (%d)", len(mf.GetMetric()), len(admission.Outcomes))
			}
		}
	}
}
