package seccomp

//go:generate go run gen_syscalls.go

// archSet is a set of the system call tables syscallTable records.
type archSet uint8

// The system call tables. x32 shares x86-64's names; 32-bit arm has names of its own that
// no table here records, which is fine: runc and crun skip a name the running
// architecture does not know instead of failing, and libseccomp adds a rule only to the
// architectures of a multi-architecture filter that have the call.
const (
	archX86_64 archSet = 1 << iota
	archI386
	archARM64
)

// KnownSyscall reports whether name is a system call of x86-64 or arm64 (the names a
// SyscallRule may use), as the kernel headers syscalls_table.go was generated from and
// syscalls_after_headers.tbl list them.
func KnownSyscall(name string) bool {
	return syscallTable[name]&(archX86_64|archARM64) != 0
}
