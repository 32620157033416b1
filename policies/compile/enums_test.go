package compile

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"

	"github.com/podarmor/podarmor/deploy/crds"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// TestEnumsMatchCRD keeps the enum lists the compiler checks against in step with the
// enums of the generated CRD schema, which the API server checks against.
func TestEnumsMatchCRD(t *testing.T) {
	crd, err := crds.Read("podarmor.io_armorpolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	root := crd.Spec.Validation.OpenAPIV3Schema
	tests := map[string]struct {
		path string
		want []string
	}{
		"file permissions":   {"spec.customRules.files[].permissions[]", strs(filePermissions)},
		"socket families":    {"spec.customRules.network[].sockets.families[]", strs(socketFamilies)},
		"socket types":       {"spec.customRules.network[].sockets.types[]", strs(socketTypes)},
		"protocols":          {"spec.customRules.network[].sockets.protocols[]", strs(protocols)},
		"egress protocols":   {"spec.customRules.network[].egress.protocols[]", strs(protocols)},
		"capabilities":       {"spec.customRules.capabilities[].capabilities[]", strs(v1alpha1.AllCapabilities)},
		"ptrace permissions": {"spec.customRules.ptrace[].permissions[]", strs(ptracePermissions)},
		"ptrace peers":       {"spec.customRules.ptrace[].peers", strs(ptracePeers)},
		"mount operations":   {"spec.customRules.mounts[].operations[]", strs(mountOperations)},
		"mount flags":        {"spec.customRules.mounts[].flags[]", strs(mountFlags)},
		"operations":         {"spec.customRules.operations[].operations[]", strs(operations)},
		"syscall arg ops":    {"spec.customRules.syscalls[].args[].op", strs(syscallArgOps)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := schemaAt(root, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range s.Enum {
				got = append(got, fmt.Sprint(v))
			}
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("CRD enum %v, compiler list %v", got, want)
			}
		})
	}
}

// schemaAt walks "a.b[].c": properties by name, "[]" into array items.
func schemaAt(s *apiextensions.JSONSchemaProps, path string) (*apiextensions.JSONSchemaProps, error) {
	for _, part := range strings.Split(path, ".") {
		name, isArray := strings.CutSuffix(part, "[]")
		p, ok := s.Properties[name]
		if !ok {
			return nil, fmt.Errorf("%s: no property %q", path, name)
		}
		s = &p
		if isArray {
			if s.Items == nil || s.Items.Schema == nil {
				return nil, fmt.Errorf("%s: %q is not an array", path, name)
			}
			s = s.Items.Schema
		}
	}
	return s, nil
}

func strs[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}
