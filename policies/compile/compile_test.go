package compile_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/catalog"
	"github.com/podarmor/podarmor/policies/compile"
	"github.com/podarmor/podarmor/policies/internal/golden"
)

// testOptions are the cluster facts the test policies' placeholders need.
func testOptions(t testing.TB) compile.Options {
	t.Helper()
	cat, err := catalog.Load()
	if err != nil {
		t.Fatalf("load catalog: %v", err)
	}
	return compile.Options{
		Catalog:      cat,
		APIServer:    []netip.Addr{netip.MustParseAddr("10.96.0.1")},
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")},
	}
}

// readPolicy reads one policy of either kind from a YAML file.
func readPolicy(t testing.TB, path string) compile.Policy {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var head struct{ Kind string }
	if err := yaml.Unmarshal(data, &head); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	switch head.Kind {
	case compile.KindArmorPolicy:
		var p v1alpha1.ArmorPolicy
		if err := yaml.UnmarshalStrict(data, &p); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return compile.FromArmorPolicy(&p)
	case compile.KindClusterArmorPolicy:
		var p v1alpha1.ClusterArmorPolicy
		if err := yaml.UnmarshalStrict(data, &p); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return compile.FromClusterArmorPolicy(&p)
	}
	t.Fatalf("%s: kind %q", path, head.Kind)
	return compile.Policy{}
}

// check compares got with testdata/golden/name, or rewrites it with -update.
func check(t *testing.T, name string, got []byte) {
	t.Helper()
	golden.Check(t, filepath.Join("testdata", "golden", name), got)
}

func testPolicies(t *testing.T) []string {
	files, err := filepath.Glob(filepath.Join("testdata", "policies", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no test policies: %v", err)
	}
	return files
}

func profileFile(base string, e v1alpha1.Enforcer) string {
	ext := map[v1alpha1.Enforcer]string{
		v1alpha1.EnforcerBPF: "bpf.json", v1alpha1.EnforcerAppArmor: "apparmor", v1alpha1.EnforcerSeccomp: "seccomp.json",
	}[e]
	return base + "." + ext
}

// TestGolden compiles every test policy (every mode, every rule kind, both actions)
// and compares the rule set and each enforcer's profile with golden files.
func TestGolden(t *testing.T) {
	opts := testOptions(t)
	for _, file := range testPolicies(t) {
		base := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(base, func(t *testing.T) {
			res, errs := compile.Compile(readPolicy(t, file), opts)
			if len(errs) > 0 {
				t.Fatalf("compile: %v", errs)
			}
			rs, err := json.MarshalIndent(res.RuleSet, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			check(t, base+".ruleset.json", append(rs, '\n'))
			for _, p := range res.Profiles {
				content := p.Content
				if content == nil {
					content = []byte("(no profile: the runtime's own or none)\n")
				}
				check(t, profileFile(base, p.Enforcer), content)
			}
		})
	}
}

// TestCatalogGolden records what every built-in rule expands to for every enforcer.
func TestCatalogGolden(t *testing.T) {
	opts := testOptions(t)
	var out bytes.Buffer
	for _, e := range opts.Catalog.Entries() {
		x, err := compile.ExpandEntry(e, opts)
		if err != nil {
			t.Fatalf("%s: %v", e.Name, err)
		}
		fmt.Fprintf(&out, "=== %s\n", e.Name)
		for _, p := range x.Profiles {
			fmt.Fprintf(&out, "--- %s\n", p.Enforcer)
			out.WriteString(x.Fragments[p.Enforcer])
			if !strings.HasSuffix(x.Fragments[p.Enforcer], "\n") {
				out.WriteByte('\n')
			}
			for _, u := range p.Unsupported {
				fmt.Fprintf(&out, "# not expressed: %s\n", u.Reason)
			}
		}
	}
	check(t, "catalog.txt", out.Bytes())
}

// TestCatalogEnforcers checks that the enforcers each catalog entry declares are
// exactly those whose backend expresses at least one of its rules.
func TestCatalogEnforcers(t *testing.T) {
	opts := testOptions(t)
	for _, e := range opts.Catalog.Entries() {
		x, err := compile.ExpandEntry(e, opts)
		if err != nil {
			t.Fatalf("%s: %v", e.Name, err)
		}
		declared := slices.Clone(e.Enforcers)
		slices.Sort(declared)
		computed := slices.Clone(x.Enforcers)
		slices.Sort(computed)
		if !slices.Equal(declared, computed) {
			t.Errorf("built-in rule %s declares enforcers %v, but %v express it", e.Name, declared, computed)
		}
	}
}

// everyRulePolicy enables every built-in rule, with all three enforcers.
func everyRulePolicy(t testing.TB, cat *catalog.Catalog) compile.Policy {
	p := compile.Policy{Kind: compile.KindClusterArmorPolicy, Name: "every-rule", Spec: v1alpha1.ArmorPolicySpec{
		Enforcers: v1alpha1.Enforcers,
		Mode:      v1alpha1.ModeEnhanceProtect,
	}}
	for _, e := range cat.Entries() {
		p.Spec.BuiltinRules = append(p.Spec.BuiltinRules, v1alpha1.BuiltinRule{Name: e.Name})
	}
	return p
}

// TestAppArmorParsesEveryProfile runs apparmor_parser -Q -K (parse, do not load) on the
// AppArmor profile of every test policy and of a policy enabling every built-in rule.
func TestAppArmorParsesEveryProfile(t *testing.T) {
	parser, err := exec.LookPath("apparmor_parser")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("apparmor_parser is missing (hack/deps.sh installs it): %v", err)
		}
		t.Skip("apparmor_parser is not installed; hack/deps.sh installs it")
	}
	opts := testOptions(t)
	policies := map[string]compile.Policy{"every-rule": everyRulePolicy(t, opts.Catalog)}
	for _, f := range testPolicies(t) {
		policies[filepath.Base(f)] = readPolicy(t, f)
	}
	dir := t.TempDir()
	for name, p := range policies {
		res, errs := compile.Compile(p, opts)
		if len(errs) > 0 {
			t.Fatalf("%s: %v", name, errs)
		}
		for _, prof := range res.Profiles {
			if prof.Enforcer != v1alpha1.EnforcerAppArmor {
				continue
			}
			path := filepath.Join(dir, name+".apparmor")
			if err := os.WriteFile(path, prof.Content, 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"-Q", "-K"}
			if _, err := os.Stat("/usr/share/apparmor-features/features"); err == nil {
				args = append(args, "-M", "/usr/share/apparmor-features/features")
			}
			out, err := exec.Command(parser, append(args, path)...).CombinedOutput()
			if err != nil {
				t.Errorf("apparmor_parser rejects the profile of %s: %v\n%s", name, err, out)
			}
		}
	}
}

// TestSeccompProfilesAreOCI decodes every seccomp profile strictly into the OCI
// runtime-spec type the runtimes read.
func TestSeccompProfilesAreOCI(t *testing.T) {
	opts := testOptions(t)
	policies := []compile.Policy{everyRulePolicy(t, opts.Catalog)}
	for _, f := range testPolicies(t) {
		policies = append(policies, readPolicy(t, f))
	}
	for _, p := range policies {
		res, errs := compile.Compile(p, opts)
		if len(errs) > 0 {
			t.Fatalf("%s: %v", p, errs)
		}
		for _, prof := range res.Profiles {
			if prof.Enforcer != v1alpha1.EnforcerSeccomp || prof.Content == nil {
				continue
			}
			dec := json.NewDecoder(bytes.NewReader(prof.Content))
			dec.DisallowUnknownFields()
			var s specs.LinuxSeccomp
			if err := dec.Decode(&s); err != nil {
				t.Errorf("%s: seccomp profile is not an OCI LinuxSeccomp: %v", p, err)
				continue
			}
			if s.DefaultAction != specs.ActAllow {
				t.Errorf("%s: default action %s, want %s (allow by default)", p, s.DefaultAction, specs.ActAllow)
			}
			if len(s.Syscalls) == 0 {
				t.Errorf("%s: seccomp profile denies nothing", p)
			}
		}
	}
}

// TestDeterministic compiles the same policy twice, and with its sets shuffled, and
// wants byte-identical profiles.
func TestDeterministic(t *testing.T) {
	opts := testOptions(t)
	p := everyRulePolicy(t, opts.Catalog)
	first, errs := compile.Compile(p, opts)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	rng := rand.New(rand.NewSource(1))
	for i := range 5 {
		q := p
		q.Spec.BuiltinRules = slices.Clone(p.Spec.BuiltinRules)
		rng.Shuffle(len(q.Spec.BuiltinRules), func(a, b int) {
			q.Spec.BuiltinRules[a], q.Spec.BuiltinRules[b] = q.Spec.BuiltinRules[b], q.Spec.BuiltinRules[a]
		})
		q.Spec.Enforcers = []v1alpha1.Enforcer{v1alpha1.EnforcerSeccomp, v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor}
		again, errs := compile.Compile(q, opts)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		for j := range first.Profiles {
			if !bytes.Equal(first.Profiles[j].Content, again.Profiles[j].Content) {
				t.Fatalf("run %d: %s profile changed with the order of built-in rules", i, first.Profiles[j].Enforcer)
			}
		}
	}
}
