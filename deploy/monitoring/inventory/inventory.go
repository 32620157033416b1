// Package inventory is the list of metrics each podarmor binary exports, kept in
// webhook.json and enforcer.json beside this file. The metrics tests of each binary
// (webhook/metrics, enforcer/kube) gather the binary's real registry, lint it with
// promlint and compare it with its file; the dashboard and alert tests
// (deploy/monitoring) and docs/observability.md read the files back through Load. A
// renamed metric therefore fails its binary's test until the file is regenerated
// (`make update-docs`), and then fails every dashboard panel and alert still using the
// old name.
package inventory

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

// Binaries are the binaries with an inventory, by file name without ".json".
var Binaries = []string{"webhook", "enforcer"}

// Metric is one metric family a binary exports.
type Metric struct {
	Name string `json:"name"`
	// Type is Prometheus' name for it: counter, gauge, histogram, summary.
	Type string `json:"type"`
	Help string `json:"help"`
	// Labels are the label names of its series, sorted; none for a single series.
	Labels []string `json:"labels,omitempty"`
}

//go:embed webhook.json enforcer.json
var files embed.FS

// Load returns the committed inventory of a binary ("webhook" or "enforcer").
func Load(binary string) ([]Metric, error) {
	data, err := files.ReadFile(binary + ".json")
	if err != nil {
		return nil, fmt.Errorf("inventory of %q: %w", binary, err)
	}
	return decode(data)
}

func decode(data []byte) ([]Metric, error) {
	var ms []Metric
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ms); err != nil {
		return nil, fmt.Errorf("decode inventory: %w", err)
	}
	return ms, nil
}

// Gather returns the metric families of g whose names start with prefix, sorted by
// name. A vector without series is not gathered at all, so a caller touches every
// vector first (an untouched one shows up in Check as gone); a family that comes with
// no series, as a scraped page may give, is an error.
func Gather(g prometheus.Gatherer, prefix string) ([]Metric, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather: %w", err)
	}
	var out []Metric
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), prefix) {
			continue
		}
		if len(mf.GetMetric()) == 0 {
			return nil, fmt.Errorf("metric %s has no series: touch it before gathering", mf.GetName())
		}
		m := Metric{Name: mf.GetName(), Type: typeName(mf.GetType()), Help: mf.GetHelp()}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if !slices.Contains(m.Labels, l.GetName()) {
					m.Labels = append(m.Labels, l.GetName())
				}
			}
		}
		sort.Strings(m.Labels)
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func typeName(t dto.MetricType) string {
	switch t {
	case dto.MetricType_COUNTER:
		return "counter"
	case dto.MetricType_GAUGE:
		return "gauge"
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return "histogram"
	case dto.MetricType_SUMMARY:
		return "summary"
	}
	return "untyped"
}

// Lint runs promlint over every family g gathers, including the Go and process
// collectors', and returns what it found, one problem a line; empty when clean.
func Lint(g prometheus.Gatherer) (string, error) {
	mfs, err := g.Gather()
	if err != nil {
		return "", fmt.Errorf("gather: %w", err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		return "", fmt.Errorf("promlint: %w", err)
	}
	var b strings.Builder
	for _, p := range problems {
		fmt.Fprintf(&b, "%s: %s\n", p.Metric, p.Text)
	}
	return b.String(), nil
}

// Check compares got with the inventory file at path. With update it writes got to
// path instead, and says nothing when the file was already current.
func Check(path string, got []Metric, update bool) error {
	want, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		return err
	}
	want = append(want, '\n')
	have, err := os.ReadFile(path)
	if err != nil && !(update && os.IsNotExist(err)) {
		return fmt.Errorf("read inventory: %w", err)
	}
	if bytes.Equal(have, want) {
		return nil
	}
	if update {
		return os.WriteFile(path, want, 0o644)
	}
	old, err := decode(have)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return fmt.Errorf("%s is stale (run `make update-docs` and review the diff):\n%s", path, diff(old, got))
}

// diff names the metrics added, removed or changed between two inventories.
func diff(old, cur []Metric) string {
	byName := map[string]Metric{}
	for _, m := range old {
		byName[m.Name] = m
	}
	var b strings.Builder
	for _, m := range cur {
		o, ok := byName[m.Name]
		switch {
		case !ok:
			fmt.Fprintf(&b, "  new: %s\n", m.Name)
		case o.Type != m.Type || o.Help != m.Help || !slices.Equal(o.Labels, m.Labels):
			fmt.Fprintf(&b, "  changed: %s (type %s -> %s, labels %v -> %v, help changed: %t)\n",
				m.Name, o.Type, m.Type, o.Labels, m.Labels, o.Help != m.Help)
		}
		delete(byName, m.Name)
	}
	gone := make([]string, 0, len(byName))
	for name := range byName {
		gone = append(gone, name)
	}
	sort.Strings(gone)
	for _, name := range gone {
		fmt.Fprintf(&b, "  gone: %s\n", name)
	}
	if b.Len() == 0 {
		return "  (formatting only)\n"
	}
	return b.String()
}
