package seccomp

import "github.com/podarmor/podarmor/policies/api/v1alpha1"

// Kernel ABI numbers the translations compare system call arguments with, named after the
// kernel's and written out because golang.org/x/sys is not a requirement of this module.
// They are the same on every architecture this package emits filters for (x86-64, i386,
// x32, arm64, 32-bit arm); mips, parisc and alpha differ in several of them and are not
// supported.
const (
	// errnoEPERM is what an Enforce rule returns: include/uapi/asm-generic/errno-base.h.
	errnoEPERM = 1
	// errnoENOSYS tells libc that a system call does not exist, so it falls back to an
	// older one: include/uapi/asm-generic/errno.h.
	errnoENOSYS = 38

	// cloneNewUser is CLONE_NEWUSER, include/uapi/linux/sched.h.
	cloneNewUser = 0x10000000

	// modeSetUID and modeSetGID are S_ISUID and S_ISGID, include/uapi/linux/stat.h.
	modeSetUID = 0o4000
	modeSetGID = 0o2000

	// openTreeClone is OPEN_TREE_CLONE, include/uapi/linux/mount.h: open_tree(2) makes a
	// detached copy of a mount (a bind mount not yet attached) instead of opening a path.
	openTreeClone = 1

	// userfaultfdIocNew is USERFAULTFD_IOC_NEW = _IO(0xAA, 0x00) from
	// include/uapi/linux/userfaultfd.h: the one ioctl of /dev/userfaultfd (Linux 6.1),
	// which makes a userfaultfd without the userfaultfd(2) system call. 0xAA is
	// registered to userfaultfd alone in Documentation/userspace-api/ioctl/ioctl-number.rst.
	userfaultfdIocNew = 0xAA00

	// sockTypeMask is SOCK_TYPE_MASK, include/linux/net.h: socket(2) ORs SOCK_NONBLOCK
	// and SOCK_CLOEXEC into the type argument, and the kernel keeps the low four bits as
	// the type.
	sockTypeMask = 0xf

	// int32Mask keeps the low 32 bits of a 64-bit argument register. Arguments the kernel
	// declares int or unsigned int (socket's family and protocol, ioctl's request) are
	// compared as 32 bits, so garbage in a register's upper half cannot dodge a filter
	// that the kernel would still honour.
	int32Mask = 0xffffffff
)

// Address families, include/linux/socket.h.
const (
	afUnix      = 1
	afInet      = 2
	afInet6     = 10
	afKey       = 15
	afNetlink   = 16
	afPacket    = 17
	afRDS       = 21
	afLLC       = 26
	afCAN       = 29
	afTIPC      = 30
	afBluetooth = 31
	afALG       = 38
	afVsock     = 40
	afXDP       = 44
)

// Socket types, include/linux/net.h (enum sock_type).
const (
	sockStream    = 1
	sockDgram     = 2
	sockRaw       = 3
	sockRDM       = 4
	sockSeqpacket = 5
	sockPacket    = 10
)

// IP protocols, include/uapi/linux/in.h.
const (
	ipprotoICMP    = 1
	ipprotoTCP     = 6
	ipprotoUDP     = 17
	ipprotoICMPv6  = 58
	ipprotoSCTP    = 132
	ipprotoUDPLite = 136
)

var families = map[v1alpha1.SocketFamily]uint64{
	"unix":      afUnix,
	"inet":      afInet,
	"inet6":     afInet6,
	"netlink":   afNetlink,
	"packet":    afPacket,
	"alg":       afALG,
	"vsock":     afVsock,
	"xdp":       afXDP,
	"bluetooth": afBluetooth,
	"can":       afCAN,
	"tipc":      afTIPC,
	"rds":       afRDS,
	"llc":       afLLC,
	"key":       afKey,
}

var sockTypes = map[v1alpha1.SocketType]uint64{
	"stream":    sockStream,
	"dgram":     sockDgram,
	"raw":       sockRaw,
	"seqpacket": sockSeqpacket,
	"rdm":       sockRDM,
	"packet":    sockPacket,
}

var protocols = map[v1alpha1.Protocol]uint64{
	"tcp":     ipprotoTCP,
	"udp":     ipprotoUDP,
	"icmp":    ipprotoICMP,
	"icmpv6":  ipprotoICMPv6,
	"sctp":    ipprotoSCTP,
	"udplite": ipprotoUDPLite,
}

// defaultProtocol is the protocol an inet or inet6 socket of a type gets when socket(2)
// asks for protocol 0: the first protocol registered for the type (inet_create and
// inet6_create walk inetsw[type], where TCP and UDP are registered first and permanently).
// SOCK_SEQPACKET has SCTP alone. Raw sockets have no default: protocol 0 fails.
var defaultProtocol = map[uint64]uint64{
	sockStream:    ipprotoTCP,
	sockDgram:     ipprotoUDP,
	sockSeqpacket: ipprotoSCTP,
}
