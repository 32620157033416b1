package compile_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
)

// hostileSeeds are policies written to reach the corners of the compiler: path
// patterns with the characters AppArmor quotes or expands, control characters, egress
// placeholders and port ranges, syscall arguments and mount rules.
var hostileSeeds = []string{
	`kind: ArmorPolicy
metadata: {name: q, namespace: shop}
spec:
  enforcers: [BPF, AppArmor, Seccomp]
  mode: EnhanceProtect
  customRules:
    files:
    - paths: ["/a b/\"c\"/\\{d,e\\}/@\\{HOME\\}/#f/\\\\g/*\\[x\\]\\?^$", "/tab\there/**", "/\u00e9t\u00e9/**/x*"]
      permissions: [read, write, append, create, delete, rename, link, chmod, chown]
    exec:
    - paths: ["/bin/*sh", "/usr/**/nc*", "/ctl\u0001\u007f/x"]`,
	`kind: ClusterArmorPolicy
metadata: {name: net}
spec:
  enforcers: [BPF, AppArmor, Seccomp]
  mode: EnhanceProtect
  action: Audit
  customRules:
    network:
    - egress: {addresses: [$APISERVER, $CLUSTER_CIDRS, "169.254.169.254", "fd00::/8"], ports: [{port: 1, endPort: 65535}], protocols: [tcp, udp]}
    - sockets: {families: [inet, packet], types: [raw], protocols: [icmp]}
    syscalls:
    - names: [personality, clone3]
      args: [{index: 0, op: MaskedEqual, value: 255, valueTwo: 8}]
    mounts:
    - operations: [mount, umount, pivotroot]
      fsTypes: [proc, sysfs]
      flags: [bind, rbind, remount]
      sources: ["/dev/**"]
      targets: ["/proc/**", "/"]
    ptrace:
    - permissions: [trace, read]
      peers: Any
    capabilities:
    - capabilities: [SYS_ADMIN, NET_RAW, BPF]
    operations:
    - operations: [bpf, ioUring, usernsCreate, chmodSetuid]`,
	`kind: ArmorPolicy
metadata: {name: rd, namespace: shop}
spec: {enforcers: [Seccomp, AppArmor], mode: RuntimeDefault}`,
}

// compileSeeds are the fuzz seeds of FuzzCompile: the test policies, the examples
// shipped with podarmor and hostileSeeds.
func compileSeeds(t testing.TB) [][]byte {
	files, err := filepath.Glob(filepath.Join("testdata", "policies", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	examples, err := filepath.Glob(filepath.Join("..", "..", "deploy", "examples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var seeds [][]byte
	for _, f := range append(files, examples...) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, data)
	}
	for _, s := range hostileSeeds {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

// decodePolicy reads a policy of either kind; ok is false when data is no policy.
func decodePolicy(data []byte) (p compile.Policy, ok bool) {
	var head struct{ Kind string }
	if yaml.Unmarshal(data, &head) != nil {
		return p, false
	}
	if head.Kind == compile.KindClusterArmorPolicy {
		var c v1alpha1.ClusterArmorPolicy
		if yaml.Unmarshal(data, &c) != nil {
			return p, false
		}
		return compile.FromClusterArmorPolicy(&c), true
	}
	var a v1alpha1.ArmorPolicy
	if yaml.Unmarshal(data, &a) != nil {
		return p, false
	}
	return compile.FromArmorPolicy(&a), true
}

// FuzzCompile compiles arbitrary policies, valid or not. Compile must either fail with
// errors that each name a field (and no internal error: the compiler accepted a policy
// that a backend could not render) or give, on a second run, byte-identical profiles,
// with every seccomp profile a strict OCI LinuxSeccomp. apparmor_parser is too slow for
// the fuzz loop; TestCompileSeedsParse runs it on the seeds and the committed corpus.
func FuzzCompile(f *testing.F) {
	for _, s := range compileSeeds(f) {
		f.Add(s)
	}
	opts := testOptions(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 16<<10 {
			return // size is the limit tests' job; the fuzzer is for shapes
		}
		p, ok := decodePolicy(data)
		if !ok {
			return
		}
		start := time.Now()
		res, errs := compile.Compile(p, opts)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("compile took %s", d)
		}
		if len(errs) > 0 {
			for _, e := range errs {
				if e.Type == field.ErrorTypeInternal || e.Field == "" || e.Field == "<nil>" {
					t.Fatalf("error %q names no field or is internal (type %s)\npolicy %q", e.Error(), e.Type, data)
				}
			}
			if res != nil {
				t.Fatalf("a failed compile returned a result")
			}
			return
		}
		again, errs := compile.Compile(p, opts)
		if len(errs) > 0 {
			t.Fatalf("the second compile failed: %v", errs)
		}
		if !reflect.DeepEqual(res, again) {
			t.Fatalf("two compiles of one policy differ\npolicy %q", data)
		}
		for _, prof := range res.Profiles {
			if prof.Enforcer == v1alpha1.EnforcerSeccomp && prof.Content != nil {
				dec := json.NewDecoder(bytes.NewReader(prof.Content))
				dec.DisallowUnknownFields()
				var s specs.LinuxSeccomp
				if err := dec.Decode(&s); err != nil {
					t.Fatalf("the seccomp profile is no OCI LinuxSeccomp: %v\n%s", err, prof.Content)
				}
			}
		}
	})
}

// TestCompileSeedsParse runs apparmor_parser -Q -K on the AppArmor profile of every
// FuzzCompile seed and every input committed under testdata/fuzz/FuzzCompile that
// compiles: what the compiler accepts, AppArmor must accept.
func TestCompileSeedsParse(t *testing.T) {
	parser, err := exec.LookPath("apparmor_parser")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("apparmor_parser is missing (hack/deps.sh installs it): %v", err)
		}
		t.Skip("apparmor_parser is not installed; hack/deps.sh installs it")
	}
	inputs := compileSeeds(t)
	corpus, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzCompile", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range corpus {
		inputs = append(inputs, readCorpusBytes(t, f))
	}
	opts := testOptions(t)
	dir := t.TempDir()
	parsed := 0
	for i, data := range inputs {
		p, ok := decodePolicy(data)
		if !ok {
			continue
		}
		res, errs := compile.Compile(p, opts)
		if len(errs) > 0 {
			if i >= len(inputs)-len(corpus)-len(hostileSeeds) && i < len(inputs)-len(corpus) {
				t.Errorf("hostile seed %d does not compile: %v", i, errs)
			}
			continue
		}
		for _, prof := range res.Profiles {
			if prof.Enforcer != v1alpha1.EnforcerAppArmor {
				continue
			}
			path := filepath.Join(dir, strconv.Itoa(i)+".apparmor")
			if err := os.WriteFile(path, prof.Content, 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"-Q", "-K"}
			if _, err := os.Stat("/usr/share/apparmor-features/features"); err == nil {
				args = append(args, "-M", "/usr/share/apparmor-features/features")
			}
			if out, err := exec.Command(parser, append(args, path)...).CombinedOutput(); err != nil {
				t.Errorf("apparmor_parser rejects the profile of input %d: %v\n%s\ninput %q\nprofile:\n%s", i, err, out, data, prof.Content)
			}
			parsed++
		}
	}
	if parsed < len(hostileSeeds)-1 {
		t.Fatalf("only %d AppArmor profiles parsed; the hostile seeds alone have %d", parsed, len(hostileSeeds)-1)
	}
}

// readCorpusBytes reads the one []byte value of a file of Go's fuzzing corpus format.
func readCorpusBytes(t *testing.T, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if lit, ok := strings.CutPrefix(line, "[]byte("); ok {
			v, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			return []byte(v)
		}
	}
	t.Fatalf("%s: no []byte value", file)
	return nil
}

// TestControlAndNonUTF8Paths compiles path patterns holding control characters and
// bytes that are not UTF-8, which no YAML or JSON document can carry but a Go caller
// (and a path on disk) can: each either fails naming its field or gives profiles
// apparmor_parser accepts.
func TestControlAndNonUTF8Paths(t *testing.T) {
	parser, err := exec.LookPath("apparmor_parser")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("apparmor_parser is missing (hack/deps.sh installs it): %v", err)
		}
		t.Skip("apparmor_parser is not installed; hack/deps.sh installs it")
	}
	opts := testOptions(t)
	for name, path := range map[string]string{
		"invalid UTF-8":             "/bin/\xff\xfe\xc3",
		"control characters":        "/tmp/\x01\x1b\\[31m\x7f/x",
		"a newline and a tab":       "/etc/a\nb/c\td",
		"quotes and AppArmor bytes": "/a\"b/@\\{x\\}/#c,d",
		"a NUL":                     "/a\x00b",
	} {
		t.Run(name, func(t *testing.T) {
			p := compile.Policy{Kind: compile.KindArmorPolicy, Namespace: "shop", Name: "bytes", Spec: v1alpha1.ArmorPolicySpec{
				Enforcers: v1alpha1.Enforcers, Mode: v1alpha1.ModeEnhanceProtect,
				CustomRules: &v1alpha1.CustomRules{
					Files: []v1alpha1.FileRule{{Paths: []string{path}, Permissions: []v1alpha1.FilePermission{v1alpha1.FileRead}}},
					Exec:  []v1alpha1.ExecRule{{Paths: []string{path}}},
				},
			}}
			res, errs := compile.Compile(p, opts)
			if len(errs) > 0 {
				for _, e := range errs {
					if !strings.HasPrefix(e.Field, "spec.customRules.") || !strings.Contains(e.Field, ".paths[0]") {
						t.Errorf("error %v does not name the path's field", e)
					}
				}
				t.Logf("refused: %v", errs[0])
				return
			}
			for _, prof := range res.Profiles {
				if prof.Enforcer != v1alpha1.EnforcerAppArmor {
					continue
				}
				file := filepath.Join(t.TempDir(), "profile")
				if err := os.WriteFile(file, prof.Content, 0o644); err != nil {
					t.Fatal(err)
				}
				args := []string{"-Q", "-K"}
				if _, err := os.Stat("/usr/share/apparmor-features/features"); err == nil {
					args = append(args, "-M", "/usr/share/apparmor-features/features")
				}
				if out, err := exec.Command(parser, append(args, file)...).CombinedOutput(); err != nil {
					t.Errorf("apparmor_parser rejects the profile: %v\n%s\nprofile:\n%s", err, out, prof.Content)
				}
			}
		})
	}
}
