// Package crds embeds podarmor's CustomResourceDefinitions (generated from
// policies/api by `make update-codegen`), so that tools and tests can validate policies
// against the same schema and CEL rules as the API server.
package crds

import (
	"embed"
	"fmt"
	"io/fs"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// Files holds the CRD manifests, one per resource.
//
//go:embed podarmor.io_*.yaml
var Files embed.FS

// Names lists the embedded manifests.
func Names() []string {
	names, _ := fs.Glob(Files, "*.yaml") // the pattern is valid, so no error
	return names
}

// Read reads one embedded CRD into the API server's internal form, the one its own CRD
// validation takes.
func Read(name string) (*apiextensions.CustomResourceDefinition, error) {
	data, err := fs.ReadFile(Files, name)
	if err != nil {
		return nil, err
	}
	var v1 apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(data, &v1); err != nil {
		return nil, fmt.Errorf("crd %s: %w", name, err)
	}
	var crd apiextensions.CustomResourceDefinition
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1, &crd, nil); err != nil {
		return nil, fmt.Errorf("crd %s: %w", name, err)
	}
	return &crd, nil
}
