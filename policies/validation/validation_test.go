package validation_test

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
	"github.com/podarmor/podarmor/policies/validation"
)

const header = `apiVersion: podarmor.io/v1alpha1
kind: ArmorPolicy
metadata: {name: p, namespace: shop}
spec:
  target: {selector: {}}
`

func TestArmorPolicy(t *testing.T) {
	tests := map[string]struct {
		spec string
		// errs are "field: substring" pairs every one of which must be reported.
		errs     []string
		warnings []string
	}{
		"a runtime-default policy with one enforcer is valid": {
			spec: "  enforcers: [BPF]\n  mode: RuntimeDefault\n",
		},
		"an unknown built-in rule is named with its index": {
			spec: "  enforcers: [BPF]\n  mode: EnhanceProtect\n  builtinRules: [{name: disallow-write-core-pattern}, {name: nope}]\n",
			errs: []string{`spec.builtinRules[1].name: Not found: "nope"`},
		},
		"a bad path pattern names the path's index and the byte": {
			spec: "  enforcers: [BPF]\n  mode: EnhanceProtect\n  customRules:\n    files:\n    - {paths: [/ok, /a//b], permissions: [read]}\n",
			errs: []string{`spec.customRules.files[0].paths[1]: Invalid value: "/a//b"`, "empty path component at byte 3"},
		},
		"a CIDR with host bits suggests the prefix": {
			spec: "  enforcers: [BPF]\n  mode: EnhanceProtect\n  customRules:\n    network:\n    - egress: {addresses: [10.1.2.3/8]}\n",
			errs: []string{"spec.customRules.network[0].egress.addresses[0]", "did you mean 10.0.0.0/8"},
		},
		"an IPv6 address is accepted": {
			spec: "  enforcers: [BPF]\n  mode: EnhanceProtect\n  customRules:\n    network:\n    - egress: {addresses: ['fd00:ec2::254'], ports: [{port: 80}]}\n",
		},
		"a port range ending below its start is rejected": {
			spec: "  enforcers: [BPF]\n  mode: EnhanceProtect\n  customRules:\n    network:\n    - egress: {ports: [{port: 90, endPort: 80}]}\n",
			errs: []string{"spec.customRules.network[0].egress.ports[0].endPort"},
		},
		"a rule no enforcer of the policy can express is rejected": {
			spec: "  enforcers: [Seccomp]\n  mode: EnhanceProtect\n  customRules:\n    files:\n    - {paths: [/etc/**], permissions: [write]}\n",
			errs: []string{"spec.customRules.files[0]", "none of the policy's enforcers can express this rule"},
		},
		"a rule only some enforcers express is a warning": {
			spec:     "  enforcers: [BPF, AppArmor]\n  mode: EnhanceProtect\n  customRules:\n    network:\n    - egress: {addresses: [169.254.169.254]}\n",
			warnings: []string{"rule custom/network-0 is not (fully) enforced by AppArmor;"},
		},
		"system call rules need the Seccomp enforcer": {
			spec: "  enforcers: [BPF]\n  mode: EnhanceProtect\n  customRules:\n    syscalls:\n    - {names: [reboot]}\n",
			errs: []string{"spec.customRules.syscalls: Forbidden"},
		},
		"rules outside EnhanceProtect are rejected": {
			spec: "  enforcers: [BPF]\n  mode: RuntimeDefault\n  builtinRules: [{name: disallow-mount}]\n",
			errs: []string{"spec.builtinRules: Forbidden"},
		},
		"two custom rules with one name are rejected": {
			spec: "  enforcers: [BPF]\n  mode: EnhanceProtect\n  customRules:\n    exec:\n    - {name: x, paths: [/bin/sh]}\n    capabilities:\n    - {name: x, capabilities: [SYS_ADMIN]}\n",
			errs: []string{"spec.customRules.capabilities[0].name: Duplicate value"},
		},
		"an unknown enforcer is rejected": {
			spec: "  enforcers: [SELinux]\n  mode: RuntimeDefault\n",
			errs: []string{`spec.enforcers[0]: Unsupported value: "SELinux"`},
		},
		"a placeholder without its cluster value is rejected": {
			spec: "  enforcers: [BPF]\n  mode: EnhanceProtect\n  builtinRules: [{name: disallow-egress-apiserver}]\n",
			errs: []string{"spec.builtinRules[0]", "API server's address is not configured"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var p v1alpha1.ArmorPolicy
			if err := yaml.UnmarshalStrict([]byte(header+tc.spec), &p); err != nil {
				t.Fatal(err)
			}
			res := validation.ArmorPolicy(&p, compile.Options{})
			got := res.Errors.ToAggregate()
			if len(tc.errs) == 0 && got != nil {
				t.Fatalf("unexpected errors: %v", got)
			}
			for _, want := range tc.errs {
				if got == nil || !strings.Contains(got.Error(), want) {
					t.Errorf("errors %v do not contain %q", got, want)
				}
			}
			for _, want := range tc.warnings {
				if !strings.Contains(strings.Join(res.Warnings, "\n"), want) {
					t.Errorf("warnings %q do not contain %q", res.Warnings, want)
				}
			}
			if got == nil && res.Compiled == nil {
				t.Error("a valid policy has no compiled result")
			}
		})
	}
}

func TestSelectorsAndNames(t *testing.T) {
	p := &v1alpha1.ClusterArmorPolicy{}
	p.Name = "Bad_Name"
	p.Namespace = "shop"
	p.Spec.Enforcers = []v1alpha1.Enforcer{v1alpha1.EnforcerBPF}
	p.Spec.Mode = v1alpha1.ModeRuntimeDefault
	p.Spec.Priority = 5000
	p.Spec.Target.Containers = []string{"main", "main"}
	p.Spec.NamespaceSelector.MatchLabels = map[string]string{"bad key!": "x"}
	errs := validation.ClusterArmorPolicy(p, compile.Options{}).Errors.ToAggregate()
	for _, want := range []string{"metadata.name", "metadata.namespace", "spec.priority", "spec.target.containers[1]", "spec.namespaceSelector.matchLabels"} {
		if errs == nil || !strings.Contains(errs.Error(), want) {
			t.Errorf("errors %v do not name %s", errs, want)
		}
	}
}
