package apparmor

import (
	"strings"
	"testing"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

func TestExpress(t *testing.T) {
	b, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	// reason is empty for a rule Express accepts, and otherwise a part of its error.
	tests := map[string]struct {
		rule   ruleset.Rule
		reason string
	}{
		"denying every change to files is w":          {fileRule("x", enforce, everyChange, "/etc/**"), ""},
		"every change and link adds link rules":       {fileRule("x", enforce, everyChangeAndLink, "/etc/**"), ""},
		"every access is rw":                          {fileRule("x", enforce, everyAccess, "/etc/shadow"), ""},
		"append alone is a":                           {fileRule("x", enforce, []v1alpha1.FilePermission{"append"}, "/log"), ""},
		"link alone is two link rules":                {fileRule("x", enforce, []v1alpha1.FilePermission{"link"}, "/x"), ""},
		"auditing every change is exact":              {fileRule("x", audit, everyChange, "/etc/**"), ""},
		"read alone also takes renaming":              {fileRule("x", enforce, []v1alpha1.FilePermission{"read"}, "/etc/shadow"), "renaming the file away"},
		"read with some changes also takes the rest":  {fileRule("x", enforce, []v1alpha1.FilePermission{"read", "write"}, "/x"), "renaming the file away"},
		"write alone also takes create and the rest":  {fileRule("x", enforce, []v1alpha1.FilePermission{"write"}, "/x"), "lacks append, create, delete, rename, chmod, chown"},
		"delete alone is not separable":               {fileRule("x", enforce, []v1alpha1.FilePermission{"delete"}, "/x"), "one w permission"},
		"chmod and chown alone are not separable":     {fileRule("x", enforce, []v1alpha1.FilePermission{"chmod", "chown"}, "/x"), "one w permission"},
		"auditing read would record stat":             {fileRule("x", audit, everyAccess, "/etc/shadow"), "stat(2)"},
		"an invalid pattern is refused":               {fileRule("x", enforce, everyChange, "/etc/../x"), `".." path component`},
		"a relative pattern is refused":               {fileRule("x", enforce, everyChange, "etc"), "relative pattern"},
		"a file rule needs paths":                     {fileRule("x", enforce, everyChange), "no paths"},
		"a file rule needs permissions":               {fileRule("x", enforce, nil, "/x"), "no permissions"},
		"an unknown file permission is refused":       {fileRule("x", enforce, []v1alpha1.FilePermission{"execute"}, "/x"), "unknown file permission"},
		"exec is x":                                   {execRule("x", enforce, "/bin/sh"), ""},
		"exec can be audited":                         {execRule("x", audit, "/bin/sh"), ""},
		"capabilities are exact":                      {capRule("x", enforce, "SYS_ADMIN", "BPF", "PERFMON"), ""},
		"checkpoint_restore is compiled as sys_admin": {capRule("x", enforce, "CHECKPOINT_RESTORE"), "sys_admin"},
		"an unknown capability is refused":            {capRule("x", enforce, "SYS_EVERYTHING"), "unknown capability"},
		"sockets by family and type":                  {socketRule("x", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"inet"}, Types: []v1alpha1.SocketType{"raw"}}), ""},
		"sockets by family":                           {socketRule("x", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"vsock", "packet"}}), ""},
		"sockets by protocol":                         {socketRule("x", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"inet"}, Protocols: []v1alpha1.Protocol{"icmp"}}), "not its protocol"},
		"unix sockets":                                {socketRule("x", enforce, ruleset.Socket{Families: []v1alpha1.SocketFamily{"inet", "unix"}}), "af_unix"},
		"sockets of every family":                     {socketRule("x", enforce, ruleset.Socket{}), "af_unix"},
		"auditing sockets":                            {socketRule("x", audit, ruleset.Socket{Families: []v1alpha1.SocketFamily{"packet"}}), "every operation"},
		"egress":                                      {ruleset.Rule{ID: "x", Action: enforce, Kind: ruleset.KindEgress, Egress: &ruleset.Egress{}}, "AppArmor cannot match IP addresses or ports"},
		"ptrace trace and read towards anyone":        {ptraceRule("x", enforce, v1alpha1.PtraceAnyPeer, "trace", "read"), ""},
		"ptrace outside the container":                {ptraceRule("x", enforce, v1alpha1.PtraceOutsideContainer, "trace"), "OutsideContainer"},
		"ptrace tracedby":                             {ptraceRule("x", enforce, v1alpha1.PtraceAnyPeer, "tracedby"), "unconfined host processes"},
		"ptrace readby":                               {ptraceRule("x", enforce, v1alpha1.PtraceAnyPeer, "read", "readby"), "unconfined host processes"},
		"ptrace without peers":                        {ptraceRule("x", enforce, "", "trace"), "unknown ptrace peers"},
		"umount":                                      {mountRule("x", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"umount"}}), ""},
		"umount of mount points":                      {mountRule("x", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"umount"}, Targets: []string{"/proc/**"}}), ""},
		"pivot_root":                                  {mountRule("x", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"pivotroot"}}), ""},
		"mount":                                       {mountRule("x", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"mount"}}), "new mount API"},
		"mount with umount":                           {mountRule("x", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"umount", "mount"}}), "new mount API"},
		"umount by file system type":                  {mountRule("x", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"umount"}, FSTypes: []string{"proc"}}), "file system types"},
		"umount by flag":                              {mountRule("x", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"umount"}, Flags: []v1alpha1.MountFlag{"ro"}}), "mount flags"},
		"umount by source":                            {mountRule("x", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"umount"}, Sources: []string{"/dev/sda"}}), "mount sources"},
		"pivot_root with a target":                    {mountRule("x", enforce, ruleset.Mount{Operations: []v1alpha1.MountOperation{"pivotroot"}, Targets: []string{"/new"}}), "which path of pivot_root"},
		"kernel modules":                              {operationRule("x", enforce, "kernelModule"), "delete_module"},
		"bpf":                                         {operationRule("x", enforce, "bpf"), "no bpf rule"},
		"user namespaces":                             {operationRule("x", enforce, "usernsCreate"), "abi 4.0"},
		"userfaultfd":                                 {operationRule("x", enforce, "userfaultfd"), "userfaultfd(2)"},
		"io_uring":                                    {operationRule("x", enforce, "ioUring"), "io_uring"},
		"perf events":                                 {operationRule("x", enforce, "perfEvent"), "perf_event_open"},
		"set-user-ID bits":                            {operationRule("x", enforce, "chmodSetuid"), "mode chmod(2) sets"},
		"syscalls":                                    {ruleset.Rule{ID: "x", Action: enforce, Kind: ruleset.KindSyscall, Syscall: &ruleset.Syscall{Names: []string{"ptrace"}}}, "system call rules are Seccomp's"},
		"an unknown kind":                             {ruleset.Rule{ID: "x", Action: enforce, Kind: "quantum"}, "unknown rule kind"},
		"a kind without its match":                    {ruleset.Rule{ID: "x", Action: enforce, Kind: ruleset.KindFile}, "no file match"},
		"an unknown action":                           {ruleset.Rule{ID: "x", Action: "Complain", Kind: ruleset.KindFile}, "unknown action"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := b.Express(tt.rule)
			switch {
			case tt.reason == "" && err != nil:
				t.Errorf("Express: %v, want nil", err)
			case tt.reason != "" && err == nil:
				t.Errorf("Express: nil, want an error about %q", tt.reason)
			case tt.reason != "" && !strings.Contains(err.Error(), tt.reason):
				t.Errorf("Express: %v, want an error about %q", err, tt.reason)
			}
		})
	}
}
