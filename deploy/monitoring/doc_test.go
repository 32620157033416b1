package monitoring

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/deploy/monitoring/inventory"
)

const docPath = "../../docs/observability.md"

// generated matches one generated section of docs/observability.md.
var generated = regexp.MustCompile(`(?s)(<!-- BEGIN GENERATED ([a-z-]+)[^>]*-->\n).*?(<!-- END GENERATED [a-z-]+ -->)`)

// sections renders the generated sections: the metrics of each binary, and the alerts.
func sections(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, b := range inventory.Binaries {
		ms, err := inventory.Load(b)
		if err != nil {
			t.Fatal(err)
		}
		var s strings.Builder
		s.WriteString("| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n")
		for _, m := range ms {
			labels := "-"
			if len(m.Labels) > 0 {
				labels = "`" + strings.Join(m.Labels, "`, `") + "`"
			}
			fmt.Fprintf(&s, "| `%s` | %s | %s | %s |\n", m.Name, m.Type, labels, cell(m.Help))
		}
		out["metrics-"+b] = s.String()
	}
	var s strings.Builder
	s.WriteString("| Alert | Severity | For | Fires when | Summary |\n|---|---|---|---|---|\n")
	for _, g := range loadRules(t).Spec.Groups {
		for _, r := range g.Rules {
			fmt.Fprintf(&s, "| `%s` | %s | %s | `%s` | %s |\n", r.Alert, r.Labels["severity"], r.For, cell(r.Expr), cell(r.Annotations["summary"]))
		}
	}
	out["alerts"] = s.String()
	return out
}

func cell(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "|", `\|`)
}

// TestObservabilityDoc keeps the tables of docs/observability.md equal to the
// inventories and alerts.yaml; -update rewrites them.
func TestObservabilityDoc(t *testing.T) {
	data, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	want := sections(t)
	seen := map[string]bool{}
	var missing []string
	got := generated.ReplaceAllStringFunc(string(data), func(m string) string {
		parts := generated.FindStringSubmatch(m)
		name := parts[2]
		body, ok := want[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		seen[name] = true
		return parts[1] + body + parts[3]
	})
	if len(missing) > 0 {
		t.Fatalf("%s has generated sections nothing generates: %v", docPath, missing)
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("%s lacks the generated section %q (<!-- BEGIN GENERATED %s --> ... <!-- END GENERATED %s -->)", docPath, name, name, name)
		}
	}
	if got == string(data) {
		return
	}
	if *update {
		if err := os.WriteFile(docPath, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is stale: run `make update-docs` and commit the result", docPath)
}
