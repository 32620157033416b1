package validation_test

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/policies/validation"
)

func TestSchema(t *testing.T) {
	schema, err := validation.LoadSchema()
	if err != nil {
		t.Fatalf("the CRDs fail the API server's own CRD validation: %v", err)
	}
	tests := map[string]struct {
		spec string
		errs []string
	}{
		"a minimal policy passes": {
			spec: "  target: {selector: {}}\n  enforcers: [BPF]\n  mode: RuntimeDefault\n",
		},
		"a misspelt field is refused, not dropped": {
			spec: "  target: {selector: {}}\n  enforcers: [BPF]\n  mode: EnhanceProtect\n  customRules:\n    file: [{paths: [/x], permissions: [read]}]\n",
			errs: []string{"spec.customRules.file: Invalid value: null: unknown field"},
		},
		"a missing mode is required": {
			spec: "  target: {selector: {}}\n  enforcers: [BPF]\n",
			errs: []string{"spec.mode: Required value"},
		},
		"an empty enforcer list is rejected": {
			spec: "  target: {selector: {}}\n  enforcers: []\n  mode: RuntimeDefault\n",
			errs: []string{"spec.enforcers"},
		},
		"an unknown file permission is rejected by the enum": {
			spec: "  target: {selector: {}}\n  enforcers: [BPF]\n  mode: EnhanceProtect\n  customRules:\n    files: [{paths: [/x], permissions: [exec]}]\n",
			errs: []string{`spec.customRules.files[0].permissions[0]: Unsupported value: "exec"`},
		},
		"sockets and egress in one rule fail the CEL rule": {
			spec: "  target: {selector: {}}\n  enforcers: [BPF]\n  mode: EnhanceProtect\n  customRules:\n    network: [{sockets: {}, egress: {}}]\n",
			errs: []string{"spec.customRules.network[0]", "exactly one of sockets or egress"},
		},
		"a port range ending below its start fails the CEL rule": {
			spec: "  target: {selector: {}}\n  enforcers: [BPF]\n  mode: EnhanceProtect\n  customRules:\n    network: [{egress: {ports: [{port: 90, endPort: 80}]}}]\n",
			errs: []string{"spec.customRules.network[0].egress.ports[0]", "endPort must not be below port"},
		},
		"system call rules without Seccomp fail the CEL rule": {
			spec: "  target: {selector: {}}\n  enforcers: [BPF]\n  mode: EnhanceProtect\n  customRules:\n    syscalls: [{names: [reboot]}]\n",
			errs: []string{"customRules.syscalls needs the Seccomp enforcer"},
		},
		"built-in rules outside EnhanceProtect fail the CEL rule": {
			spec: "  target: {selector: {}}\n  enforcers: [BPF]\n  mode: AlwaysAllow\n  builtinRules: [{name: disallow-mount}]\n",
			errs: []string{"take effect only in mode EnhanceProtect"},
		},
		"a port out of range is rejected": {
			spec: "  target: {selector: {}}\n  enforcers: [BPF]\n  mode: EnhanceProtect\n  customRules:\n    network: [{egress: {ports: [{port: 70000}]}}]\n",
			errs: []string{"spec.customRules.network[0].egress.ports[0].port"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var obj map[string]any
			doc := "apiVersion: podarmor.io/v1alpha1\nkind: ArmorPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n" + tc.spec
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				t.Fatal(err)
			}
			got := schema.Validate("ArmorPolicy", obj).ToAggregate()
			if len(tc.errs) == 0 && got != nil {
				t.Fatalf("unexpected errors: %v", got)
			}
			for _, want := range tc.errs {
				if got == nil || !strings.Contains(got.Error(), want) {
					t.Errorf("errors %v do not contain %q", got, want)
				}
			}
		})
	}
}

func TestSchemaDefaults(t *testing.T) {
	schema, err := validation.LoadSchema()
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	doc := `apiVersion: podarmor.io/v1alpha1
kind: ClusterArmorPolicy
metadata: {name: p}
spec:
  namespaceSelector: {}
  target: {selector: {}}
  enforcers: [BPF]
  mode: EnhanceProtect
  customRules:
    ptrace: [{permissions: [trace]}]
`
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		t.Fatal(err)
	}
	if errs := schema.Validate("ClusterArmorPolicy", obj); len(errs) > 0 {
		t.Fatal(errs)
	}
	spec := obj["spec"].(map[string]any)
	if spec["action"] != "Enforce" {
		t.Errorf("action defaulted to %v, want Enforce", spec["action"])
	}
	if spec["priority"] != int64(0) {
		t.Errorf("priority defaulted to %#v, want 0", spec["priority"])
	}
	peers := spec["customRules"].(map[string]any)["ptrace"].([]any)[0].(map[string]any)["peers"]
	if peers != "OutsideContainer" {
		t.Errorf("ptrace peers defaulted to %v, want OutsideContainer", peers)
	}
}
