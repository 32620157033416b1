package monitoring

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
)

// alertCase is one alert's unit test, as promtool's `test rules` would run it: series in
// promqltest's load notation (one sample a minute from time 0), the rule evaluated
// every minute from 0 to evalFor, as Prometheus' rule manager would, with its `for`.
type alertCase struct {
	// bad makes the alert fire by evalFor, with (at least) the labels fired.
	bad   string
	fired map[string]string
	// good is a healthy node or webhook, or trouble shorter than the alert's `for`:
	// the alert never fires.
	good string
}

// alertCases holds a case for every alert of alerts.yaml (TestAlertsFire fails on an
// alert without one).
var alertCases = map[string]alertCase{
	"PodArmorContainerUnregistered": {
		bad:   `podarmor_enforcer_containers_unregistered{node="n1"} 0x10 2x50`,
		fired: map[string]string{"node": "n1", "severity": "critical"},
		// unregistered for 3 minutes (a reconciliation catches up), shorter than for: 5m
		good: `podarmor_enforcer_containers_unregistered{node="n1"} 0x10 1x2 0x47`,
	},
	"PodArmorNRIDisconnected": {
		bad:   `podarmor_enforcer_nri_connected{node="n1"} 1x10 0x50`,
		fired: map[string]string{"node": "n1", "severity": "critical"},
		// a runtime restart: disconnected for a minute
		good: `podarmor_enforcer_nri_connected{node="n1"} 1x10 0x1 1x49`,
	},
	"PodArmorProfileLoadFailed": {
		bad: `podarmor_enforcer_profiles{node="n1",enforcer="AppArmor",state="Failed"} 1x60
		      podarmor_enforcer_profiles{node="n1",enforcer="AppArmor",state="Loaded"} 4x60`,
		fired: map[string]string{"node": "n1", "enforcer": "AppArmor"},
		good: `podarmor_enforcer_profiles{node="n1",enforcer="AppArmor",state="Failed"} 0x60
		       podarmor_enforcer_profiles{node="n1",enforcer="AppArmor",state="Loaded"} 5x60`,
	},
	"PodArmorPolicyNotReady": {
		bad:   `podarmor_enforcer_policies{node="n1",state="compile_error"} 0x5 1x55`,
		fired: map[string]string{"node": "n1", "state": "compile_error"},
		good: `podarmor_enforcer_policies{node="n1",state="ready"} 3x60
		       podarmor_enforcer_policies{node="n1",state="failed"} 0x60
		       podarmor_enforcer_policies{node="n1",state="compile_error"} 0x60`,
	},
	"PodArmorEventsDropped": {
		bad:   `podarmor_enforcer_events_dropped_total{node="n1",reason="ringbuf"} 0+50x60`,
		fired: map[string]string{"node": "n1", "reason": "ringbuf"},
		good:  `podarmor_enforcer_events_dropped_total{node="n1",reason="ringbuf"} 7x60`,
	},
	"PodArmorDecisionsUncounted": {
		bad:   `podarmor_enforcer_decisions_uncounted_total{node="n1"} 0x20 0+3x40`,
		fired: map[string]string{"node": "n1", "severity": "warning"},
		good:  `podarmor_enforcer_decisions_uncounted_total{node="n1"} 4x60`,
	},
	"PodArmorLSMHookMissing": {
		bad: `podarmor_enforcer_lsm_hook_attached{node="n1",hook="userns_create"} 0x60
		      podarmor_enforcer_lsm_hook_attached{node="n1",hook="file_open"} 1x60`,
		fired: map[string]string{"node": "n1", "hook": "userns_create", "severity": "info"},
		good:  `podarmor_enforcer_lsm_hook_attached{node="n1",hook="userns_create"} 1x60`,
	},
	"PodArmorProfileLoadErrors": {
		bad:   `podarmor_enforcer_profile_load_errors_total{node="n1",backend="apparmor"} 0x30 1x30`,
		fired: map[string]string{"node": "n1", "backend": "apparmor"},
		good: `podarmor_enforcer_profile_load_errors_total{node="n1",backend="apparmor"} 0x60
		       podarmor_enforcer_profile_load_duration_seconds_count{node="n1",backend="apparmor"} 0+3x60`,
	},
	"PodArmorProfileCompileErrors": {
		bad:   `podarmor_enforcer_profile_compile_errors_total{node="n1",backend="bpf"} 0x20 0+2x40`,
		fired: map[string]string{"node": "n1", "backend": "bpf"},
		good:  `podarmor_enforcer_profile_compile_errors_total{node="n1",backend="bpf"} 2x60`,
	},
	"PodArmorBPFMapNearlyFull": {
		bad: `podarmor_enforcer_bpf_map_entries{node="n1",map="containers"} 3800x60
		      podarmor_enforcer_bpf_map_max_entries{node="n1",map="containers"} 4096x60
		      podarmor_enforcer_bpf_map_entries{node="n1",map="dfa_trans"} 100x60
		      podarmor_enforcer_bpf_map_max_entries{node="n1",map="dfa_trans"} 4194304x60`,
		fired: map[string]string{"node": "n1", "map": "containers"},
		good: `podarmor_enforcer_bpf_map_entries{node="n1",map="containers"} 3000x60
		       podarmor_enforcer_bpf_map_max_entries{node="n1",map="containers"} 4096x60`,
	},
	"PodArmorWebhookErrors": {
		bad: `podarmor_webhook_http_requests_total{webhook="mutate-pods",result="error"} 0+2x60
		      podarmor_webhook_http_requests_total{webhook="mutate-pods",result="answered"} 0+100x60`,
		fired: map[string]string{"webhook": "mutate-pods"},
		good: `podarmor_webhook_http_requests_total{webhook="mutate-pods",result="error"} 0x60
		       podarmor_webhook_http_requests_total{webhook="mutate-pods",result="answered"} 0+100x60`,
	},
	"PodArmorWebhookReviewErrors": {
		bad:   `podarmor_webhook_admission_reviews_total{webhook="mutate-pods",operation="create",result="error"} 0+1x60`,
		fired: map[string]string{"webhook": "mutate-pods", "operation": "create"},
		good: `podarmor_webhook_admission_reviews_total{webhook="mutate-pods",operation="create",result="error"} 0x60
		       podarmor_webhook_admission_reviews_total{webhook="mutate-pods",operation="create",result="mutated"} 0+60x60`,
	},
	"PodArmorWebhookSlow": {
		// 10% of the answers take between 0.1 and 0.5 s: the p99 is near 0.46 s.
		bad: `podarmor_webhook_request_duration_seconds_bucket{webhook="mutate-pods",le="0.1"} 0+90x60
		      podarmor_webhook_request_duration_seconds_bucket{webhook="mutate-pods",le="0.5"} 0+100x60
		      podarmor_webhook_request_duration_seconds_bucket{webhook="mutate-pods",le="+Inf"} 0+100x60`,
		fired: map[string]string{"webhook": "mutate-pods"},
		good: `podarmor_webhook_request_duration_seconds_bucket{webhook="mutate-pods",le="0.001"} 0+100x60
		       podarmor_webhook_request_duration_seconds_bucket{webhook="mutate-pods",le="0.1"} 0+100x60
		       podarmor_webhook_request_duration_seconds_bucket{webhook="mutate-pods",le="0.5"} 0+100x60
		       podarmor_webhook_request_duration_seconds_bucket{webhook="mutate-pods",le="+Inf"} 0+100x60`,
	},
}

// evalFor is how long each case is evaluated: longer than every alert's for.
const evalFor = 55 * time.Minute

// TestAlertsFire evaluates every alert of alerts.yaml with Prometheus' own rule engine
// (the code promtool's rule unit tests run) on synthetic series: each must fire on its
// bad series, with its labels and with annotations that expand, and stay silent on its
// good one.
func TestAlertsFire(t *testing.T) {
	r := loadRules(t)
	seen := map[string]bool{}
	for _, g := range r.Spec.Groups {
		for _, rl := range g.Rules {
			seen[rl.Alert] = true
			tc, ok := alertCases[rl.Alert]
			if !ok {
				t.Errorf("alert %s has no case in alertCases", rl.Alert)
				continue
			}
			t.Run(rl.Alert, func(t *testing.T) {
				if d, err := model.ParseDuration(rl.For); err != nil || time.Duration(d) >= evalFor {
					t.Fatalf("for %q: %v (the cases are evaluated for %v)", rl.For, err, evalFor)
				}
				t.Run("fires on the bad series", func(t *testing.T) {
					firing := evalAlert(t, rl, tc.bad)
					if len(firing) == 0 {
						t.Fatalf("did not fire on\n%s", tc.bad)
					}
					a := firing[0]
					for k, v := range tc.fired {
						if got := a.Labels.Get(k); got != v {
							t.Errorf("label %s = %q, want %q (labels %s)", k, got, v, a.Labels)
						}
					}
					if got := a.Labels.Get("alertname"); got != rl.Alert {
						t.Errorf("alertname %q", got)
					}
					for _, name := range []string{"summary", "description"} {
						text := a.Annotations.Get(name)
						if text == "" || strings.Contains(text, "error expanding template") || strings.Contains(text, "<no value>") {
							t.Errorf("%s expands to %q", name, text)
						}
					}
					t.Logf("fired: %s: %s", a.Labels, a.Annotations.Get("summary"))
				})
				t.Run("stays silent on the good series", func(t *testing.T) {
					if firing := evalAlert(t, rl, tc.good); len(firing) > 0 {
						t.Errorf("fired on\n%s\nas %s", tc.good, firing[0].Labels)
					}
				})
			})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(alertCases)) {
		if !seen[name] {
			t.Errorf("alertCases has %s, which alerts.yaml does not", name)
		}
	}
}

// evalAlert loads series and evaluates rl every minute from 0 to evalFor, and returns
// the alerts firing at the end, or at any earlier evaluation.
func evalAlert(t *testing.T, rl rule, series string) []*rules.Alert {
	t.Helper()
	storage := promqltest.LoadedStorage(t, "load 1m\n"+indent(series))
	t.Cleanup(func() { storage.Close() })
	engine := promqltest.NewTestEngine(t, false, 5*time.Minute, promqltest.DefaultMaxSamplesPerQuery)
	expr, err := parser.ParseExpr(rl.Expr)
	if err != nil {
		t.Fatal(err)
	}
	hold, err := model.ParseDuration(rl.For)
	if err != nil {
		t.Fatal(err)
	}
	alert := rules.NewAlertingRule(rl.Alert, expr, time.Duration(hold), 0,
		labels.FromMap(rl.Labels), labels.FromMap(rl.Annotations), labels.EmptyLabels(), "", true, nil)
	query := rules.EngineQueryFunc(engine, storage)
	var firing []*rules.Alert
	for ts := time.Duration(0); ts <= evalFor; ts += time.Minute {
		if _, err := alert.Eval(context.Background(), 0, time.Unix(0, 0).Add(ts).UTC(), query, nil, 0); err != nil {
			t.Fatalf("evaluate at %v: %v", ts, err)
		}
		for _, a := range alert.ActiveAlerts() {
			if a.State == rules.StateFiring {
				firing = append(firing, a)
			}
		}
	}
	return firing
}

// indent puts every line of series under the load command.
func indent(series string) string {
	var b strings.Builder
	for _, line := range strings.Split(series, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			b.WriteString("  " + line + "\n")
		}
	}
	return b.String()
}
