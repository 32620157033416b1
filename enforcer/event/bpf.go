package event

import (
	"bytes"
	"fmt"
	"net/netip"
	"time"

	"github.com/podarmor/podarmor/enforcer/tables"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// permNames are the file permissions by tables.Perm.
var permNames = [tables.NumPerms]string{
	tables.PermRead: "read", tables.PermWrite: "write", tables.PermAppend: "append",
	tables.PermCreate: "create", tables.PermDelete: "delete", tables.PermRename: "rename",
	tables.PermLink: "link", tables.PermChmod: "chmod", tables.PermChown: "chown", tables.PermExec: "exec",
}

// opNames are the operations of operation rules by tables.Op.
var opNames = [tables.NumOps]v1alpha1.Operation{
	tables.OpBPF: v1alpha1.OperationBPF, tables.OpKernelModule: v1alpha1.OperationKernelModule,
	tables.OpUsernsCreate: v1alpha1.OperationUsernsCreate, tables.OpUserfaultfd: v1alpha1.OperationUserfaultfd,
	tables.OpIoUring: v1alpha1.OperationIoUring, tables.OpPerfEvent: v1alpha1.OperationPerfEvent,
	tables.OpChmodSetuid: v1alpha1.OperationChmodSetuid,
}

var ptraceNames = [tables.NumPtrace]string{
	tables.PtraceTrace: "trace", tables.PtraceRead: "read", tables.PtraceTracedBy: "tracedby", tables.PtraceReadBy: "readby",
}

var mountNames = [tables.NumMountOps]string{
	tables.MountMount: "mount", tables.MountUmount: "umount", tables.MountPivotRoot: "pivotroot",
}

// Linux's numbers (linux/socket.h, linux/net.h, linux/in.h) of the families, types and
// protocols the API names.
var (
	familyNames = map[uint32]string{1: "unix", 2: "inet", 10: "inet6", 15: "key", 16: "netlink", 17: "packet",
		21: "rds", 26: "llc", 29: "can", 30: "tipc", 31: "bluetooth", 38: "alg", 40: "vsock", 44: "xdp"}
	typeNames  = map[uint32]string{1: "stream", 2: "dgram", 3: "raw", 4: "rdm", 5: "seqpacket", 10: "packet"}
	protoNames = map[uint32]string{1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite"}
)

func name[K comparable](m map[K]string, k K) string {
	if s, ok := m[k]; ok {
		return s
	}
	return fmt.Sprint(k)
}

func indexName[T ~string](names []T, i uint32) string {
	if int(i) < len(names) && names[i] != "" {
		return string(names[i])
	}
	return fmt.Sprintf("#%d", i)
}

// FromBPF is the record of a BPF enforcer event. profile, rule, path and addr are what
// enforcer/bpf decoded (bpf.Event); te is the raw event.
func FromBPF(te tables.Event, profile, rule, path string, addr netip.AddrPort) Record {
	r := Record{
		Time:           time.Now().UTC(),
		Enforcer:       v1alpha1.EnforcerBPF,
		Action:         v1alpha1.ActionEnforce,
		Profile:        profile,
		Rule:           rule,
		Hook:           te.Hook.String(),
		Path:           path,
		MountNamespace: te.Container,
		PID:            te.TGID,
		Comm:           string(bytes.TrimRight(te.Comm[:], "\x00")),
	}
	if te.Action == tables.ActionAudit {
		r.Action = v1alpha1.ActionAudit
	}
	if addr.IsValid() {
		r.Address = addr.String()
	}
	switch te.Hook {
	case tables.HookFileOpen, tables.HookPath, tables.HookExec:
		r.Operation = indexName(permNames[:], te.Detail)
		if te.Hook == tables.HookPath && te.Detail == uint32(tables.PermRename) && te.Detail2 == 1 {
			r.Operation = "rename (a directory holding guarded files)"
		}
	case tables.HookCapable:
		r.Operation = "capability " + indexName(v1alpha1.AllCapabilities, te.Detail)
	case tables.HookSocketCreate:
		r.Operation = fmt.Sprintf("socket %s/%s", name(familyNames, te.Detail), name(typeNames, te.Detail2>>16))
		if p := te.Detail2 & 0xffff; p != 0 {
			r.Operation += "/" + name(protoNames, p)
		}
	case tables.HookConnect, tables.HookSendmsg:
		r.Operation = "connect"
		if te.Hook == tables.HookSendmsg {
			r.Operation = "sendmsg"
		}
		if addr.IsValid() {
			r.Operation += " " + name(protoNames, te.Detail)
		}
	case tables.HookPtrace:
		r.Operation = fmt.Sprintf("ptrace %s", indexName(ptraceNames[:], te.Detail))
		if te.Detail2 != 0 {
			r.Operation += fmt.Sprintf(" (peer pid %d)", te.Detail2)
		}
	case tables.HookMount:
		r.Operation = indexName(mountNames[:], te.Detail)
	case tables.HookOperation:
		r.Operation = indexName(opNames[:], te.Detail)
	default:
		r.Operation = fmt.Sprintf("hook #%d", te.Hook)
	}
	return r
}
