package validation

import (
	"context"
	"fmt"
	"sync"

	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	schemadefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"

	"github.com/podarmor/podarmor/deploy/crds"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// Schema checks an object as the API server checks it against podarmor's CRDs: the
// OpenAPI schema and the CEL rules, after applying the schema's defaults to obj (which it
// changes in place). Its errors carry the same field paths the API server would report.
// The webhook does not need it (the API server has run it before); the CLI does.
type Schema struct {
	kinds map[string]*kindSchema
}

type kindSchema struct {
	structural *structuralschema.Structural
	validator  apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

// LoadSchema parses the embedded CRDs, checks them as the API server checks a CRD
// (structural schema, CEL rules compile within the cost budget) and returns their
// schemas. It does the work once per process.
var LoadSchema = sync.OnceValues(func() (*Schema, error) {
	s := &Schema{kinds: map[string]*kindSchema{}}
	for _, name := range crds.Names() {
		crd, err := crds.Read(name)
		if err != nil {
			return nil, err
		}
		// The API server records the stored version itself when it creates a CRD.
		crd.Status.StoredVersions = []string{v1alpha1.SchemeGroupVersion.Version}
		if errs := crdvalidation.ValidateCustomResourceDefinition(context.Background(), crd); len(errs) > 0 {
			return nil, fmt.Errorf("crd %s: %w", name, errs.ToAggregate())
		}
		openAPI := crd.Spec.Validation.OpenAPIV3Schema
		st, err := structuralschema.NewStructural(openAPI)
		if err != nil {
			return nil, fmt.Errorf("crd %s: %w", name, err)
		}
		v, _, err := apiservervalidation.NewSchemaValidator(openAPI)
		if err != nil {
			return nil, fmt.Errorf("crd %s: %w", name, err)
		}
		s.kinds[crd.Spec.Names.Kind] = &kindSchema{
			structural: st,
			validator:  v,
			cel:        cel.NewValidator(st, true, celconfig.PerCallLimit),
		}
	}
	if len(s.kinds) == 0 {
		return nil, fmt.Errorf("no CRDs embedded")
	}
	return s, nil
})

// Validate defaults obj and checks it against the schema of its kind.
func (s *Schema) Validate(kind string, obj map[string]any) field.ErrorList {
	k, ok := s.kinds[kind]
	if !ok {
		return field.ErrorList{field.NotSupported(field.NewPath("kind"), kind, []string{"ArmorPolicy", "ClusterArmorPolicy"})}
	}
	// The API server drops fields the schema does not know; with strict field validation
	// (kubectl's default) it refuses them. Refuse them here too: a misspelt field must not
	// silently turn a rule off.
	var errs field.ErrorList
	unknown := pruning.PruneWithOptions(obj, k.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, path := range unknown {
		errs = append(errs, field.Invalid(field.NewPath(path), nil, "unknown field"))
	}
	schemadefaulting.Default(obj, k.structural)
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj, k.validator)...)
	if len(errs) > 0 {
		return errs // CEL rules assume a schema-valid object, as on the API server
	}
	celErrs, _ := k.cel.Validate(context.Background(), nil, k.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return append(errs, celErrs...)
}
