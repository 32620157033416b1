package validation_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/catalog"
	"github.com/podarmor/podarmor/policies/compile"
	"github.com/podarmor/podarmor/policies/validation"
)

// FuzzValidate feeds arbitrary documents to the schema check and to the validation of
// both kinds: any input gets an answer, never a panic.
func FuzzValidate(f *testing.F) {
	seeds, _ := filepath.Glob("../../deploy/examples/*.yaml")
	more, _ := filepath.Glob("../compile/testdata/policies/*.yaml")
	for _, s := range append(seeds, more...) {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("spec: {customRules: {files: [{paths: ['/**/**/*a*b*'], permissions: [read]}]}}"))
	schema, err := validation.LoadSchema()
	if err != nil {
		f.Fatal(err)
	}
	cat, err := catalog.Load()
	if err != nil {
		f.Fatal(err)
	}
	backends, err := compile.DefaultBackends()
	if err != nil {
		f.Fatal(err)
	}
	opts := compile.Options{Catalog: cat, Backends: backends}
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		defer func() {
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("validation took %s on %q", d, data)
			}
		}()
		var obj map[string]any
		if yaml.Unmarshal(data, &obj) == nil && obj != nil {
			schema.Validate("ArmorPolicy", obj)
		}
		var ap v1alpha1.ArmorPolicy
		if yaml.Unmarshal(data, &ap) == nil {
			res := validation.ArmorPolicy(&ap, opts)
			if len(res.Errors) == 0 && res.Compiled == nil {
				t.Fatal("valid policy without a compiled result")
			}
		}
		var cap v1alpha1.ClusterArmorPolicy
		if yaml.Unmarshal(data, &cap) == nil {
			validation.ClusterArmorPolicy(&cap, opts)
		}
	})
}
