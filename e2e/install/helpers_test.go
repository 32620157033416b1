package install

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/deploy/helm"
	"github.com/podarmor/podarmor/e2e/framework"
)

// Versions of the third-party CRDs the chart's optional objects need, from the Go
// module proxy (the modules carry their CRD manifests).
const (
	certManagerModule        = "github.com/cert-manager/cert-manager@v1.21.2"
	certManagerCRDs          = "deploy/crds"
	prometheusOperatorModule = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
	prometheusOperatorCRDs   = "example/prometheus-operator-crd"
)

// repoRoot is the repository root: go test runs in e2e/install.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
	return root
}

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

func helmBinary(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() { helmPath, helmErr = helm.HelmBinary(context.Background(), repoRoot(t)) })
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

// render renders the chart for a cluster of version that serves apiVersions besides the
// built-in ones.
func render(t *testing.T, version string, set, apiVersions []string) [][]byte {
	t.Helper()
	out, err := helm.Render(t.Context(), helm.RenderOptions{
		Helm: helmBinary(t), Root: repoRoot(t), Set: set, KubeVersion: version, APIVersions: apiVersions,
	})
	if err != nil {
		t.Fatal(err)
	}
	return helm.Documents(out)
}

// moduleDir downloads a Go module (cached by the module cache) and returns its directory.
func moduleDir(t *testing.T, module string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "go", "mod", "download", "-json", module)
	cmd.Dir = t.TempDir() // outside any module: nothing's go.mod changes
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v\n%s", module, err, out)
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		t.Fatalf("go mod download %s: %v %s\n%s", module, err, info.Error, out)
	}
	return info.Dir
}

// thirdPartyCRDs returns the CRD manifests of cert-manager and the Prometheus Operator
// that the chart's optional objects use.
func thirdPartyCRDs(t *testing.T) [][]byte {
	t.Helper()
	var docs [][]byte
	for _, src := range []struct{ module, dir, glob string }{
		{certManagerModule, certManagerCRDs, "cert-manager.io_*.yaml"},
		{prometheusOperatorModule, prometheusOperatorCRDs, "monitoring.coreos.com_*.yaml"},
	} {
		files, err := filepath.Glob(filepath.Join(moduleDir(t, src.module), src.dir, src.glob))
		if err != nil || len(files) == 0 {
			t.Fatalf("no CRDs %s in %s/%s (%v)", src.glob, src.module, src.dir, err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			docs = append(docs, helm.Documents(data)...)
		}
	}
	return docs
}

// api sends raw manifests to the API server, as kubectl would, so that the server sees
// exactly the rendered bytes (duplicate fields included).
type api struct {
	cp     *framework.ControlPlane
	http   *http.Client
	mapper meta.ResettableRESTMapper
}

func newAPI(t *testing.T, cp *framework.ControlPlane) *api {
	t.Helper()
	hc, err := rest.HTTPClientFor(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &api{
		cp:     cp,
		http:   hc,
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cp.Clientset.Discovery())),
	}
}

// object is a manifest's identity.
type object struct {
	u    *unstructured.Unstructured
	data []byte
}

func (o object) String() string {
	if ns := o.u.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s %s/%s", o.u.GetKind(), ns, o.u.GetName())
	}
	return fmt.Sprintf("%s %s", o.u.GetKind(), o.u.GetName())
}

func parse(t *testing.T, doc []byte) object {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(doc, &u.Object); err != nil {
		t.Fatalf("manifest is not YAML: %v\n%s", err, doc)
	}
	return object{u: u, data: doc}
}

// path is the URL path of o's collection.
func (a *api) path(o object) (string, error) {
	gvk := o.u.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		a.mapper.Reset()
		if m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return "", fmt.Errorf("%s: %w", o, err)
		}
	}
	p := "/apis/" + gvk.Group + "/" + gvk.Version
	if gvk.Group == "" {
		p = "/api/" + gvk.Version
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := o.u.GetNamespace()
		if ns == "" {
			return "", fmt.Errorf("%s is namespaced but names no namespace", o)
		}
		p += "/namespaces/" + ns
	}
	return p + "/" + m.Resource.Resource, nil
}

// create POSTs o's manifest as YAML with fieldValidation=Strict: the API server refuses
// unknown and duplicate fields. With dryRun, nothing is stored.
func (a *api) create(ctx context.Context, o object, dryRun bool) error {
	return a.post(ctx, o, dryRun, "Strict")
}

// install creates a third party's manifest for real, dropping fields an older API server
// does not know (cert-manager's CRDs carry selectableFields, which 1.29 lacks).
func (a *api) install(ctx context.Context, o object) error {
	return a.post(ctx, o, false, "Ignore")
}

func (a *api) post(ctx context.Context, o object, dryRun bool, validation string) error {
	p, err := a.path(o)
	if err != nil {
		return err
	}
	q := url.Values{"fieldValidation": {validation}}
	if dryRun {
		q.Set("dryRun", "All")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(a.cp.Config.Host, "/")+p+"?"+q.Encode(), bytes.NewReader(o.data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/yaml")
	req.Header.Set("Accept", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("create %s: %w", o, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var status metav1.Status
		if json.Unmarshal(body, &status) == nil && status.Message != "" {
			return fmt.Errorf("create %s: %d %s", o, resp.StatusCode, status.Message)
		}
		return fmt.Errorf("create %s: %d %s", o, resp.StatusCode, body)
	}
	// A Warning header is how the API server reports what it would have dropped.
	if w := resp.Header.Values("Warning"); len(w) > 0 {
		return fmt.Errorf("create %s: warnings %q", o, w)
	}
	return nil
}

// removePodarmorCRDs deletes the CRDs the framework installed, so that a test installs
// them from the chart as a user would.
func removePodarmorCRDs(t *testing.T, cp *framework.ControlPlane) {
	t.Helper()
	list := &apiextensionsv1.CustomResourceDefinitionList{}
	if err := cp.Client.List(t.Context(), list); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		crd := &list.Items[i]
		if crd.Spec.Group != "podarmor.io" {
			continue
		}
		if err := cp.Client.Delete(t.Context(), crd); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		cp.WaitForDeletion(t, time.Minute, client.ObjectKeyFromObject(crd), &apiextensionsv1.CustomResourceDefinition{})
	}
}

// waitEstablished waits until the CRD is served.
func waitEstablished(t *testing.T, cp *framework.ControlPlane, name string) {
	t.Helper()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	cp.WaitForObject(t, time.Minute, client.ObjectKey{Name: name}, crd, func() bool {
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return true
			}
		}
		return false
	})
}

// kubeBinDir is the directory of kube-apiserver and kubectl of version (built and
// cached by hack/kube-binaries.sh; TestMain has built them already).
func kubeBinDir(t *testing.T, version string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), filepath.Join(repoRoot(t), "hack/kube-binaries.sh"), version)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/kube-binaries.sh %s: %v\n%s", version, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// kubectl runs kubectl of the control plane's version as the admin.
func kubectl(t *testing.T, cp *framework.ControlPlane, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), filepath.Join(kubeBinDir(t, cp.Version), "kubectl"),
		append([]string{"--kubeconfig", cp.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
