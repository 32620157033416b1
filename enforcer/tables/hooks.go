package tables

import (
	"slices"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// Hooks are the LSM hooks whose programs enforce rule r (docs/enforcer.md, "Hooks"):
// when the kernel lacks one of them, the rule is not (or only partly) enforced by BPF.
func Hooks(r ruleset.Rule) []string {
	var hs []string
	switch r.Kind {
	case ruleset.KindFile:
		if r.File == nil {
			return nil
		}
		for _, p := range r.File.Permissions {
			hs = append(hs, filePermissionHooks[p]...)
		}
	case ruleset.KindExec:
		hs = []string{"bprm_check_security"}
	case ruleset.KindSocket:
		hs = []string{"socket_create"}
	case ruleset.KindEgress:
		hs = []string{"socket_connect", "socket_sendmsg"}
	case ruleset.KindCapability:
		hs = []string{"capable"}
	case ruleset.KindPtrace:
		hs = []string{"ptrace_access_check", "ptrace_traceme"}
	case ruleset.KindMount:
		if r.Mount == nil {
			return nil
		}
		for _, op := range r.Mount.Operations {
			hs = append(hs, mountHooks[op]...)
		}
	case ruleset.KindOperation:
		if r.Operation == nil {
			return nil
		}
		for _, op := range r.Operation.Operations {
			hs = append(hs, operationHooks[op]...)
		}
	}
	slices.Sort(hs)
	return slices.Compact(hs)
}

var filePermissionHooks = map[v1alpha1.FilePermission][]string{
	v1alpha1.FileRead:   {"file_open", "file_receive"},
	v1alpha1.FileWrite:  {"file_open", "file_receive", "path_truncate", "unix_stream_connect", "unix_may_send"},
	v1alpha1.FileAppend: {"file_open", "file_receive"},
	v1alpha1.FileCreate: {"path_mknod", "path_mkdir", "path_symlink"},
	v1alpha1.FileDelete: {"path_unlink", "path_rmdir"},
	v1alpha1.FileRename: {"path_rename"},
	v1alpha1.FileLink:   {"path_link"},
	v1alpha1.FileChmod:  {"path_chmod"},
	v1alpha1.FileChown:  {"path_chown"},
}

var mountHooks = map[v1alpha1.MountOperation][]string{
	v1alpha1.MountMount:     {"sb_mount", "move_mount", "sb_remount"},
	v1alpha1.MountUmount:    {"sb_umount"},
	v1alpha1.MountPivotRoot: {"sb_pivotroot"},
}

var operationHooks = map[v1alpha1.Operation][]string{
	v1alpha1.OperationBPF:          {"bpf"},
	v1alpha1.OperationKernelModule: {"kernel_module_request", "kernel_read_file", "kernel_load_data"},
	v1alpha1.OperationUsernsCreate: {"userns_create"},
	v1alpha1.OperationUserfaultfd:  {"inode_init_security_anon"},
	v1alpha1.OperationIoUring:      {"inode_init_security_anon"},
	v1alpha1.OperationPerfEvent:    {"perf_event_open"},
	v1alpha1.OperationChmodSetuid:  {"path_chmod"},
}
