package validation_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/podarmor/podarmor/deploy/crds"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/catalog"
	"github.com/podarmor/podarmor/policies/compile"
	"github.com/podarmor/podarmor/policies/validation"
)

// sizeLimit is one maxItems or maxLength of a CRD's schema.
type sizeLimit struct {
	path   string // "spec.customRules.files[*].paths[*]"
	length bool   // maxLength (a string); otherwise maxItems (a list)
	max    int
	enum   []string // the values of a list of enum items
}

// schemaLimits walks a schema and returns every size limit under it.
func schemaLimits(s *apiextensions.JSONSchemaProps, path string) []sizeLimit {
	var out []sizeLimit
	if s.MaxItems != nil {
		l := sizeLimit{path: path, max: int(*s.MaxItems)}
		if s.Items != nil && s.Items.Schema != nil {
			for _, e := range s.Items.Schema.Enum {
				if v, ok := e.(string); ok {
					l.enum = append(l.enum, v)
				}
			}
		}
		out = append(out, l)
	}
	if s.MaxLength != nil {
		out = append(out, sizeLimit{path: path, length: true, max: int(*s.MaxLength)})
	}
	if s.MaxProperties != nil {
		out = append(out, sizeLimit{path: path + "{}", max: int(*s.MaxProperties)})
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range s.Properties {
			if !yield(k) {
				return
			}
		}
	}) {
		p := s.Properties[name]
		out = append(out, schemaLimits(&p, path+"."+name)...)
	}
	if s.Items != nil && s.Items.Schema != nil {
		out = append(out, schemaLimits(s.Items.Schema, path+"[*]")...)
	}
	return out
}

// ruleTemplates are a minimal valid rule of each kind of custom rule.
var ruleTemplates = map[string]func() map[string]any{
	"files": func() map[string]any { return map[string]any{"paths": []any{"/etc/x"}, "permissions": []any{"write"}} },
	"exec":  func() map[string]any { return map[string]any{"paths": []any{"/bin/x"}} },
	"network": func() map[string]any {
		return map[string]any{"egress": map[string]any{"ports": []any{map[string]any{"port": 25}}}}
	},
	"capabilities": func() map[string]any { return map[string]any{"capabilities": []any{"SYS_ADMIN"}} },
	"ptrace":       func() map[string]any { return map[string]any{"permissions": []any{"trace"}} },
	"mounts":       func() map[string]any { return map[string]any{"operations": []any{"mount"}} },
	"operations":   func() map[string]any { return map[string]any{"operations": []any{"bpf"}} },
	"syscalls":     func() map[string]any { return map[string]any{"names": []any{"ptrace"}} },
	"builtinRules": func() map[string]any { return map[string]any{"name": "disallow-mount"} },
}

// syscallNames are real system calls, for lists of syscall names.
var syscallNames = strings.Fields(`read write open close stat fstat lstat poll lseek mmap mprotect munmap brk
	ioctl pread64 pwrite64 readv writev access pipe select sched_yield mremap msync mincore madvise shmget
	shmat shmctl dup dup2 pause nanosleep getitimer alarm setitimer getpid sendfile socket connect accept
	sendto recvfrom sendmsg recvmsg shutdown bind listen getsockname getpeername socketpair setsockopt
	getsockopt clone fork vfork execve exit wait4 kill uname semget semop semctl shmdt msgget msgsnd msgrcv
	msgctl fcntl flock fsync fdatasync truncate ftruncate getdents getcwd chdir fchdir rename mkdir rmdir
	creat link unlink symlink readlink chmod fchmod chown fchown lchown umask gettimeofday getrlimit
	getrusage sysinfo times ptrace getuid syslog getgid setuid setgid geteuid getegid setpgid getppid`)

// item is the i-th item of the list a limit is about, and an n-byte string for a string
// limit; every item of a list is distinct as far as its enum allows.
func item(l sizeLimit, i int, builtins []string) any {
	field := l.path[strings.LastIndex(l.path, ".")+1:]
	field = strings.TrimSuffix(field, "[*]")
	if len(l.enum) > 0 {
		return l.enum[i%len(l.enum)]
	}
	switch field {
	case "builtinRules":
		if i < len(builtins) {
			return map[string]any{"name": builtins[i]}
		}
		return map[string]any{"name": fmt.Sprintf("rule-%d", i)}
	case "paths", "sources", "targets":
		return fmt.Sprintf("/p/%d", i)
	case "capabilities":
		if strings.HasSuffix(l.path, "capabilities[*].capabilities") {
			return string(v1alpha1.AllCapabilities[i%len(v1alpha1.AllCapabilities)])
		}
	case "addresses":
		return fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
	case "ports":
		return map[string]any{"port": i + 1}
	case "args":
		return map[string]any{"index": i % 6, "op": "Equal", "value": i}
	case "names":
		if i < len(syscallNames) {
			return syscallNames[i]
		}
		return fmt.Sprintf("nosuchcall%d", i)
	case "fsTypes":
		return fmt.Sprintf("fs%d", i)
	case "containers":
		return fmt.Sprintf("c%d", i)
	}
	if tmpl, ok := ruleTemplates[field]; ok {
		return tmpl()
	}
	return nil
}

// text is an n-byte value for a string limit: a path of components of at most 255
// bytes for a path, a name otherwise.
func text(l sizeLimit, n int) string {
	if strings.HasSuffix(l.path, "paths[*]") || strings.HasSuffix(l.path, "sources[*]") || strings.HasSuffix(l.path, "targets[*]") {
		var b strings.Builder
		for b.Len() < n {
			b.WriteString("/" + strings.Repeat("a", min(200, n-b.Len()-1)))
			if b.Len() == n-1 { // a trailing "/" is no pattern: lengthen the last component
				b.WriteString("a")
			}
		}
		return b.String()
	}
	return strings.Repeat("a", n)
}

// fill builds a policy whose field at the limit's path holds n items (or n bytes),
// and returns it with the concrete path of that field.
func fill(t *testing.T, l sizeLimit, n int, builtins []string) (map[string]any, string) {
	t.Helper()
	spec := map[string]any{
		"target":    map[string]any{"selector": map[string]any{}},
		"enforcers": []any{"BPF", "AppArmor", "Seccomp"},
		"mode":      "EnhanceProtect",
	}
	obj := map[string]any{
		"apiVersion": "podarmor.io/v1alpha1", "kind": "ArmorPolicy",
		"metadata": map[string]any{"name": "limits", "namespace": "shop"},
		"spec":     spec,
	}
	segs := strings.Split(strings.TrimPrefix(l.path, "spec."), ".")
	cur, concrete := spec, "spec"
	for i, s := range segs {
		name, isList := strings.CutSuffix(s, "[*]")
		last := i == len(segs)-1
		concrete += "." + name
		switch {
		case last && l.length && isList:
			cur[name] = []any{text(l, n)}
			concrete += "[0]"
		case last && l.length:
			cur[name] = text(l, n)
		case last:
			var items []any
			for j := range n {
				v := item(l, j, builtins)
				if v == nil {
					t.Fatalf("%s: no item for this list; teach item() its items", l.path)
				}
				items = append(items, v)
			}
			cur[name] = items
		case isList:
			tmpl, ok := ruleTemplates[name]
			if !ok {
				t.Fatalf("%s: no template for list %s; teach ruleTemplates", l.path, name)
			}
			m := tmpl()
			cur[name] = []any{m}
			cur, concrete = m, concrete+"[0]"
		default:
			m, ok := cur[name].(map[string]any)
			if !ok {
				m = map[string]any{}
				cur[name] = m
			}
			if name == "egress" { // exactly one of sockets and egress
				delete(cur, "sockets")
			}
			if name == "sockets" {
				delete(cur, "egress")
			}
			cur = m
		}
	}
	return obj, concrete
}

// TestSizeLimits puts every list and string of the ArmorPolicy schema at its limit and
// one past it. At the limit the API server's schema check (CRD schema and CEL rules)
// accepts the policy, and podarmor's validation either accepts it or refuses it with
// errors naming that field (a built-in rule that is not in the catalog, an address that
// is not one); one past it, the schema check refuses it naming that field. The limits come
// from the CRD, so a new one is tested as soon as it is added.
func TestSizeLimits(t *testing.T) {
	schema, err := validation.LoadSchema()
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Load()
	if err != nil {
		t.Fatal(err)
	}
	opts := compile.Options{Catalog: cat, APIServer: []netip.Addr{netip.MustParseAddr("10.96.0.1")},
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}
	var builtins []string
	for _, e := range cat.Entries() {
		builtins = append(builtins, e.Name)
	}
	crd, err := crds.Read("podarmor.io_armorpolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec := crd.Spec.Validation.OpenAPIV3Schema.Properties["spec"]
	limits := schemaLimits(&spec, "spec")
	if len(limits) < 40 {
		t.Fatalf("only %d limits in the schema", len(limits))
	}
	for _, l := range limits {
		t.Run(l.path, func(t *testing.T) {
			at := l.max
			if len(l.enum) > 0 && len(l.enum) < at {
				// A set of enum values holds at most every value once: the limit is
				// the enum's size, and maxItems leaves room for values added later.
				at = len(l.enum)
			}
			obj, concrete := fill(t, l, at, builtins)
			if errs := schema.Validate("ArmorPolicy", obj); len(errs) > 0 {
				t.Fatalf("at the limit (%d), the schema check refuses: %v", at, errs)
			}
			var p v1alpha1.ArmorPolicy
			raw, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			res := validation.ArmorPolicy(&p, opts)
			took := time.Since(start)
			for _, e := range res.Errors {
				// The error names the field, or the rule that holds it.
				if !strings.HasPrefix(e.Field, concrete) && !strings.HasPrefix(concrete, e.Field+".") {
					t.Errorf("at the limit, an error that does not name %s: %v", concrete, e)
				}
			}
			if len(res.Errors) > 0 {
				t.Logf("at the limit, the first error: %v", res.Errors[0])
			}
			t.Logf("at the limit (%d): %d errors, validated in %s", at, len(res.Errors), took.Round(time.Millisecond))

			obj, _ = fill(t, l, l.max+1, builtins)
			errs := schema.Validate("ArmorPolicy", obj)
			want := field.ErrorTypeTooMany
			if l.length {
				want = field.ErrorTypeTooLong
			}
			found := false
			for _, e := range errs {
				found = found || (e.Field == concrete && e.Type == want)
			}
			if !found {
				t.Errorf("one past the limit (%d), no %s error for %s: %v", l.max+1, want, concrete, errs)
			}
		})
	}
}

// TestClusterPolicyLimits checks that a ClusterArmorPolicy's spec has the limits of an
// ArmorPolicy's, which TestSizeLimits tests.
func TestClusterPolicyLimits(t *testing.T) {
	limitsOf := func(file string) map[string]int {
		crd, err := crds.Read(file)
		if err != nil {
			t.Fatal(err)
		}
		spec := crd.Spec.Validation.OpenAPIV3Schema.Properties["spec"]
		out := map[string]int{}
		for _, l := range schemaLimits(&spec, "spec") {
			out[fmt.Sprintf("%s length=%v", l.path, l.length)] = l.max
		}
		return out
	}
	namespaced, cluster := limitsOf("podarmor.io_armorpolicies.yaml"), limitsOf("podarmor.io_clusterarmorpolicies.yaml")
	for k, v := range namespaced {
		if cluster[k] != v {
			t.Errorf("%s: %d in ArmorPolicy, %d in ClusterArmorPolicy", k, v, cluster[k])
		}
	}
	selector := regexp.MustCompile(`^spec\.namespaceSelector`)
	for k := range cluster {
		if _, ok := namespaced[k]; !ok && !selector.MatchString(k) {
			t.Errorf("%s: only in ClusterArmorPolicy", k)
		}
	}
}

// TestSelectorLimits puts the label selectors of both kinds at their limits and one past
// them: podarmor's validation (the policy webhook, the CLI) accepts the first and refuses
// the second, naming the field. The CRD schema has no such limit yet (the chart's copy of
// the CRDs is being reworked); it must accept the first.
func TestSelectorLimits(t *testing.T) {
	schema, err := validation.LoadSchema()
	if err != nil {
		t.Fatal(err)
	}
	opts := compile.Options{}
	selector := func(labels, exprs, values int) map[string]any {
		sel := map[string]any{}
		if labels > 0 {
			m := map[string]any{}
			for i := range labels {
				m[fmt.Sprintf("l%d", i)] = "v"
			}
			sel["matchLabels"] = m
		}
		if exprs > 0 || values > 0 {
			var es []any
			for i := range max(exprs, 1) {
				vs := []any{"v"}
				if values > 0 {
					vs = nil
					for j := range values {
						vs = append(vs, fmt.Sprintf("v%d", j))
					}
				}
				es = append(es, map[string]any{"key": fmt.Sprintf("k%d", i), "operator": "In", "values": vs})
			}
			sel["matchExpressions"] = es
		}
		return sel
	}
	tests := map[string]struct {
		labels, exprs, values int
		field                 string // the field past the limit, under the selector
	}{
		"labels":                  {labels: v1alpha1.MaxSelectorLabels, field: "matchLabels"},
		"expressions":             {exprs: v1alpha1.MaxSelectorExpressions, field: "matchExpressions"},
		"values of an expression": {values: v1alpha1.MaxSelectorValues, field: "matchExpressions"},
	}
	for name, tc := range tests {
		for _, kind := range []string{"ArmorPolicy", "ClusterArmorPolicy"} {
			t.Run(kind+" "+name, func(t *testing.T) {
				for _, past := range []bool{false, true} {
					n := func(v int) int {
						if past && v > 0 {
							return v + 1
						}
						return v
					}
					sel := selector(n(tc.labels), n(tc.exprs), n(tc.values))
					spec := map[string]any{"target": map[string]any{"selector": map[string]any{}}, "enforcers": []any{"BPF"}, "mode": "RuntimeDefault"}
					obj := map[string]any{"apiVersion": "podarmor.io/v1alpha1", "kind": kind, "spec": spec}
					selPath := "spec.target.selector"
					if kind == "ArmorPolicy" {
						obj["metadata"] = map[string]any{"name": "p", "namespace": "shop"}
						spec["target"] = map[string]any{"selector": sel}
					} else {
						obj["metadata"] = map[string]any{"name": "p"}
						spec["namespaceSelector"] = sel
						selPath = "spec.namespaceSelector"
					}
					raw, err := json.Marshal(obj)
					if err != nil {
						t.Fatal(err)
					}
					var res validation.Result
					if kind == "ArmorPolicy" {
						var p v1alpha1.ArmorPolicy
						if err := json.Unmarshal(raw, &p); err != nil {
							t.Fatal(err)
						}
						res = validation.ArmorPolicy(&p, opts)
					} else {
						var p v1alpha1.ClusterArmorPolicy
						if err := json.Unmarshal(raw, &p); err != nil {
							t.Fatal(err)
						}
						res = validation.ClusterArmorPolicy(&p, opts)
					}
					serrs := schema.Validate(kind, obj)
					if !past {
						if len(serrs) > 0 || len(res.Errors) > 0 {
							t.Fatalf("at the limit: schema %v, validation %v", serrs, res.Errors)
						}
						continue
					}
					for what, errs := range map[string]field.ErrorList{"validation": res.Errors} {
						named := false
						for _, e := range errs {
							named = named || strings.HasPrefix(e.Field, selPath+"."+tc.field)
						}
						if !named {
							t.Errorf("one past the limit, %s gives no error naming %s.%s: %v", what, selPath, tc.field, errs)
						}
					}
				}
			})
		}
	}
}
