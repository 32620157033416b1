package profiles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podarmor/podarmor/enforcer/policyset"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/catalog"
	"github.com/podarmor/podarmor/policies/compile"
	compilebpf "github.com/podarmor/podarmor/policies/compile/bpf"
)

// fakes record what is loaded, and the calls that changed it.
type fakeBPF struct {
	loaded map[string]int // profile -> number of rules
	calls  []string
	fail   string
}

func (f *fakeBPF) SetProfile(p *compilebpf.Profile) error {
	if p.ProfileID == f.fail {
		return errors.New("bpf: no space")
	}
	f.loaded[p.ProfileID] = len(p.Rules)
	f.calls = append(f.calls, "set "+p.ProfileID)
	return nil
}
func (f *fakeBPF) RemoveProfile(id string) error {
	if _, ok := f.loaded[id]; ok {
		f.calls = append(f.calls, "remove "+id)
	}
	delete(f.loaded, id)
	return nil
}
func (f *fakeBPF) Profiles() []string { return slices.Sorted(maps.Keys(f.loaded)) }

type fakeAppArmor struct {
	loaded map[string]string // name -> text
	calls  []string
}

func (f *fakeAppArmor) Load(_ context.Context, name string, text []byte) error {
	f.loaded[name] = string(text)
	f.calls = append(f.calls, "load "+name)
	return nil
}
func (f *fakeAppArmor) Current(name string, text []byte) bool { return f.loaded[name] == string(text) }
func (f *fakeAppArmor) Remove(name string) error {
	if _, ok := f.loaded[name]; ok {
		f.calls = append(f.calls, "remove "+name)
	}
	for n := range f.loaded {
		if n == name || strings.HasPrefix(n, name+"//") { // its hats go with it
			delete(f.loaded, n)
		}
	}
	return nil
}
func (f *fakeAppArmor) Loaded() (map[string]string, error) {
	out := map[string]string{}
	for n := range f.loaded {
		out[n] = "enforce"
	}
	return out, nil
}

type fakeSeccomp struct {
	files map[string]string
	calls []string
}

func (f *fakeSeccomp) Write(id string, content []byte) (string, error) {
	f.files[id] = string(content)
	f.calls = append(f.calls, "write "+id)
	return id, nil
}
func (f *fakeSeccomp) Remove(id string) error {
	if _, ok := f.files[id]; ok {
		f.calls = append(f.calls, "remove "+id)
	}
	delete(f.files, id)
	return nil
}
func (f *fakeSeccomp) List() ([]string, error) { return slices.Sorted(maps.Keys(f.files)), nil }

func compiled(t *testing.T, docs ...string) []policyset.Compiled {
	t.Helper()
	file := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(file, []byte(strings.Join(docs, "\n---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Load()
	if err != nil {
		t.Fatal(err)
	}
	backends, err := compile.DefaultBackends()
	if err != nil {
		t.Fatal(err)
	}
	out, err := policyset.Read([]string{file}, compile.Options{Catalog: cat, Backends: backends})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func policy(name, enforcers, rules string) string {
	return fmt.Sprintf(`apiVersion: podarmor.io/v1alpha1
kind: ArmorPolicy
metadata: {name: %s, namespace: shop}
spec:
  target: {selector: {}}
  enforcers: [%s]
  mode: EnhanceProtect
  builtinRules: [%s]
`, name, enforcers, rules)
}

func summary(rs []Result) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "%s:", r.ProfileID)
		for _, e := range r.Enforcers {
			fmt.Fprintf(&b, " %s=%s", e.Enforcer, e.State)
			for _, n := range e.NotEnforced {
				fmt.Fprintf(&b, " -%s", n.RuleID)
			}
		}
		b.WriteString("; ")
	}
	return b.String()
}

func TestApply(t *testing.T) {
	ctx := context.Background()
	bpf := &fakeBPF{loaded: map[string]int{"ap.old.left": 3}}
	aa := &fakeAppArmor{loaded: map[string]string{"podarmor-ap.old.left": "x", "podarmor-ap.old.left//hat": "x", "docker-default": "x"}}
	sc := &fakeSeccomp{files: map[string]string{"ap.old.left": "{}"}}
	var observed []string
	observe := func(e v1alpha1.Enforcer, took time.Duration, err error) {
		if took <= 0 {
			t.Errorf("%s load observed taking %v", e, took)
		}
		observed = append(observed, fmt.Sprintf("%s:%v", e, err == nil))
	}
	m := New(Config{BPF: bpf, AppArmor: aa, Seccomp: sc, Logger: slog.New(slog.DiscardHandler),
		MissingHooks: map[string]string{"userns_create": "not in this kernel"}, Observe: observe})

	web := policy("web", "BPF, AppArmor, Seccomp", "{name: disallow-mount}, {name: disallow-create-userns}")
	db := policy("db", "AppArmor", "{name: disallow-write-core-pattern}")
	res := m.Apply(ctx, compiled(t, web, db))
	if got, want := summary(res), "ap.shop.web: BPF=Loaded -builtin/runtime-default-userns -builtin/disallow-create-userns AppArmor=Loaded Seccomp=Loaded; ap.shop.db: AppArmor=Loaded; "; got != want {
		t.Errorf("first apply:\n got %s\nwant %s", got, want)
	}
	if !strings.Contains(res[0].Enforcers[0].NotEnforced[0].Reason, "userns_create") {
		t.Errorf("not enforced: %+v", res[0].Enforcers[0].NotEnforced)
	}
	// What an earlier enforcer left is removed; what podarmor does not own stays.
	if got := fmt.Sprint(bpf.Profiles(), slices.Sorted(maps.Keys(aa.loaded)), slices.Sorted(maps.Keys(sc.files))); got !=
		"[ap.shop.web] [docker-default podarmor-ap.shop.db podarmor-ap.shop.web] [ap.shop.web]" {
		t.Errorf("after the first apply: %s", got)
	}
	if known, usesBPF, err := m.Lookup("ap.shop.web"); !known || !usesBPF || err != nil {
		t.Errorf("lookup web: %v %v %v", known, usesBPF, err)
	}
	if known, usesBPF, err := m.Lookup("ap.shop.db"); !known || usesBPF || err != nil {
		t.Errorf("lookup db: %v %v %v", known, usesBPF, err)
	}

	// The same policies again: nothing is reloaded.
	bpf.calls, aa.calls, sc.calls = nil, nil, nil
	m.Apply(ctx, compiled(t, web, db))
	if len(bpf.calls)+len(aa.calls)+len(sc.calls) != 0 {
		t.Errorf("unchanged policies reloaded: %v %v %v", bpf.calls, aa.calls, sc.calls)
	}

	// web changes and drops Seccomp; db goes.
	web2 := policy("web", "BPF, AppArmor", "{name: disallow-mount}")
	res = m.Apply(ctx, compiled(t, web2))
	if got := fmt.Sprint(bpf.calls, aa.calls, sc.calls); got != "[set ap.shop.web] [load podarmor-ap.shop.web remove podarmor-ap.shop.db] [remove ap.shop.web]" {
		t.Errorf("update: calls %s", got)
	}
	if known, _, _ := m.Lookup("ap.shop.db"); known || len(res) != 1 {
		t.Errorf("db still known after its removal")
	}

	// One policy failing does not stop the other; its containers are refused.
	bpf.fail = "ap.shop.bad"
	res = m.Apply(ctx, compiled(t, web2, policy("bad", "BPF", "{name: disallow-mount}")))
	if got := summary(res); got != "ap.shop.web: BPF=Loaded -builtin/runtime-default-userns AppArmor=Loaded; ap.shop.bad: BPF=Failed; " {
		t.Errorf("with a failing policy: %s", got)
	}
	if _, _, err := m.Lookup("ap.shop.bad"); err == nil || !strings.Contains(err.Error(), "no space") {
		t.Errorf("lookup of a failed profile: %v", err)
	}
	// Retried on the next apply.
	bpf.fail = ""
	if got := summary(m.Apply(ctx, compiled(t, web2, policy("bad", "BPF", "{name: disallow-mount}")))); got != "ap.shop.web: BPF=Loaded -builtin/runtime-default-userns AppArmor=Loaded; ap.shop.bad: BPF=Loaded -builtin/runtime-default-userns; " {
		t.Errorf("retry: %s", got)
	}
	// Every load is observed once, with its outcome; what stayed as it was is not.
	if got, want := strings.Join(observed, " "), "BPF:true AppArmor:true Seccomp:true AppArmor:true BPF:true AppArmor:true BPF:false BPF:true"; got != want {
		t.Errorf("observed loads:\n got %s\nwant %s", got, want)
	}
}

func TestApplyWithoutEnforcers(t *testing.T) {
	m := New(Config{BPFMissing: "BPF LSM is not active (lsm=...)", AppArmorMissing: "AppArmor is not active", Seccomp: &fakeSeccomp{files: map[string]string{}},
		Logger: slog.New(slog.DiscardHandler)})
	res := m.Apply(context.Background(), compiled(t, policy("web", "BPF, AppArmor, Seccomp", "{name: disallow-mount}")))
	if got := summary(res); got != "ap.shop.web: BPF=Unsupported AppArmor=Unsupported Seccomp=Loaded; " {
		t.Errorf("got %s", got)
	}
	if res[0].Enforcers[0].Reason != "BPF LSM is not active (lsm=...)" || !res[0].Ready() {
		t.Errorf("result %+v", res[0])
	}
	if known, usesBPF, err := m.Lookup("ap.shop.web"); !known || usesBPF || err != nil {
		t.Errorf("lookup: %v %v %v", known, usesBPF, err)
	}
}
