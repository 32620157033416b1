package v1alpha1

// CustomRules are rules written out in a policy, grouped by what they match. The
// built-in catalog is written in the same schema, so both compile the same way.
type CustomRules struct {
	// Files deny operations on files whose resolved path matches a pattern.
	// +kubebuilder:validation:MaxItems=1024
	// +optional
	Files []FileRule `json:"files,omitempty"`
	// Exec denies executing binaries whose resolved path matches a pattern.
	// +kubebuilder:validation:MaxItems=1024
	// +optional
	Exec []ExecRule `json:"exec,omitempty"`
	// Network denies creating sockets of a kind or connecting to addresses and ports.
	// +kubebuilder:validation:MaxItems=1024
	// +optional
	Network []NetworkRule `json:"network,omitempty"`
	// Capabilities denies using capabilities, whatever the container was granted.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Capabilities []CapabilityRule `json:"capabilities,omitempty"`
	// Ptrace denies tracing and inspecting other processes.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Ptrace []PtraceRule `json:"ptrace,omitempty"`
	// Mounts denies mount, umount and pivot_root operations.
	// +kubebuilder:validation:MaxItems=1024
	// +optional
	Mounts []MountRule `json:"mounts,omitempty"`
	// Operations denies kernel operations that are not about a path or an address:
	// loading BPF programs or kernel modules, creating user namespaces and the like.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Operations []OperationRule `json:"operations,omitempty"`
	// Syscalls denies system calls, optionally by argument (Seccomp only).
	// +kubebuilder:validation:MaxItems=1024
	// +optional
	Syscalls []SyscallRule `json:"syscalls,omitempty"`
}

// RuleMeta is common to every custom rule.
type RuleMeta struct {
	// Name identifies the rule in events and metrics; unique among the policy's custom
	// rules. Defaults to the rule's kind and index, e.g. "files-0".
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Name string `json:"name,omitempty"`
	// Action overrides the policy's action for this rule.
	// +optional
	Action Action `json:"action,omitempty"`
}

// FilePermission is an operation on a file.
// +kubebuilder:validation:Enum=read;write;append;create;delete;rename;link;chmod;chown
type FilePermission string

// The file permissions. Write covers truncation; rename and link deny the operation
// when either the old or the new path matches.
const (
	FileRead   FilePermission = "read"
	FileWrite  FilePermission = "write"
	FileAppend FilePermission = "append"
	FileCreate FilePermission = "create"
	FileDelete FilePermission = "delete"
	FileRename FilePermission = "rename"
	FileLink   FilePermission = "link"
	FileChmod  FilePermission = "chmod"
	FileChown  FilePermission = "chown"
)

// FileRule denies operations on files whose path matches one of its patterns.
type FileRule struct {
	RuleMeta `json:",inline"`
	// Paths are path patterns (docs/policies.md#path-patterns): `*` within one path
	// component, `**` for any number of components.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=4095
	Paths []string `json:"paths"`
	// Permissions are the operations denied.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=9
	// +listType=set
	Permissions []FilePermission `json:"permissions"`
}

// ExecRule denies executing files whose resolved path matches one of its patterns.
type ExecRule struct {
	RuleMeta `json:",inline"`
	// Paths are path patterns of the executable file (after symlinks are resolved).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=4095
	Paths []string `json:"paths"`
}

// NetworkRule denies socket creation (sockets) or outgoing connections (egress); exactly
// one of the two.
// +kubebuilder:validation:XValidation:rule="has(self.sockets) != has(self.egress)",message="exactly one of sockets or egress must be set"
type NetworkRule struct {
	RuleMeta `json:",inline"`
	// Sockets matches the creation of sockets.
	// +optional
	Sockets *SocketMatch `json:"sockets,omitempty"`
	// Egress matches connections (connect, and sendto on unconnected sockets) to
	// addresses and ports.
	// +optional
	Egress *EgressMatch `json:"egress,omitempty"`
}

// SocketFamily is an address family, as in socket(2).
// +kubebuilder:validation:Enum=unix;inet;inet6;netlink;packet;alg;vsock;xdp;bluetooth;can;tipc;rds;llc;key
type SocketFamily string

// SocketType is a socket type, as in socket(2).
// +kubebuilder:validation:Enum=stream;dgram;raw;seqpacket;rdm;packet
type SocketType string

// Protocol is an IP protocol.
// +kubebuilder:validation:Enum=tcp;udp;icmp;icmpv6;sctp;udplite
type Protocol string

// SocketMatch matches sockets whose family, type and protocol are each in the listed
// ones; an empty list matches any, so an empty match is every socket.
type SocketMatch struct {
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	// +optional
	Families []SocketFamily `json:"families,omitempty"`
	// +kubebuilder:validation:MaxItems=6
	// +listType=set
	// +optional
	Types []SocketType `json:"types,omitempty"`
	// +kubebuilder:validation:MaxItems=6
	// +listType=set
	// +optional
	Protocols []Protocol `json:"protocols,omitempty"`
}

// EgressMatch matches connections to any of the addresses and any of the ports; an empty
// list matches any.
type EgressMatch struct {
	// Addresses are IPv4 or IPv6 addresses or CIDR prefixes (169.254.169.254,
	// fd00:ec2::254, 10.0.0.0/8).
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=64
	// +optional
	Addresses []string `json:"addresses,omitempty"`
	// Ports are destination ports or port ranges.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Ports []PortRange `json:"ports,omitempty"`
	// Protocols limits the match to these transport protocols; empty matches any.
	// +kubebuilder:validation:MaxItems=4
	// +listType=set
	// +optional
	Protocols []Protocol `json:"protocols,omitempty"`
}

// PortRange is one port or, with EndPort, an inclusive range.
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || self.endPort >= self.port",message="endPort must not be below port"
type PortRange struct {
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	EndPort *int32 `json:"endPort,omitempty"`
}

// Capability is a Linux capability, named without the CAP_ prefix.
// +kubebuilder:validation:Enum=CHOWN;DAC_OVERRIDE;DAC_READ_SEARCH;FOWNER;FSETID;KILL;SETGID;SETUID;SETPCAP;LINUX_IMMUTABLE;NET_BIND_SERVICE;NET_BROADCAST;NET_ADMIN;NET_RAW;IPC_LOCK;IPC_OWNER;SYS_MODULE;SYS_RAWIO;SYS_CHROOT;SYS_PTRACE;SYS_PACCT;SYS_ADMIN;SYS_BOOT;SYS_NICE;SYS_RESOURCE;SYS_TIME;SYS_TTY_CONFIG;MKNOD;LEASE;AUDIT_WRITE;AUDIT_CONTROL;SETFCAP;MAC_OVERRIDE;MAC_ADMIN;SYSLOG;WAKE_ALARM;BLOCK_SUSPEND;AUDIT_READ;PERFMON;BPF;CHECKPOINT_RESTORE
type Capability string

// AllCapabilities lists the Linux capabilities by number: AllCapabilities[n] is
// capability n (CAP_CHOWN is 0, CAP_CHECKPOINT_RESTORE is 40, see linux/capability.h).
var AllCapabilities = []Capability{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
	"SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
	"NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
	"SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
	"SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
	"AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
	"BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

// CapabilityRule denies using capabilities even when the container holds them
// (privileged containers included).
type CapabilityRule struct {
	RuleMeta `json:",inline"`
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=41
	// +listType=set
	Capabilities []Capability `json:"capabilities"`
}

// PtracePermission is a ptrace access, as AppArmor names them: trace and read are done by
// the confined process, tracedby and readby are done to it.
// +kubebuilder:validation:Enum=trace;read;tracedby;readby
type PtracePermission string

// The ptrace permissions. read covers what ptrace's PTRACE_MODE_READ guards (most of
// /proc/<pid>, including root and cwd links); trace covers attaching and /proc/<pid>/mem.
const (
	PtraceTrace    PtracePermission = "trace"
	PtraceRead     PtracePermission = "read"
	PtraceTracedBy PtracePermission = "tracedby"
	PtraceReadBy   PtracePermission = "readby"
)

// PtracePeers says which other processes a ptrace rule is about.
// +kubebuilder:validation:Enum=Any;OutsideContainer
type PtracePeers string

const (
	// PtraceAnyPeer matches every other process, in the same container or not.
	PtraceAnyPeer PtracePeers = "Any"
	// PtraceOutsideContainer matches processes outside the container's sandbox, so
	// processes of one container may still trace each other.
	PtraceOutsideContainer PtracePeers = "OutsideContainer"
)

// PtraceRule denies ptrace accesses.
type PtraceRule struct {
	RuleMeta `json:",inline"`
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=4
	// +listType=set
	Permissions []PtracePermission `json:"permissions"`
	// Peers says which processes the rule is about.
	// +kubebuilder:default=OutsideContainer
	// +optional
	Peers PtracePeers `json:"peers,omitempty"`
}

// MountOperation is a kind of mount-table change.
// +kubebuilder:validation:Enum=mount;umount;pivotroot
type MountOperation string

// The mount operations. mount covers mount(2) in all its forms (new, bind, remount,
// move, propagation changes) and the new mount API (fsmount, move_mount).
const (
	MountMount     MountOperation = "mount"
	MountUmount    MountOperation = "umount"
	MountPivotRoot MountOperation = "pivotroot"
)

// MountFlag is a mount(2) flag.
// +kubebuilder:validation:Enum=ro;nosuid;nodev;noexec;remount;bind;rbind;move;shared;private;slave;unbindable
type MountFlag string

// MountRule denies mount operations. Every non-empty field must match: an operation in
// operations, an fsType in fsTypes, at least one of flags, a source matching a pattern
// in sources, a target matching a pattern in targets. Empty fields match anything.
type MountRule struct {
	RuleMeta `json:",inline"`
	// Operations defaults to [mount].
	// +kubebuilder:validation:MaxItems=3
	// +listType=set
	// +optional
	Operations []MountOperation `json:"operations,omitempty"`
	// FSTypes are filesystem type names as in /proc/filesystems (proc, sysfs, ext4...).
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9][a-z0-9._-]*$`
	// +listType=set
	// +optional
	FSTypes []string `json:"fsTypes,omitempty"`
	// Flags match a mount that sets at least one of them.
	// +kubebuilder:validation:MaxItems=12
	// +listType=set
	// +optional
	Flags []MountFlag `json:"flags,omitempty"`
	// Sources are path patterns of the mount source (a device node or, for bind mounts,
	// a path).
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4095
	// +optional
	Sources []string `json:"sources,omitempty"`
	// Targets are path patterns of the mount point.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4095
	// +optional
	Targets []string `json:"targets,omitempty"`
}

// SyscallArgOp compares a system call argument, as in OCI seccomp profiles.
// +kubebuilder:validation:Enum=Equal;NotEqual;LessThan;LessOrEqual;GreaterThan;GreaterOrEqual;MaskedEqual
type SyscallArgOp string

// SyscallArg is one comparison on a system call argument. MaskedEqual matches when
// (argument & value) == valueTwo.
type SyscallArg struct {
	// Index of the argument, 0 to 5.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=5
	Index int32        `json:"index"`
	Op    SyscallArgOp `json:"op"`
	// +kubebuilder:validation:Minimum=0
	Value int64 `json:"value"`
	// +kubebuilder:validation:Minimum=0
	// +optional
	ValueTwo int64 `json:"valueTwo,omitempty"`
}

// SyscallRule denies system calls by name (Seccomp only); with args, only calls whose
// arguments match every comparison.
type SyscallRule struct {
	RuleMeta `json:",inline"`
	// Names are system call names (x86-64 and arm64 names are both accepted).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=512
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9_]+$`
	// +listType=set
	Names []string `json:"names"`
	// Args are comparisons on arguments, all of which must hold.
	// +kubebuilder:validation:MaxItems=6
	// +optional
	Args []SyscallArg `json:"args,omitempty"`
}

// Operation is a kernel operation that is dangerous in itself, whatever its arguments.
// +kubebuilder:validation:Enum=bpf;kernelModule;usernsCreate;userfaultfd;ioUring;perfEvent;chmodSetuid
type Operation string

// The operations.
const (
	// OperationBPF is the bpf() system call: loading programs, creating and reading maps.
	OperationBPF Operation = "bpf"
	// OperationKernelModule is loading a kernel module (init_module, finit_module).
	OperationKernelModule Operation = "kernelModule"
	// OperationUsernsCreate is creating a user namespace (unshare, clone, clone3).
	OperationUsernsCreate Operation = "usernsCreate"
	// OperationUserfaultfd is creating a userfaultfd, a building block of kernel
	// exploits that need to pause the kernel mid-copy.
	OperationUserfaultfd Operation = "userfaultfd"
	// OperationIoUring is setting up io_uring, whose operations bypass system call
	// filters.
	OperationIoUring Operation = "ioUring"
	// OperationPerfEvent is perf_event_open.
	OperationPerfEvent Operation = "perfEvent"
	// OperationChmodSetuid is setting the set-user-ID or set-group-ID bit of a file.
	OperationChmodSetuid Operation = "chmodSetuid"
)

// OperationRule denies kernel operations.
type OperationRule struct {
	RuleMeta `json:",inline"`
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=7
	// +listType=set
	Operations []Operation `json:"operations"`
}
