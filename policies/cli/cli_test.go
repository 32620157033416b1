package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// run runs the CLI in-process and returns its exit code and outputs.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const examples = "../../deploy/examples/"

func TestValidate(t *testing.T) {
	tests := map[string]struct {
		file   string
		text   string
		code   int
		stdout []string
		stderr []string
	}{
		"the example policy is valid": {
			file: examples + "enhance-protect.yaml", code: 0,
			stdout: []string{"ArmorPolicy shop/web: valid (profile ap.shop.web)"},
		},
		"every mistake of the invalid example is reported with its field": {
			file: examples + "invalid.yaml", code: 1,
			stderr: []string{
				`spec.builtinRules[0].name: Not found: "disallow-teleportation"`,
				`spec.customRules.files[0].paths[0]: Invalid value: "etc/passwd"`,
				`spec.customRules.files[0].paths[1]: Invalid value: "/var//log"`,
				`spec.customRules.network[0].egress.addresses[0]`,
			},
		},
		"a schema error is reported as the API server would": {
			text:   "apiVersion: podarmor.io/v1alpha1\nkind: ArmorPolicy\nmetadata: {name: p}\nspec:\n  target: {selector: {}}\n  enforcers: [BPF]\n  mode: Strict\n",
			code:   1,
			stderr: []string{`ArmorPolicy default/p: spec.mode: Unsupported value: "Strict"`},
		},
		"an unknown field is an error, not a silently ignored rule": {
			text:   "apiVersion: podarmor.io/v1alpha1\nkind: ArmorPolicy\nmetadata: {name: p}\nspec:\n  target: {selector: {}}\n  enforcers: [BPF]\n  mode: RuntimeDefault\n  builtinRule: [{name: disallow-mount}]\n",
			code:   1,
			stderr: []string{`spec.builtinRule: Invalid value: null: unknown field`},
		},
		"several documents are checked one by one": {
			text:   "apiVersion: podarmor.io/v1alpha1\nkind: ClusterArmorPolicy\nmetadata: {name: a}\nspec: {namespaceSelector: {}, target: {selector: {}}, enforcers: [AppArmor], mode: RuntimeDefault}\n---\n---\napiVersion: podarmor.io/v1alpha1\nkind: ArmorPolicy\nmetadata: {name: b, namespace: x}\nspec: {target: {selector: {}}, enforcers: [Seccomp], mode: AlwaysAllow}\n",
			code:   0,
			stdout: []string{"#1: ClusterArmorPolicy a: valid (profile cap.a)", "#2: ArmorPolicy x/b: valid (profile ap.x.b)"},
		},
		"another kind is refused": {
			text: "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", code: 1,
			stderr: []string{`apiVersion "v1" is not podarmor.io/v1alpha1`},
		},
		"an empty file is an error": {
			text: "\n", code: 1, stderr: []string{"no policy in the file"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			file := tc.file
			if file == "" {
				file = writeFile(t, tc.text)
			}
			code, stdout, stderr := run(t, "validate", "-f", file)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout does not contain %q:\n%s", want, stdout)
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, stderr)
				}
			}
		})
	}
}

func TestRulesJSON(t *testing.T) {
	code, stdout, stderr := run(t, "rules", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rules []ruleJSON
	if err := json.Unmarshal([]byte(stdout), &rules); err != nil {
		t.Fatal(err)
	}
	if len(rules) < 50 {
		t.Fatalf("only %d rules", len(rules))
	}
	for _, r := range rules {
		if len(r.Enforcers) == 0 {
			t.Errorf("rule %s has no enforcer", r.Name)
		}
		for _, e := range r.Enforcers {
			if r.Compiled.Enforcers[e].Expands == "" {
				t.Errorf("rule %s: enforcer %s expands to nothing", r.Name, e)
			}
		}
	}
}

func TestRender(t *testing.T) {
	t.Run("one enforcer prints its profile alone", func(t *testing.T) {
		code, stdout, stderr := run(t, "render", "-f", examples+"enhance-protect.yaml", "--enforcer", "apparmor")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if !strings.Contains(stdout, "profile podarmor-ap.shop.web ") || strings.Contains(stdout, "==>") {
			t.Errorf("not a lone AppArmor profile:\n%s", stdout)
		}
	})
	t.Run("-d writes one file per enforcer", func(t *testing.T) {
		dir := t.TempDir()
		code, _, stderr := run(t, "render", "-f", examples+"enhance-protect.yaml", "-d", dir)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, f := range []string{"apparmor/podarmor-ap.shop.web", "seccomp/podarmor/ap.shop.web.json", "bpf/ap.shop.web.json"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("missing %s: %v", f, err)
			}
		}
	})
	t.Run("an unknown enforcer is refused", func(t *testing.T) {
		code, _, stderr := run(t, "render", "-f", examples+"enhance-protect.yaml", "--enforcer", "selinux")
		if code == 0 || !strings.Contains(stderr, `--enforcer "selinux"`) {
			t.Errorf("exit %d, stderr %s", code, stderr)
		}
	})
	t.Run("a placeholder value comes from a flag", func(t *testing.T) {
		file := writeFile(t, "apiVersion: podarmor.io/v1alpha1\nkind: ArmorPolicy\nmetadata: {name: p}\nspec:\n  target: {selector: {}}\n  enforcers: [BPF]\n  mode: EnhanceProtect\n  builtinRules: [{name: disallow-egress-apiserver}]\n")
		if code, _, stderr := run(t, "render", "-f", file); code == 0 || !strings.Contains(stderr, "--apiserver-address") {
			t.Errorf("without the flag: exit %d, stderr %s", code, stderr)
		}
		code, stdout, stderr := run(t, "render", "-f", file, "--apiserver-address", "10.96.0.1")
		if code != 0 || !strings.Contains(stdout, "10.96.0.1/32") {
			t.Errorf("with the flag: exit %d, stderr %s\n%s", code, stderr, stdout)
		}
	})
}

func TestTryRefusesBadArguments(t *testing.T) {
	policy := examples + "enhance-protect.yaml"
	tests := map[string]struct {
		args []string
		want string
	}{
		"the command must come after --": {
			args: []string{"try", "-f", policy, "cat", "/etc/hosts"}, want: "put the command after --",
		},
		"a policy or --unconfined is needed": {
			args: []string{"try", "--", "true"}, want: "name a policy file with -f",
		},
		"an unknown kernel": {
			args: []string{"try", "-f", policy, "--kernel", "5.10", "--", "true"}, want: `--kernel "5.10"`,
		},
		"a mount needs an absolute destination": {
			args: []string{"try", "-f", policy, "--mount", "x:y", "--", "true"}, want: `--mount "x:y"`,
		},
		"an invalid policy is reported before any VM boots": {
			args: []string{"try", "-f", examples + "invalid.yaml", "--", "true"}, want: "disallow-teleportation",
		},
		"a file of several policies": {
			args: []string{"try", "-f", writeFile(t, "apiVersion: podarmor.io/v1alpha1\nkind: ClusterArmorPolicy\nmetadata: {name: a}\nspec: {namespaceSelector: {}, target: {selector: {}}, enforcers: [BPF], mode: RuntimeDefault}\n---\napiVersion: podarmor.io/v1alpha1\nkind: ClusterArmorPolicy\nmetadata: {name: b}\nspec: {namespaceSelector: {}, target: {selector: {}}, enforcers: [BPF], mode: RuntimeDefault}\n"), "--", "true"},
			want: "holds 2 policies; try takes one",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, _, stderr := run(t, tc.args...)
			if code == 0 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %s", code, stderr)
			}
		})
	}
}

func TestTryMountFiles(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "tree", "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "tree", "sub", "a"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(dir, "one"), []byte("1"), 0o755)
	arg, files, _, err := mountFiles(0, filepath.Join(dir, "one")+":/bin/one")
	if err != nil || arg != "/podarmor/try/mounts/0:/bin/one" || len(files) != 1 || files[0].Path != "/podarmor/try/mounts/0" {
		t.Errorf("file: %q %+v %v", arg, files, err)
	}
	arg, files, dirs, err := mountFiles(1, filepath.Join(dir, "tree")+":/data:ro")
	if err != nil || arg != "/podarmor/try/mounts/1:/data:ro" || len(files) != 1 || files[0].Path != "/podarmor/try/mounts/1/sub/a" ||
		len(dirs) != 2 {
		t.Errorf("directory: %q %+v %v %v", arg, files, dirs, err)
	}
	arg, files, _, err = mountFiles(2, "vm:/run/docker.sock:/var/run/docker.sock")
	if err != nil || arg != "/run/docker.sock:/var/run/docker.sock" || len(files) != 0 {
		t.Errorf("vm path: %q %+v %v", arg, files, err)
	}
}
