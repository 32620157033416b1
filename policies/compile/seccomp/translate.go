package seccomp

import (
	"errors"
	"fmt"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// entry is one conjunction of argument comparisons over some system calls, and what the
// filter does when it holds.
type entry struct {
	rule  string // the rule's ID, for error messages
	names []string
	args  []specs.LinuxSeccompArg // sorted by index, at most one per index
	verdict
}

// verdict is what a filter entry does: return errno, or log when errno is 0.
type verdict struct {
	errno uint
}

var logged = verdict{}

// maskedEq matches calls whose argument index, masked with mask, equals value.
func maskedEq(index uint, mask, value uint64) specs.LinuxSeccompArg {
	return specs.LinuxSeccompArg{Index: index, Op: specs.OpMaskedEqual, Value: mask, ValueTwo: value}
}

// hasBits matches calls whose argument index has every bit of bits set.
func hasBits(index uint, bits uint64) specs.LinuxSeccompArg {
	return maskedEq(index, bits, bits)
}

// int32Eq matches calls whose argument index, an int or unsigned int, equals value.
func int32Eq(index uint, value uint64) specs.LinuxSeccompArg {
	return maskedEq(index, int32Mask, value)
}

// translate returns the entries that express r, or an error saying why seccomp cannot
// express it exactly.
func (b *Backend) translate(r ruleset.Rule) ([]entry, error) {
	var v verdict
	switch r.Action {
	case v1alpha1.ActionEnforce:
		v = verdict{errno: errnoEPERM}
	case v1alpha1.ActionAudit:
		v = logged
	default:
		return nil, fmt.Errorf("rule %q: action %q is neither Enforce nor Audit", r.ID, r.Action)
	}
	var (
		es  []entry
		err error
	)
	switch r.Kind {
	case ruleset.KindSyscall:
		if r.Syscall == nil {
			return nil, fmt.Errorf("rule %q: kind syscall without a syscall match", r.ID)
		}
		es, err = b.syscalls(r.Syscall, v)
	case ruleset.KindOperation:
		if r.Operation == nil {
			return nil, fmt.Errorf("rule %q: kind operation without an operation match", r.ID)
		}
		es, err = operations(r.Operation, v)
	case ruleset.KindSocket:
		if r.Socket == nil {
			return nil, fmt.Errorf("rule %q: kind socket without a socket match", r.ID)
		}
		es, err = b.sockets(r.Socket, v)
	case ruleset.KindMount:
		if r.Mount == nil {
			return nil, fmt.Errorf("rule %q: kind mount without a mount match", r.ID)
		}
		es, err = mounts(r.Mount, v)
	case ruleset.KindFile:
		err = errors.New("seccomp cannot see paths: system calls pass them as pointers into the caller's memory, and a filter sees only the pointer")
	case ruleset.KindExec:
		err = errors.New("seccomp cannot see which file is executed: execve(2) passes the path as a pointer, and the file a path resolves to is known only inside the kernel")
	case ruleset.KindEgress:
		err = errors.New("seccomp cannot see addresses or ports: connect(2) and sendto(2) pass them in a structure in the caller's memory")
	case ruleset.KindCapability:
		err = errors.New("seccomp cannot see capability checks: the kernel makes them inside system calls, and no argument names the capability")
	case ruleset.KindPtrace:
		err = errors.New("seccomp cannot express ptrace rules: it filters only the calling process, never what is done to it, cannot tell whether a pid is in the container, and /proc/<pid> access goes through open(2) with a path")
	default:
		err = fmt.Errorf("unknown rule kind %q", r.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("rule %q: %w", r.ID, err)
	}
	for i := range es {
		es[i].rule = r.ID
	}
	return es, nil
}

var argOps = map[v1alpha1.SyscallArgOp]specs.LinuxSeccompOperator{
	"Equal":          specs.OpEqualTo,
	"NotEqual":       specs.OpNotEqual,
	"LessThan":       specs.OpLessThan,
	"LessOrEqual":    specs.OpLessEqual,
	"GreaterThan":    specs.OpGreaterThan,
	"GreaterOrEqual": specs.OpGreaterEqual,
	"MaskedEqual":    specs.OpMaskedEqual,
}

// syscalls expresses a syscall rule as it is written: the API defines its meaning by the
// OCI profile's.
func (b *Backend) syscalls(s *ruleset.Syscall, v verdict) ([]entry, error) {
	if len(s.Names) == 0 {
		return nil, errors.New("syscall rule names no system call")
	}
	var names []string
	for _, n := range s.Names {
		if !KnownSyscall(n) {
			return nil, fmt.Errorf("unknown system call %q: not an x86-64 or arm64 system call", n)
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	var args []specs.LinuxSeccompArg
	for _, a := range s.Args {
		op, ok := argOps[a.Op]
		if !ok {
			return nil, fmt.Errorf("argument %d: unknown comparison %q", a.Index, a.Op)
		}
		if a.Index < 0 || a.Index > 5 {
			return nil, fmt.Errorf("argument index %d: system calls have arguments 0 to 5", a.Index)
		}
		if a.Value < 0 || a.ValueTwo < 0 {
			return nil, fmt.Errorf("argument %d: negative value", a.Index)
		}
		if slices.ContainsFunc(args, func(x specs.LinuxSeccompArg) bool { return x.Index == uint(a.Index) }) {
			return nil, fmt.Errorf("argument %d is compared twice: runc and crun turn comparisons of one argument into alternatives (OR), not conditions that must all hold", a.Index)
		}
		value, valueTwo := uint64(a.Value), uint64(a.ValueTwo)
		compared := value // what a 32-bit filter must be able to hold
		if op == specs.OpMaskedEqual {
			if valueTwo&^value != 0 {
				return nil, fmt.Errorf("argument %d: valueTwo %#x has bits outside the mask %#x, so the rule never matches, but libseccomp masks valueTwo too and would match", a.Index, valueTwo, value)
			}
			compared = valueTwo
		} else if valueTwo != 0 {
			return nil, fmt.Errorf("argument %d: valueTwo is used only by MaskedEqual", a.Index)
		}
		if b.narrow && compared > int32Mask {
			return nil, fmt.Errorf("argument %d: value %#x is wider than 32 bits, which libseccomp truncates on the 32-bit ABIs this profile filters (i386, x32, arm)", a.Index, compared)
		}
		args = append(args, specs.LinuxSeccompArg{Index: uint(a.Index), Op: op, Value: value, ValueTwo: valueTwo})
	}
	slices.SortFunc(args, func(x, y specs.LinuxSeccompArg) int { return int(x.Index) - int(y.Index) })
	return []entry{{names: names, args: args, verdict: v}}, nil
}

// operations expresses operation rules by the system calls that perform them.
func operations(o *ruleset.Operation, v verdict) ([]entry, error) {
	if len(o.Operations) == 0 {
		return nil, errors.New("operation rule names no operation")
	}
	var es []entry
	var done []v1alpha1.Operation
	for _, op := range o.Operations {
		if slices.Contains(done, op) {
			continue
		}
		done = append(done, op)
		switch op {
		case v1alpha1.OperationBPF:
			es = append(es, entry{names: []string{"bpf"}, verdict: v})
		case v1alpha1.OperationKernelModule:
			es = append(es, entry{names: []string{"init_module", "finit_module"}, verdict: v})
		case v1alpha1.OperationUserfaultfd:
			es = append(es,
				entry{names: []string{"userfaultfd"}, verdict: v},
				// ioctl's request is an unsigned int: compare 32 bits.
				entry{names: []string{"ioctl"}, args: []specs.LinuxSeccompArg{int32Eq(1, userfaultfdIocNew)}, verdict: v},
			)
		case v1alpha1.OperationIoUring:
			es = append(es, entry{names: []string{"io_uring_setup", "io_uring_enter", "io_uring_register"}, verdict: v})
		case v1alpha1.OperationPerfEvent:
			es = append(es, entry{names: []string{"perf_event_open"}, verdict: v})
		case v1alpha1.OperationUsernsCreate:
			if v == logged {
				return nil, errors.New("seccomp cannot audit usernsCreate: clone3(2) passes its flags in memory, and the only way to hand those calls to clone(2), where a filter sees the flags, is to fail clone3 with ENOSYS, which an Audit rule must not do")
			}
			es = append(es,
				// clone's flags are its first argument on x86-64, i386, x32, arm64 and arm
				// alike (only s390 swaps the first two); unshare has one argument.
				entry{names: []string{"unshare", "clone"}, args: []specs.LinuxSeccompArg{hasBits(0, cloneNewUser)}, verdict: v},
				entry{names: []string{"clone3"}, verdict: verdict{errno: errnoENOSYS}},
			)
		case v1alpha1.OperationChmodSetuid:
			// The mode is the second argument of chmod(path, mode) and fchmod(fd, mode)
			// and the third of fchmodat(dirfd, path, mode) and fchmodat2(dirfd, path,
			// mode, flags). Entries are alternatives and the comparisons of one entry
			// conditions, so each bit gets entries of its own.
			for _, bit := range []uint64{modeSetUID, modeSetGID} {
				es = append(es,
					entry{names: []string{"chmod", "fchmod"}, args: []specs.LinuxSeccompArg{hasBits(1, bit)}, verdict: v},
					entry{names: []string{"fchmodat", "fchmodat2"}, args: []specs.LinuxSeccompArg{hasBits(2, bit)}, verdict: v},
				)
			}
		default:
			return nil, fmt.Errorf("unknown operation %q", op)
		}
	}
	return es, nil
}

// mounts expresses mount rules that name operations only.
func mounts(m *ruleset.Mount, v verdict) ([]entry, error) {
	if len(m.FSTypes) > 0 || len(m.Sources) > 0 || len(m.Targets) > 0 {
		return nil, errors.New("seccomp cannot see filesystem types, sources or targets: mount(2) and the new mount API pass them as strings in the caller's memory")
	}
	if len(m.Flags) > 0 {
		return nil, errors.New("seccomp cannot match mount flags exactly: only mount(2) passes them in a register, the new mount API (fsconfig, fsmount, mount_setattr) carries them elsewhere, and mount(2) drops its flags' upper half when it holds the old MS_MGC_VAL magic")
	}
	if len(m.Operations) == 0 {
		return nil, errors.New("mount rule names no operation")
	}
	var es []entry
	var done []v1alpha1.MountOperation
	for _, op := range m.Operations {
		if slices.Contains(done, op) {
			continue
		}
		done = append(done, op)
		switch op {
		case v1alpha1.MountMount:
			es = append(es,
				// mount(2) in all its forms, and the new mount API: a filesystem context
				// (fsopen, fspick, fsconfig) made into a mount (fsmount), attached or
				// moved (move_mount), its attributes and propagation changed
				// (mount_setattr).
				entry{names: []string{"mount", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "mount_setattr"}, verdict: v},
				// open_tree copies a mount only with OPEN_TREE_CLONE; without it, it
				// opens a path like open(O_PATH).
				entry{names: []string{"open_tree"}, args: []specs.LinuxSeccompArg{hasBits(2, openTreeClone)}, verdict: v},
			)
		case v1alpha1.MountUmount:
			// umount is i386's old one-argument umount; x86-64 and arm64 have umount2 only.
			es = append(es, entry{names: []string{"umount2", "umount"}, verdict: v})
		case v1alpha1.MountPivotRoot:
			es = append(es, entry{names: []string{"pivot_root"}, verdict: v})
		default:
			return nil, fmt.Errorf("unknown mount operation %q", op)
		}
	}
	return es, nil
}
