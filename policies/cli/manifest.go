package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
	"github.com/podarmor/podarmor/policies/validation"
)

// document is one policy read from a file.
type document struct {
	// where names the file and document, e.g. "policy.yaml#2".
	where   string
	cluster *v1alpha1.ClusterArmorPolicy
	ns      *v1alpha1.ArmorPolicy
	// schemaErrs are what the API server's CRD schema and CEL rules say of the document.
	schemaErrs field.ErrorList
}

// policy is the document's policy in compiler form.
func (d document) policy() compile.Policy {
	if d.cluster != nil {
		return compile.FromClusterArmorPolicy(d.cluster)
	}
	return compile.FromArmorPolicy(d.ns)
}

// validate checks the document as the API server and then the admission webhook would:
// the CRD schema first, and only for a schema-valid object the validation of
// policies/validation.
func (d document) validate(o compile.Options) validation.Result {
	if len(d.schemaErrs) > 0 {
		return validation.Result{Errors: d.schemaErrs}
	}
	if d.cluster != nil {
		return validation.ClusterArmorPolicy(d.cluster, o)
	}
	return validation.ArmorPolicy(d.ns, o)
}

// readPolicies reads every YAML or JSON document of a file. Unknown fields, other kinds
// and other API versions are errors naming the document: a typo must not silently turn
// a rule off.
func readPolicies(name string, data []byte) ([]document, error) {
	schema, err := validation.LoadSchema()
	if err != nil {
		return nil, fmt.Errorf("load CRD schemas: %w", err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var docs []document
	for i := 1; ; i++ {
		var raw map[string]any
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			break
		}
		where := fmt.Sprintf("%s#%d", name, i)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if raw == nil {
			continue // an empty document between two "---"
		}
		apiVersion, _ := raw["apiVersion"].(string)
		kind, _ := raw["kind"].(string)
		if want := v1alpha1.SchemeGroupVersion.String(); apiVersion != want {
			return nil, fmt.Errorf("%s: apiVersion %q is not %s", where, apiVersion, want)
		}
		d := document{where: where, schemaErrs: schema.Validate(kind, raw)}
		body, err := yaml.Marshal(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		switch kind {
		case compile.KindArmorPolicy:
			d.ns = &v1alpha1.ArmorPolicy{}
			err = yaml.UnmarshalStrict(body, d.ns)
			if err != nil && len(d.schemaErrs) > 0 {
				// The schema errors say what is wrong; keep the names for messages.
				d.ns = &v1alpha1.ArmorPolicy{ObjectMeta: metadata(raw)}
				err = nil
			}
			if d.ns.Namespace == "" {
				d.ns.Namespace = "default"
			}
		case compile.KindClusterArmorPolicy:
			d.cluster = &v1alpha1.ClusterArmorPolicy{}
			err = yaml.UnmarshalStrict(body, d.cluster)
			if err != nil && len(d.schemaErrs) > 0 {
				d.cluster = &v1alpha1.ClusterArmorPolicy{ObjectMeta: metadata(raw)}
				err = nil
			}
		default:
			return nil, fmt.Errorf("%s: kind %q is neither %s nor %s", where, kind,
				compile.KindArmorPolicy, compile.KindClusterArmorPolicy)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		docs = append(docs, d)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no policy in the file", name)
	}
	return docs, nil
}

// metadata is the name and namespace of a raw object, whatever else is wrong with it.
func metadata(raw map[string]any) metav1.ObjectMeta {
	m, _ := raw["metadata"].(map[string]any)
	name, _ := m["name"].(string)
	namespace, _ := m["namespace"].(string)
	return metav1.ObjectMeta{Name: name, Namespace: namespace}
}
