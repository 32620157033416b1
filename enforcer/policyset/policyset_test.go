package policyset

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
)

func write(t *testing.T, text string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

const clusterPolicy = "apiVersion: podarmor.io/v1alpha1\nkind: ClusterArmorPolicy\nmetadata: {name: a}\nspec: {namespaceSelector: {}, target: {selector: {}}, enforcers: [BPF, Seccomp], mode: RuntimeDefault}\n"

func TestRead(t *testing.T) {
	t.Run("the example policy compiles for its three enforcers", func(t *testing.T) {
		set, err := Read([]string{"../../deploy/examples/enhance-protect.yaml"}, compile.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(set) != 1 || set[0].ProfileID() != "ap.shop.web" {
			t.Fatalf("%+v", set)
		}
		for _, e := range v1alpha1.Enforcers {
			if set[0].Profile(e) == nil {
				t.Errorf("no %s profile", e)
			}
		}
	})
	t.Run("seccomp in mode RuntimeDefault loads nothing", func(t *testing.T) {
		set, err := Read([]string{write(t, clusterPolicy)}, compile.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if set[0].ProfileID() != "cap.a" || set[0].Profile(v1alpha1.EnforcerSeccomp) != nil || set[0].Profile(v1alpha1.EnforcerBPF) == nil {
			t.Errorf("profiles %+v", set[0].Result.Profiles)
		}
	})
	errs := map[string]struct{ text, want string }{
		"two policies with one profile": {clusterPolicy + "---\n" + clusterPolicy, "have the same profile ID cap.a"},
		"an unknown field":              {strings.Replace(clusterPolicy, "mode:", "mood:", 1), "unknown field"},
		"another kind":                  {"apiVersion: podarmor.io/v1alpha1\nkind: Pod\nmetadata: {name: a}\n", `kind "Pod"`},
		"a rule no enforcer expresses": {
			"apiVersion: podarmor.io/v1alpha1\nkind: ArmorPolicy\nmetadata: {name: a}\nspec:\n  target: {selector: {}}\n  enforcers: [Seccomp]\n  mode: EnhanceProtect\n  customRules:\n    files: [{paths: [/etc/shadow], permissions: [read]}]\n",
			"none of the policy's enforcers can express this rule",
		},
		"an empty file": {"\n", "no policy in the file"},
	}
	for name, tc := range errs {
		t.Run(name, func(t *testing.T) {
			if _, err := Read([]string{write(t, tc.text)}, compile.Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
