// Package seccomp compiles a rule set into a seccomp profile: the JSON form of the OCI
// runtime-spec's LinuxSeccomp, which is what containerd (json.Unmarshal into
// specs.LinuxSeccomp) and CRI-O (containers/common's seccomp loader) read for a container
// whose securityContext names `seccompProfile: {type: Localhost, localhostProfile:
// podarmor/<id>.json}`, from under the kubelet's seccomp root.
//
// A profile allows every system call by default (SCMP_ACT_ALLOW) and holds one entry per
// group of denied calls: an Enforce rule returns EPERM (SCMP_ACT_ERRNO, errnoRet 1), an
// Audit rule logs the call and lets it run (SCMP_ACT_LOG, Linux 4.14+).
//
// # What seccomp expresses
//
// A seccomp filter sees the system call number and the six argument registers, never the
// memory they point to, so it can only express a rule whose every case is a system call
// told apart by numbers. [Backend.Express] accepts exactly these and says why for the rest:
//
//	syscall       exact: names, and args (one comparison per argument index)
//	bpf           exact: bpf
//	kernelModule  exact: init_module, finit_module
//	userfaultfd   exact: userfaultfd, and ioctl(USERFAULTFD_IOC_NEW) on /dev/userfaultfd
//	ioUring       exact: io_uring_setup, io_uring_enter, io_uring_register
//	perfEvent     exact: perf_event_open
//	usernsCreate  exact for Enforce: unshare and clone with CLONE_NEWUSER, clone3 with ENOSYS
//	chmodSetuid   exact: chmod, fchmod, fchmodat, fchmodat2 setting S_ISUID or S_ISGID
//	socket        exact when the match is empty (every socket); with families, types or
//	              protocols only when the profile leaves out the i386 ABI
//	mount         exact when only operations are set
//	file, exec, egress, capability, ptrace: not expressible
//
// "Exact" is about system calls. io_uring runs some operations (openat, socket, connect...)
// without a system call that a filter sees; the ioUring rule, which denies setting io_uring
// up, is what closes that path, as the API's documentation of ioUring says. And the
// runtime resolves names with the node's libseccomp, skipping names it does not know
// instead of failing, so a node whose libseccomp predates a system call does not filter
// it (fchmodat2, Linux 6.6, needs libseccomp 2.5.5 or a distribution's backport, such as
// Debian 12's 2.5.4-1+deb12u1).
//
// # One entry per system call and action
//
// libseccomp, which runc and crun hand the profile to, cannot hold two overlapping rules for
// one system call with different actions: it rejects the second (and the container does not
// start) or drops one of them, depending on their order. So Render resolves the rules of
// each system call first: a deny subsumes a log that it covers, an unconditional rule
// subsumes the conditional ones of the same action, rules of different actions that could
// both match one call are an error, and what is left has one action per call or calls that
// no two of its rules can both match.
package seccomp

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// ProfileDir is the directory under the kubelet's seccomp root that holds podarmor's
// profiles.
const ProfileDir = "podarmor"

// FileName is the path of the profile with the given id relative to the kubelet's seccomp
// root: the localhostProfile a pod's seccompProfile names.
func FileName(id string) string {
	return ProfileDir + "/" + id + ".json"
}

// DefaultArchitectures are the system call ABIs a profile filters unless Config says
// otherwise: x86-64 with the i386 and x32 ABIs an x86-64 kernel also runs, and arm64 with
// 32-bit arm. Both families go in every profile, so one file serves a mixed cluster.
var DefaultArchitectures = []specs.Arch{
	specs.ArchX86_64, specs.ArchX86, specs.ArchX32,
	specs.ArchAARCH64, specs.ArchARM,
}

// Config configures a Backend.
type Config struct {
	// Architectures are the ABIs the profile filters, in libseccomp's names. A process
	// calling through an ABI that is not listed is killed by the filter (libseccomp's
	// default for a foreign architecture), so leave one out only where no node can run
	// it. Defaults to DefaultArchitectures; only those five are supported.
	Architectures []specs.Arch
}

func (c *Config) defaults() error {
	if len(c.Architectures) == 0 {
		c.Architectures = slices.Clone(DefaultArchitectures)
		return nil
	}
	seen := map[specs.Arch]bool{}
	for _, a := range c.Architectures {
		if !slices.Contains(DefaultArchitectures, a) {
			return fmt.Errorf("architecture %q: want one of %v", a, DefaultArchitectures)
		}
		if seen[a] {
			return fmt.Errorf("architecture %q listed twice", a)
		}
		seen[a] = true
	}
	c.Architectures = slices.Clone(c.Architectures)
	return nil
}

// Backend compiles rule sets into seccomp profiles. It is pure and safe for concurrent use.
type Backend struct {
	archs []specs.Arch
	// socketcall is set when the profile filters the i386 ABI, where socket(2) can also be
	// reached through socketcall(2).
	socketcall bool
	// narrow is set when the profile filters an ABI whose arguments are 32 bits wide.
	narrow bool
}

// New returns a Backend for cfg.
func New(cfg Config) (*Backend, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("seccomp backend config: %w", err)
	}
	b := &Backend{archs: cfg.Architectures}
	for _, a := range cfg.Architectures {
		switch a {
		case specs.ArchX86:
			b.socketcall = true
			b.narrow = true
		case specs.ArchX32, specs.ArchARM:
			b.narrow = true
		}
	}
	return b, nil
}

// Enforcer returns v1alpha1.EnforcerSeccomp.
func (b *Backend) Enforcer() v1alpha1.Enforcer {
	return v1alpha1.EnforcerSeccomp
}

// Express returns nil when the profile can hold r exactly, and otherwise an error saying
// why not (see the package documentation for the table). Some cases need a word:
//
//   - usernsCreate: clone3(2) passes its flags in a structure in memory, which a filter
//     cannot read, so the profile denies clone3 altogether with ENOSYS. glibc (2.34+)
//     then falls back to clone(2), whose flags a filter does see, and so does every libc
//     that uses clone3 at all; Docker's default profile relies on the same fallback. That
//     is why usernsCreate is exact, and also why an Audit
//     usernsCreate is not: an Audit rule must not make any call fail, and logging every
//     clone3 would log every thread glibc starts.
//   - userfaultfd: besides userfaultfd(2), Linux 6.1+ hands out userfaultfds from the
//     device /dev/userfaultfd through ioctl(USERFAULTFD_IOC_NEW). The device is a file, and
//     a filter cannot see which file an ioctl is on, but the request number is its own:
//     0xAA is registered to userfaultfd alone.
//   - chmodSetuid covers changing a file's mode, the calls of chmod(1). A file created with
//     the bits already set (open, creat, mknod with mode 04755) is not a chmod.
//   - socket: an empty match (every socket) denies socket(2) and socketpair(2), and
//     libseccomp adds socketcall(2) on i386 itself. A match that names families, types or
//     protocols compares socket(2)'s arguments: the family, the type without
//     SOCK_NONBLOCK and SOCK_CLOEXEC, and the protocol. A protocol is an IP protocol, so
//     it matches inet and inet6 sockets only, and protocol 0 is taken for what the kernel
//     makes of it (a stream socket is TCP, a datagram socket UDP, a seqpacket socket
//     SCTP); socket(AF_INET, SOCK_PACKET) makes a packet socket. All of that holds only
//     while the i386 ABI is left out of the profile: there socket(2) has a twin,
//     socketcall(SYS_SOCKET, args), whose arguments are in memory, and libseccomp turns an
//     argument-filtered socket rule into a socketcall(SYS_SOCKET) rule that drops the
//     family comparison and applies the others to registers holding no socket argument, so
//     a rule against AF_ALG would refuse every socket a 32-bit program makes through
//     socketcall (libseccomp issue 8; Docker dropped its family rules in 2017 for this).
//   - mount: with operations only, the profile denies every system call that changes a
//     mount table that way (mount, the new mount API, umount2, pivot_root). fsTypes,
//     sources and targets are strings in memory. Flags are visible for mount(2) alone:
//     the new mount API carries them in fsconfig/mount_setattr calls and structures, and
//     mount(2) drops its upper 16 bits when they hold the old MS_MGC_VAL magic, which
//     overlaps MS_PRIVATE and MS_SLAVE.
//   - syscall: names must be system calls of x86-64 or arm64 (see KnownSyscall); a name
//     only one of them has is skipped by the runtime on the other. Two comparisons on one
//     argument are refused, because runc and crun OR them instead of ANDing them, and so
//     are values wider than 32 bits while the profile filters a 32-bit ABI, where
//     libseccomp drops the upper half.
func (b *Backend) Express(r ruleset.Rule) error {
	_, err := b.translate(r)
	return err
}

// Render returns the profile for rs as indented JSON: every rule Express accepts, after
// resolving the rules of each system call (see the package documentation). Rules Express
// refuses are left out; JSON has no comments to list them in. A rule set without rules, as
// AlwaysAllow compiles to, gives a profile that allows everything.
func (b *Backend) Render(rs *ruleset.RuleSet) ([]byte, error) {
	if rs == nil {
		return nil, errors.New("render seccomp profile: nil rule set")
	}
	// Every mode is allow-by-default today; an empty Default is the zero value of that.
	if rs.Default != ruleset.Allow && rs.Default != "" {
		return nil, fmt.Errorf("render seccomp profile %q: default verdict %q: only Allow is supported", rs.ProfileID, rs.Default)
	}
	var all []entry
	for _, r := range rs.Rules {
		es, err := b.translate(r)
		if err != nil {
			continue
		}
		all = append(all, es...)
	}
	calls, err := resolve(all)
	if err != nil {
		return nil, fmt.Errorf("render seccomp profile %q: %w", rs.ProfileID, err)
	}
	profile := specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: slices.Clone(b.archs),
		Syscalls:      calls,
	}
	out, err := json.MarshalIndent(profile, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render seccomp profile %q: %w", rs.ProfileID, err)
	}
	return append(out, '\n'), nil
}
