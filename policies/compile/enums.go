package compile

import "github.com/podarmor/podarmor/policies/api/v1alpha1"

// The values of each enum of the API, in the order compiled output lists them. The CRD
// schema carries the same lists; TestEnumsMatchCRD keeps the two in step.
var (
	filePermissions = []v1alpha1.FilePermission{
		v1alpha1.FileRead, v1alpha1.FileWrite, v1alpha1.FileAppend, v1alpha1.FileCreate,
		v1alpha1.FileDelete, v1alpha1.FileRename, v1alpha1.FileLink, v1alpha1.FileChmod,
		v1alpha1.FileChown,
	}
	socketFamilies = []v1alpha1.SocketFamily{
		"unix", "inet", "inet6", "netlink", "packet", "alg", "vsock", "xdp", "bluetooth",
		"can", "tipc", "rds", "llc", "key",
	}
	socketTypes       = []v1alpha1.SocketType{"stream", "dgram", "raw", "seqpacket", "rdm", "packet"}
	protocols         = []v1alpha1.Protocol{"tcp", "udp", "icmp", "icmpv6", "sctp", "udplite"}
	ptracePermissions = []v1alpha1.PtracePermission{
		v1alpha1.PtraceTrace, v1alpha1.PtraceRead, v1alpha1.PtraceTracedBy, v1alpha1.PtraceReadBy,
	}
	ptracePeers     = []v1alpha1.PtracePeers{v1alpha1.PtraceAnyPeer, v1alpha1.PtraceOutsideContainer}
	mountOperations = []v1alpha1.MountOperation{v1alpha1.MountMount, v1alpha1.MountUmount, v1alpha1.MountPivotRoot}
	mountFlags      = []v1alpha1.MountFlag{
		"ro", "nosuid", "nodev", "noexec", "remount", "bind", "rbind", "move", "shared",
		"private", "slave", "unbindable",
	}
	operations = []v1alpha1.Operation{
		v1alpha1.OperationBPF, v1alpha1.OperationKernelModule, v1alpha1.OperationUsernsCreate,
		v1alpha1.OperationUserfaultfd, v1alpha1.OperationIoUring, v1alpha1.OperationPerfEvent,
		v1alpha1.OperationChmodSetuid,
	}
	syscallArgOps = []v1alpha1.SyscallArgOp{
		"Equal", "NotEqual", "LessThan", "LessOrEqual", "GreaterThan", "GreaterOrEqual", "MaskedEqual",
	}
)
