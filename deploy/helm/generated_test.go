package helm

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the chart's generated files and deploy/podarmor.yaml")

// TestGenerated checks (or with -update rewrites) every generated file of the chart and
// the rendered manifest: hack/render-chart.sh runs it for make update and make verify.
func TestGenerated(t *testing.T) {
	root := repoRoot(t)
	want := map[string][]byte{}
	copies, err := Copies(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range copies {
		data, err := os.ReadFile(filepath.Join(root, c.Source))
		if err != nil {
			t.Fatal(err)
		}
		want[c.Dest] = data
	}
	tmpl, err := WebhookConfigurationsTemplate()
	if err != nil {
		t.Fatal(err)
	}
	want[WebhookTemplatePath] = tmpl

	// The manifest is rendered from the chart as it will be once the files above are
	// current, so one -update run is enough.
	stageRoot := t.TempDir()
	if err := os.CopyFS(filepath.Join(stageRoot, ChartDir), os.DirFS(filepath.Join(root, ChartDir))); err != nil {
		t.Fatal(err)
	}
	for path, data := range want {
		dest := filepath.Join(stageRoot, path)
		if err := os.Remove(dest); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dest, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rendered, err := Render(t.Context(), RenderOptions{Helm: helmBinary(t), Root: stageRoot, KubeVersion: ManifestKubeVersion})
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := Manifest(rendered, Namespace)
	if err != nil {
		t.Fatal(err)
	}
	want[ManifestPath] = manifest

	for path, data := range want {
		file := filepath.Join(root, path)
		got, err := os.ReadFile(file)
		if err == nil && bytes.Equal(got, data) {
			continue
		}
		if *update {
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, data, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s", path)
			continue
		}
		if err != nil {
			t.Errorf("%s: %v; run `make update` (hack/render-chart.sh)", path, err)
		} else {
			t.Errorf("%s is stale; run `make update` (hack/render-chart.sh) and commit the result", path)
		}
	}
	// A CRD removed from deploy/crds must leave the chart too.
	chartCRDs, err := filepath.Glob(filepath.Join(root, ChartDir, "crds", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range chartCRDs {
		rel, _ := filepath.Rel(root, f)
		if _, ok := want[rel]; ok {
			continue
		}
		if *update {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
			t.Logf("removed %s (not in deploy/crds)", rel)
			continue
		}
		t.Errorf("%s is not in deploy/crds; run `make update` (hack/render-chart.sh)", rel)
	}
}
