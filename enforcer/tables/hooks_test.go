package tables

import (
	"bytes"
	"debug/elf"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/bpfprog/object"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// TestHooksExist checks that every hook Hooks names has a program in the BPF object, and
// that every permission, mount operation and operation of the API has hooks.
func TestHooksExist(t *testing.T) {
	f, err := elf.NewFile(bytes.NewReader(object.Object))
	if err != nil {
		t.Fatal(err)
	}
	programs := map[string]bool{}
	for _, s := range f.Sections {
		for _, prefix := range []string{"lsm/", "lsm.s/"} {
			if name, ok := strings.CutPrefix(s.Name, prefix); ok {
				programs[name] = true
			}
		}
	}
	rules := []ruleset.Rule{
		{Kind: ruleset.KindExec}, {Kind: ruleset.KindSocket}, {Kind: ruleset.KindEgress},
		{Kind: ruleset.KindCapability}, {Kind: ruleset.KindPtrace},
	}
	for _, p := range []v1alpha1.FilePermission{v1alpha1.FileRead, v1alpha1.FileWrite, v1alpha1.FileAppend, v1alpha1.FileCreate,
		v1alpha1.FileDelete, v1alpha1.FileRename, v1alpha1.FileLink, v1alpha1.FileChmod, v1alpha1.FileChown} {
		rules = append(rules, ruleset.Rule{ID: string(p), Kind: ruleset.KindFile, File: &ruleset.File{Permissions: []v1alpha1.FilePermission{p}}})
	}
	for _, op := range []v1alpha1.MountOperation{v1alpha1.MountMount, v1alpha1.MountUmount, v1alpha1.MountPivotRoot} {
		rules = append(rules, ruleset.Rule{ID: string(op), Kind: ruleset.KindMount, Mount: &ruleset.Mount{Operations: []v1alpha1.MountOperation{op}}})
	}
	for _, op := range []v1alpha1.Operation{v1alpha1.OperationBPF, v1alpha1.OperationKernelModule, v1alpha1.OperationUsernsCreate,
		v1alpha1.OperationUserfaultfd, v1alpha1.OperationIoUring, v1alpha1.OperationPerfEvent, v1alpha1.OperationChmodSetuid} {
		rules = append(rules, ruleset.Rule{ID: string(op), Kind: ruleset.KindOperation, Operation: &ruleset.Operation{Operations: []v1alpha1.Operation{op}}})
	}
	for _, r := range rules {
		hs := Hooks(r)
		if len(hs) == 0 {
			t.Errorf("%s %s: no hooks", r.Kind, r.ID)
		}
		for _, h := range hs {
			if !programs[h] {
				t.Errorf("%s %s: hook %s has no program in the BPF object", r.Kind, r.ID, h)
			}
		}
	}
	if hs := Hooks(ruleset.Rule{Kind: ruleset.KindSyscall}); len(hs) != 0 {
		t.Errorf("syscall rules are seccomp's, yet BPF hooks %v", hs)
	}
}
