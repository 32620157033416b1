//go:build vmguest

package bpf

import (
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/pattern"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// TestPatternTableInKernel holds the kernel to the shared table of pattern cases: for
// each pattern, a profile denies reading and chmod on it, and a container chrooted into a
// tree holding every path of the pattern's cases opens each path (file_open, resolved
// by bpf_d_path) and chmods it (path_chmod, resolved by podarmor's own walk). A path the
// pattern matches must be refused both ways; any other allowed both ways.
func TestPatternTableInKernel(t *testing.T) {
	e := enforcer(t)
	byPattern := map[string][]pattern.Case{}
	var order []string
	for _, c := range pattern.Cases() {
		if _, ok := byPattern[c.Pattern]; !ok {
			order = append(order, c.Pattern)
		}
		byPattern[c.Pattern] = append(byPattern[c.Pattern], c)
	}
	for i, pat := range order {
		cases := byPattern[pat]
		root := fmt.Sprintf("/ptab/%d", i)
		var paths []string
		for _, c := range cases {
			paths = append(paths, c.Path)
		}
		containerRoot(t)
		makeTree(t, inRoot(root), paths)
		const id = "pattern" // rewritten for each pattern while its container runs
		if err := e.SetProfile(profileOf(id, ruleset.Rule{ID: "custom/pattern", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindFile,
			File: &ruleset.File{Paths: []string{pat}, Permissions: []v1alpha1.FilePermission{v1alpha1.FileRead, v1alpha1.FileChmod}}})); err != nil {
			t.Fatalf("pattern %q: %v", pat, err)
		}
		o := inSandbox(t, e, id, append([]string{"chroot-check", root}, paths...)...)
		lines := strings.Split(strings.TrimSpace(o.out), "\n")
		if o.code != 0 || len(lines) != len(paths)+1 {
			t.Fatalf("pattern %q: helper: %v", pat, o)
		}
		for j, c := range cases {
			want := "ok ok"
			if c.Match {
				want = "EPERM EPERM"
			}
			if lines[j] != want {
				t.Errorf("pattern %q, path %s (%s): open and chmod gave %q, want %q", pat, short(c.Path), c.Note, lines[j], want)
			}
		}
	}
	closeSandboxes()
	if err := e.RemoveProfile("pattern"); err != nil {
		t.Fatal(err)
	}
}

func short(p string) string {
	if len(p) > 80 {
		return fmt.Sprintf("%q... (%d bytes)", p[:60], len(p))
	}
	return fmt.Sprintf("%q", p)
}

// makeTree creates every path under root: a path another one extends is a directory,
// the others are files. It works relative to root, as the paths may be near PATH_MAX.
func makeTree(t *testing.T, root string, paths []string) {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	isDir := func(p string) bool {
		return p == "/" || slices.ContainsFunc(paths, func(q string) bool { return strings.HasPrefix(q, p+"/") })
	}
	for _, p := range paths {
		rel := strings.TrimPrefix(p, "/")
		if rel == "" {
			continue
		}
		if isDir(p) {
			if err := r.MkdirAll(rel, 0o755); err != nil {
				t.Fatalf("mkdir %s: %v", short(p), err)
			}
			continue
		}
		if dir := path.Dir(rel); dir != "." {
			if err := r.MkdirAll(dir, 0o755); err != nil {
				t.Fatalf("mkdir %s: %v", short(dir), err)
			}
		}
		f, err := r.OpenFile(rel, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatalf("create %s: %v", short(p), err)
		}
		f.Close()
	}
}
