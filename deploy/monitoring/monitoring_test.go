// Package monitoring holds podarmor's Prometheus Operator manifests, Grafana dashboard
// and alerts; its tests check them against the metrics the binaries really export
// (deploy/monitoring/inventory) and keep docs/observability.md's tables current.
package monitoring

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/deploy/monitoring/inventory"
)

var update = flag.Bool("update", false, "rewrite the generated tables of docs/observability.md")

// targetLabels are the labels Prometheus and the ServiceMonitors add to every series
// (servicemonitors.yaml relabels the enforcer's node into node).
var targetLabels = []string{"instance", "job", "namespace", "pod", "service", "endpoint", "container", "node"}

// series maps every series name the binaries export to its family.
func series(t *testing.T) map[string]inventory.Metric {
	t.Helper()
	out := map[string]inventory.Metric{}
	for _, b := range inventory.Binaries {
		ms, err := inventory.Load(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.Type == "histogram" || m.Type == "summary" {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if m.Type == "summary" && suffix == "_bucket" {
						continue
					}
					mm := m
					if suffix == "_bucket" {
						mm.Labels = append(slices.Clone(m.Labels), "le")
					}
					out[m.Name+suffix] = mm
				}
				continue
			}
			out[m.Name] = m
		}
	}
	return out
}

// checkExpr parses a PromQL expression and checks that every metric it selects is
// exported, and that every label it matches or groups by is one of the selected
// metrics' labels or a target label. Grafana's $__rate_interval stands for a range. It
// returns the families the expression selects.
func checkExpr(known map[string]inventory.Metric, expr string) ([]string, error) {
	e := strings.ReplaceAll(expr, "$__rate_interval", "5m")
	if strings.Contains(e, "$") {
		return nil, fmt.Errorf("%q uses a template variable other than $__rate_interval", expr)
	}
	ast, err := parser.ParseExpr(e)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", expr, err)
	}
	var families []string
	var errs []string
	labels := slices.Clone(targetLabels)
	var selectors int
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		selectors++
		m, ok := known[vs.Name]
		if !ok {
			errs = append(errs, fmt.Sprintf("metric %q is not exported by any binary", vs.Name))
			return nil
		}
		labels = append(labels, m.Labels...)
		families = append(families, m.Name)
		for _, lm := range vs.LabelMatchers {
			if lm.Name != model.MetricNameLabel && !slices.Contains(m.Labels, lm.Name) && !slices.Contains(targetLabels, lm.Name) {
				errs = append(errs, fmt.Sprintf("%s has no label %q", vs.Name, lm.Name))
			}
		}
		return nil
	})
	if selectors == 0 {
		errs = append(errs, "selects no metric")
	}
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		if agg, ok := node.(*parser.AggregateExpr); ok {
			for _, l := range agg.Grouping {
				if !slices.Contains(labels, l) {
					errs = append(errs, fmt.Sprintf("groups by %q, which none of its metrics has", l))
				}
			}
		}
		return nil
	})
	if len(errs) > 0 {
		return nil, fmt.Errorf("%q: %s", expr, strings.Join(errs, "; "))
	}
	return families, nil
}

func TestOutputLabels(t *testing.T) {
	tests := map[string]struct {
		expr string
		want []string
	}{
		"the outermost by clause":                {expr: `histogram_quantile(0.9, sum by (le, webhook) (rate(x_bucket[5m]))) > 1`, want: []string{"le", "webhook"}},
		"no aggregation leaves the labels open":  {expr: `x > 0`},
		"without leaves the labels open as well": {expr: `sum without (rule) (x) > 0`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := outputLabels(tc.expr)
			if tc.want == nil {
				if err == nil {
					t.Errorf("outputLabels = %v, want an error", got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("outputLabels = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestCheckExprCatchesMistakes(t *testing.T) {
	known := series(t)
	tests := map[string]struct {
		expr string
		want string
	}{
		"a valid expression passes":        {expr: `sum by (profile) (rate(podarmor_enforcer_decisions_total{action="enforce"}[$__rate_interval]))`},
		"a histogram's buckets are series": {expr: `histogram_quantile(0.9, sum by (le) (rate(podarmor_webhook_request_duration_seconds_bucket[5m])))`},
		"a syntax error":                   {expr: `sum by (profile (podarmor_enforcer_decisions_total)`, want: "parse error"},
		"a metric nobody exports":          {expr: `podarmor_enforcer_decisions`, want: "not exported"},
		"a label the metric lacks":         {expr: `podarmor_enforcer_decisions_total{policy="x"}`, want: `no label "policy"`},
		"a grouping by a missing label":    {expr: `sum by (policy) (podarmor_enforcer_decisions_total)`, want: `groups by "policy"`},
		"an unknown Grafana variable":      {expr: `podarmor_enforcer_decisions_total{node="$node"}`, want: "template variable"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := checkExpr(known, tc.expr)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("checkExpr: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("checkExpr = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// dashboard is the part of Grafana's dashboard model podarmor's dashboard uses; it
// decodes strictly, so a misspelt field fails.
type dashboard struct {
	UID           string   `json:"uid"`
	Title         string   `json:"title"`
	Description   string   `json:"description"`
	Tags          []string `json:"tags"`
	Timezone      string   `json:"timezone"`
	Editable      bool     `json:"editable"`
	GraphTooltip  int      `json:"graphTooltip"`
	Refresh       string   `json:"refresh"`
	SchemaVersion int      `json:"schemaVersion"`
	Version       int      `json:"version"`
	Time          struct{ From, To string }
	Templating    struct{ List []json.RawMessage }
	Annotations   struct{ List []json.RawMessage }
	Panels        []panel `json:"panels"`
}

type panel struct {
	ID          int                      `json:"id"`
	Type        string                   `json:"type"`
	Title       string                   `json:"title"`
	Description string                   `json:"description"`
	Collapsed   bool                     `json:"collapsed"`
	Datasource  *datasource              `json:"datasource"`
	GridPos     struct{ H, W, X, Y int } `json:"gridPos"`
	Targets     []target                 `json:"targets"`
	FieldConfig json.RawMessage          `json:"fieldConfig"`
	Options     json.RawMessage          `json:"options"`
	Panels      []panel                  `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID        string      `json:"refId"`
	Datasource   *datasource `json:"datasource"`
	Expr         string      `json:"expr"`
	LegendFormat string      `json:"legendFormat"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile("dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	return d
}

func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	known := series(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 || len(d.Panels) == 0 {
		t.Fatalf("dashboard.json lacks uid, title, schemaVersion or panels: uid %q title %q schemaVersion %d, %d panels", d.UID, d.Title, d.SchemaVersion, len(d.Panels))
	}
	ids := map[int]bool{}
	used := map[string]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			if len(p.Targets) > 0 || len(p.Panels) > 0 {
				t.Errorf("row %q holds targets or panels; podarmor's rows are open and empty", p.Title)
			}
			continue
		}
		if p.Title == "" || p.Description == "" || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %d (%q) needs a title, a description and a size", p.ID, p.Title)
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q must use the Prometheus data source variable ${datasource}, has %+v", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target refId %q is empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			families, err := checkExpr(known, tg.Expr)
			if err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
			}
			for _, f := range families {
				used[f] = true
			}
		}
	}
	// Every metric a binary exports has a panel (a new metric needs one too).
	for _, m := range known {
		if !used[m.Name] {
			t.Errorf("no panel shows %s", m.Name)
		}
	}
	if len(d.Templating.List) == 0 || !bytes.Contains(d.Templating.List[0], []byte(`"name": "datasource"`)) && !bytes.Contains(d.Templating.List[0], []byte(`"name":"datasource"`)) {
		t.Error("the dashboard's first variable must be the data source, named datasource")
	}
}

// prometheusRule is the part of the Prometheus Operator's PrometheusRule podarmor uses.
type prometheusRule struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []rule `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

type objectMeta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func loadRules(t *testing.T) prometheusRule {
	t.Helper()
	docs := documents(t, "alerts.yaml")
	if len(docs) != 1 {
		t.Fatalf("alerts.yaml has %d documents, want 1", len(docs))
	}
	var r prometheusRule
	if err := yaml.UnmarshalStrict(docs[0], &r); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	return r
}

// annotationTemplate parses an annotation as Prometheus does, with $labels and $value
// defined.
func annotationTemplate(text string) error {
	_, err := template.New("annotation").Option("missingkey=zero").
		Parse("{{$labels := .Labels}}{{$value := .Value}}" + text)
	return err
}

// labelRef finds the labels an alert's annotation uses.
var labelRef = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)

// outputLabels are the labels an alert expression's result keeps: those of its
// outermost aggregation's by clause. podarmor's alerts all aggregate, so that their
// labels are known.
func outputLabels(expr string) ([]string, error) {
	ast, err := parser.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var outer *parser.AggregateExpr
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		if agg, ok := node.(*parser.AggregateExpr); ok && outer == nil {
			outer = agg
		}
		return nil
	})
	if outer == nil || outer.Without {
		return nil, fmt.Errorf("%q does not aggregate by labels; use an aggregation with by, so the alert's labels are known", expr)
	}
	return outer.Grouping, nil
}

func TestAlerts(t *testing.T) {
	r := loadRules(t)
	known := series(t)
	if r.APIVersion != "monitoring.coreos.com/v1" || r.Kind != "PrometheusRule" {
		t.Errorf("alerts.yaml is %s %s, want monitoring.coreos.com/v1 PrometheusRule", r.APIVersion, r.Kind)
	}
	if r.Metadata.Namespace != "podarmor-system" || r.Metadata.Name == "" {
		t.Errorf("alerts.yaml metadata = %+v, want a name in podarmor-system", r.Metadata)
	}
	names := map[string]bool{}
	for _, g := range r.Spec.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("rule group %q is unnamed or empty", g.Name)
		}
		for _, rl := range g.Rules {
			if rl.Alert == "" || names[rl.Alert] {
				t.Errorf("alert name %q is empty or repeated", rl.Alert)
			}
			names[rl.Alert] = true
			if _, err := checkExpr(known, rl.Expr); err != nil {
				t.Errorf("%s: %v", rl.Alert, err)
			} else if out, err := outputLabels(rl.Expr); err != nil {
				t.Errorf("%s: %v", rl.Alert, err)
			} else {
				for _, a := range rl.Annotations {
					for _, m := range labelRef.FindAllStringSubmatch(a, -1) {
						if !slices.Contains(out, m[1]) {
							t.Errorf("%s: an annotation uses $labels.%s, which the expression's result does not have (it has %v)", rl.Alert, m[1], out)
						}
					}
				}
			}
			if d, err := model.ParseDuration(rl.For); err != nil || d <= 0 {
				t.Errorf("%s: for %q is not a positive duration (%v)", rl.Alert, rl.For, err)
			}
			if s := rl.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("%s: severity %q, want critical, warning or info", rl.Alert, s)
			}
			for _, a := range []string{"summary", "description"} {
				text := rl.Annotations[a]
				if strings.TrimSpace(text) == "" {
					t.Errorf("%s has no %s annotation", rl.Alert, a)
				} else if err := annotationTemplate(text); err != nil {
					t.Errorf("%s: %s: %v", rl.Alert, a, err)
				}
			}
		}
	}
	for _, want := range []string{"PodArmorContainerUnregistered", "PodArmorProfileLoadFailed", "PodArmorPolicyNotReady", "PodArmorEventsDropped", "PodArmorWebhookErrors", "PodArmorWebhookSlow"} {
		if !names[want] {
			t.Errorf("alert %s is missing", want)
		}
	}
}

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor podarmor uses.
type serviceMonitor struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port        string `json:"port"`
			Path        string `json:"path"`
			Interval    string `json:"interval"`
			Relabelings []struct {
				SourceLabels []string `json:"sourceLabels"`
				TargetLabel  string   `json:"targetLabel"`
			} `json:"relabelings"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// TestServiceMonitors checks that each binary has a ServiceMonitor whose selector and
// port match a Service in services.yaml.
func TestServiceMonitors(t *testing.T) {
	var services []corev1.Service
	for _, doc := range documents(t, "services.yaml") {
		var s corev1.Service
		if err := yaml.UnmarshalStrict(doc, &s); err != nil {
			t.Fatalf("services.yaml: %v", err)
		}
		if s.APIVersion != "v1" || s.Kind != "Service" {
			t.Errorf("services.yaml: %s is %s %s, want v1 Service", s.Name, s.APIVersion, s.Kind)
		}
		services = append(services, s)
	}
	seen := map[string]bool{}
	for _, doc := range documents(t, "servicemonitors.yaml") {
		var sm serviceMonitor
		if err := yaml.UnmarshalStrict(doc, &sm); err != nil {
			t.Fatalf("servicemonitors.yaml: %v", err)
		}
		if sm.APIVersion != "monitoring.coreos.com/v1" || sm.Kind != "ServiceMonitor" {
			t.Errorf("%s is %s %s, want monitoring.coreos.com/v1 ServiceMonitor", sm.Metadata.Name, sm.APIVersion, sm.Kind)
		}
		app := sm.Spec.Selector.MatchLabels["app.kubernetes.io/name"]
		seen[app] = true
		if sm.Metadata.Namespace != "podarmor-system" || !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{"podarmor-system"}) {
			t.Errorf("%s must live in and watch podarmor-system", sm.Metadata.Name)
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || sm.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("%s: want one endpoint, port metrics, path /metrics", sm.Metadata.Name)
			continue
		}
		if d, err := model.ParseDuration(sm.Spec.Endpoints[0].Interval); err != nil || d <= 0 {
			t.Errorf("%s: interval %q: %v", sm.Metadata.Name, sm.Spec.Endpoints[0].Interval, err)
		}
		matched := false
		for _, s := range services {
			if s.Namespace != sm.Metadata.Namespace || s.Labels["app.kubernetes.io/name"] != app {
				continue
			}
			for _, p := range s.Spec.Ports {
				if p.Name == "metrics" {
					matched = true
				}
			}
		}
		if !matched {
			t.Errorf("%s selects no Service with a port named metrics in services.yaml", sm.Metadata.Name)
		}
	}
	for _, app := range []string{"podarmor-webhook", "podarmor-enforcer"} {
		if !seen[app] {
			t.Errorf("no ServiceMonitor selects %s", app)
		}
	}
}

// documents splits a multi-document YAML file.
func documents(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			out = append(out, doc)
		}
	}
	return out
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}
