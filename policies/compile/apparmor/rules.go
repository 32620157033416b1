package apparmor

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// translate returns the AppArmor rules for r, one per line without indentation or final
// newline, or an error saying why AppArmor cannot express r exactly. Express and Render
// both go through it, so a rule is rendered exactly when Express accepts it.
func translate(r ruleset.Rule) ([]string, error) {
	q, err := qualifierOf(r.Action)
	if err != nil {
		return nil, err
	}
	switch r.Kind {
	case ruleset.KindFile:
		if r.File == nil {
			return nil, errNoMatch(r.Kind)
		}
		return fileRules(q, r.File)
	case ruleset.KindExec:
		if r.Exec == nil {
			return nil, errNoMatch(r.Kind)
		}
		return execRules(q, r.Exec)
	case ruleset.KindSocket:
		if r.Socket == nil {
			return nil, errNoMatch(r.Kind)
		}
		return socketRules(q, r.Socket)
	case ruleset.KindEgress:
		return nil, errors.New("AppArmor cannot match IP addresses or ports: network rules of AppArmor 3.0 match only the family and type of a socket")
	case ruleset.KindCapability:
		if r.Capability == nil {
			return nil, errNoMatch(r.Kind)
		}
		return capabilityRules(q, r.Capability)
	case ruleset.KindPtrace:
		if r.Ptrace == nil {
			return nil, errNoMatch(r.Kind)
		}
		return ptraceRules(q, r.Ptrace)
	case ruleset.KindMount:
		if r.Mount == nil {
			return nil, errNoMatch(r.Kind)
		}
		return mountRules(q, r.Mount)
	case ruleset.KindOperation:
		if r.Operation == nil {
			return nil, errNoMatch(r.Kind)
		}
		return nil, operationError(r.Operation)
	case ruleset.KindSyscall:
		return nil, errors.New("system call rules are Seccomp's: AppArmor mediates kernel objects, not system calls")
	}
	return nil, fmt.Errorf("unknown rule kind %q", r.Kind)
}

func errNoMatch(k ruleset.Kind) error {
	return fmt.Errorf("the rule is of kind %s but has no %s match", k, k)
}

// qualifier is how a rule's action reads in AppArmor.
type qualifier struct {
	// prefix starts every rule: "audit deny " or "audit ".
	prefix string
	// deny is set for Enforce.
	deny bool
}

// qualifierOf maps an action to rule qualifiers. Enforce is "audit deny": a bare deny
// rule refuses silently ("denied without logging", apparmor.d(5)), and podarmor records
// every refusal. Audit is "audit" on an allow rule: the profile already allows
// everything, so the rule allows nothing new, and AppArmor logs an access whose request
// meets the rule's audit bits even when it is allowed (an AUDIT record, not DENIED; see
// aa_audit_file in the kernel). A deny rule elsewhere still wins over it.
func qualifierOf(a v1alpha1.Action) (qualifier, error) {
	switch a {
	case v1alpha1.ActionEnforce:
		return qualifier{prefix: "audit deny ", deny: true}, nil
	case v1alpha1.ActionAudit:
		return qualifier{prefix: "audit "}, nil
	}
	return qualifier{}, fmt.Errorf("unknown action %q", a)
}

// fileChange returns what AppArmor 3.0 grants and takes away as one permission, w: the
// kernel maps the policy's write bit to write, append (the parser sets it with w),
// create, delete, chmod, chown and setattr, and rename needs w on both of its paths.
func fileChange() []v1alpha1.FilePermission {
	return []v1alpha1.FilePermission{
		v1alpha1.FileWrite, v1alpha1.FileAppend, v1alpha1.FileCreate, v1alpha1.FileDelete,
		v1alpha1.FileRename, v1alpha1.FileChmod, v1alpha1.FileChown,
	}
}

// fileRules translates a file rule. The permissions a rule names, leaving link aside,
// must be one of the sets AppArmor 3.0 can take away exactly:
//
//   - {append}: a. A request for an O_APPEND write asks for the append bit only.
//   - the whole of fileChange: w.
//   - fileChange and read: rw. r alone is not exact, because rename(2) asks for r (and w)
//     on the path it renames, so r also takes renaming the file away; with w in the same
//     rule that is part of the rule anyway.
//
// link is separate: the rules "link P -> /**" and "link /** -> P" take away hard links
// whose new or old name matches, and nothing else, because the profile allows links with
// a link rule that has no subset condition (see baseRules).
//
// Under Audit, read is refused as well: the audit bits of r include getattr, so AppArmor
// would record every stat(2) of the file, which the rule does not name.
func fileRules(q qualifier, f *ruleset.File) ([]string, error) {
	if len(f.Permissions) == 0 {
		return nil, errors.New("the rule has no permissions")
	}
	set := map[v1alpha1.FilePermission]bool{}
	for _, p := range f.Permissions {
		switch p {
		case v1alpha1.FileRead, v1alpha1.FileWrite, v1alpha1.FileAppend, v1alpha1.FileCreate,
			v1alpha1.FileDelete, v1alpha1.FileRename, v1alpha1.FileLink, v1alpha1.FileChmod,
			v1alpha1.FileChown:
			set[p] = true
		default:
			return nil, fmt.Errorf("unknown file permission %q", p)
		}
	}
	var change, missing []string
	for _, p := range fileChange() {
		if set[p] {
			change = append(change, string(p))
		} else {
			missing = append(missing, string(p))
		}
	}
	var mode string
	switch {
	case len(change) == 0 && !set[v1alpha1.FileRead]:
		// link only
	case len(change) == 1 && set[v1alpha1.FileAppend] && !set[v1alpha1.FileRead]:
		mode = "a"
	case len(missing) > 0 && set[v1alpha1.FileRead]:
		return nil, fmt.Errorf("AppArmor cannot take away read alone: its r permission also guards renaming the file away (rename(2) needs r on the old path), so read is exact only together with %s",
			joinPerms(fileChange()))
	case len(missing) > 0:
		return nil, fmt.Errorf("AppArmor 3.0 grants %s together as its one w permission (only append has one of its own, a), so a rule must name all of them or append alone; this one lacks %s",
			joinPerms(fileChange()), strings.Join(missing, ", "))
	case set[v1alpha1.FileRead] && !q.deny:
		return nil, errors.New("AppArmor cannot audit read exactly: the audit bits of its r permission also record every stat(2) of the file (getattr), which the rule does not name")
	case set[v1alpha1.FileRead]:
		mode = "rw"
	default:
		mode = "w"
	}
	paths, err := parsePaths(f.Paths)
	if err != nil {
		return nil, err
	}
	var out []string
	if mode != "" {
		for _, p := range paths {
			out = append(out, fmt.Sprintf("%s%s %s,", q.prefix, p, mode))
		}
	}
	if set[v1alpha1.FileLink] {
		for _, p := range paths {
			out = append(out,
				fmt.Sprintf("%slink %s -> /**,", q.prefix, p),
				fmt.Sprintf("%slink /** -> %s,", q.prefix, p))
		}
	}
	return out, nil
}

func joinPerms(ps []v1alpha1.FilePermission) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}

// execRules translates an exec rule to the x permission. AppArmor checks it when
// execve(2) or execveat(2) runs the file (bprm_creds_for_exec), against the file's
// resolved path; an interpreter the kernel loads for it (the #! line, the ELF
// interpreter) is opened without an exec check. Audit uses ix, the exec mode the profile
// allows everything with: a bare x is for deny rules only.
func execRules(q qualifier, e *ruleset.Exec) ([]string, error) {
	paths, err := parsePaths(e.Paths)
	if err != nil {
		return nil, err
	}
	perm := "ix"
	if q.deny {
		perm = "x"
	}
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		out = append(out, fmt.Sprintf("%s%s %s,", q.prefix, p, perm))
	}
	return out, nil
}

// socketFamily returns AppArmor's name for a socket family: the same word, which abi
// 3.0 knows for each of them. unix is left out on purpose: see socketRules.
func socketFamily(f v1alpha1.SocketFamily) (string, bool) {
	switch f {
	case "inet", "inet6", "netlink", "packet", "alg", "vsock", "xdp", "bluetooth", "can",
		"tipc", "rds", "llc", "key":
		return string(f), true
	}
	return "", false
}

// socketType returns AppArmor's name for a socket type: the same word.
func socketType(t v1alpha1.SocketType) (string, bool) {
	switch t {
	case "stream", "dgram", "raw", "seqpacket", "rdm", "packet":
		return string(t), true
	}
	return "", false
}

// socketRules translates a socket rule to network rules, one per family and type.
// AppArmor 3.0 network rules are coarse: they say whether a process may use sockets of a
// family and type at all, so besides socket(2) and socketpair(2) they also refuse using
// such a socket the process did not create (inherited, or received over a unix socket),
// something podarmor's rules have no name for. What they cannot do is exact:
//
//   - protocols: AppArmor 3.0 matches only family and type; its protocol names (tcp, udp,
//     icmp) are stand-ins for types, and sctp or mptcp share those types;
//   - the unix family, and rules naming no family (which include it): apparmor_parser
//     turns unix network rules into fine-grained unix rules, and on kernels without
//     fine-grained af_unix mediation (upstream kernels such as Debian 12's) it can
//     neither enforce nor downgrade a deny rule of that kind ("deny unix socket rule
//     not enforced");
//   - Audit: an audit network rule records every send and receive on the socket, not its
//     creation.
func socketRules(q qualifier, s *ruleset.Socket) ([]string, error) {
	if len(s.Protocols) > 0 {
		return nil, errors.New("AppArmor 3.0 network rules match the family and type of a socket, not its protocol")
	}
	if !q.deny {
		return nil, errors.New("AppArmor 3.0 cannot audit socket creation alone: an audit network rule records every operation on matching sockets (send, receive, connect and the rest)")
	}
	if len(s.Families) == 0 {
		return nil, errors.New("a socket rule without families covers unix sockets, which AppArmor 3.0 cannot deny on kernels without fine-grained af_unix mediation (apparmor_parser drops such deny rules); name the families")
	}
	families := make([]string, 0, len(s.Families))
	for _, f := range s.Families {
		if f == "unix" {
			return nil, errors.New("AppArmor 3.0 cannot deny unix sockets on kernels without fine-grained af_unix mediation: apparmor_parser turns the rule into a unix rule it cannot enforce there nor downgrade")
		}
		name, ok := socketFamily(f)
		if !ok {
			return nil, fmt.Errorf("unknown socket family %q", f)
		}
		families = append(families, name)
	}
	types := make([]string, 0, len(s.Types))
	for _, t := range s.Types {
		name, ok := socketType(t)
		if !ok {
			return nil, fmt.Errorf("unknown socket type %q", t)
		}
		types = append(types, name)
	}
	var out []string
	for _, f := range families {
		if len(types) == 0 {
			out = append(out, fmt.Sprintf("%snetwork %s,", q.prefix, f))
			continue
		}
		for _, t := range types {
			out = append(out, fmt.Sprintf("%snetwork %s %s,", q.prefix, f, t))
		}
	}
	return out, nil
}

// capabilityName returns AppArmor's name for a capability that abi 3.0 has a bit for.
// CHECKPOINT_RESTORE has none: abi 3.0 predates it, and apparmor_parser compiles a rule
// for it as sys_admin, which the kernel checked for it before Linux 5.9 and which guards
// far more.
func capabilityName(c v1alpha1.Capability) (string, bool) {
	switch c {
	case "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
		"SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
		"NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
		"SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
		"SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
		"AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
		"BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF":
		return strings.ToLower(string(c)), true
	}
	return "", false
}

// capabilityRules translates a capability rule. AppArmor's capable hook sees every
// capability check the kernel makes for the process, after the process's own capability
// sets allowed it, so denying a capability there is exact.
func capabilityRules(q qualifier, c *ruleset.Capability) ([]string, error) {
	if len(c.Capabilities) == 0 {
		return nil, errors.New("the rule has no capabilities")
	}
	names := make([]string, 0, len(c.Capabilities))
	for _, cap := range c.Capabilities {
		if cap == "CHECKPOINT_RESTORE" {
			return nil, errors.New("AppArmor abi 3.0 has no checkpoint_restore capability: apparmor_parser compiles it as sys_admin, which guards far more")
		}
		name, ok := capabilityName(cap)
		if !ok {
			return nil, fmt.Errorf("unknown capability %q", cap)
		}
		names = append(names, name)
	}
	return []string{fmt.Sprintf("%scapability %s,", q.prefix, strings.Join(names, " "))}, nil
}

// ptraceRules translates a ptrace rule. Exact are trace and read towards any peer: the
// kernel asks the tracer's profile for every tracee, confined or not, and the ptrace
// rules of AppArmor name exactly these permissions. Not exact:
//
//   - tracedby and readby: the tracee's profile is consulted only when the tracer is
//     confined (profile_tracee_perm returns early for an unconfined tracer), so the host's
//     unconfined processes would still trace and read the container;
//   - peers OutsideContainer: AppArmor tells processes apart by profile, and every
//     container of the pods a policy selects runs under the same profile podarmor-<id>,
//     so "peer=podarmor-<id>" would also let in the pod's other containers
//     (shareProcessNamespace, kubectl debug --target) and other pods of the policy.
func ptraceRules(q qualifier, p *ruleset.Ptrace) ([]string, error) {
	if len(p.Permissions) == 0 {
		return nil, errors.New("the rule has no permissions")
	}
	set := map[v1alpha1.PtracePermission]bool{}
	for _, perm := range p.Permissions {
		switch perm {
		case v1alpha1.PtraceTrace, v1alpha1.PtraceRead:
			set[perm] = true
		case v1alpha1.PtraceTracedBy, v1alpha1.PtraceReadBy:
			return nil, fmt.Errorf("AppArmor cannot deny %s exactly: it consults the traced process's profile only when the tracer is confined, so unconfined host processes would still trace and read the container", perm)
		default:
			return nil, fmt.Errorf("unknown ptrace permission %q", perm)
		}
	}
	switch p.Peers {
	case v1alpha1.PtraceAnyPeer:
	case v1alpha1.PtraceOutsideContainer:
		return nil, errors.New("AppArmor tells processes apart by profile, and every container of the pods a policy selects shares the profile, so it cannot tell the container from its pod's other containers (peers OutsideContainer)")
	default:
		return nil, fmt.Errorf("unknown ptrace peers %q", p.Peers)
	}
	var perms []string
	for _, perm := range []v1alpha1.PtracePermission{v1alpha1.PtraceRead, v1alpha1.PtraceTrace} {
		if set[perm] {
			perms = append(perms, string(perm))
		}
	}
	return []string{fmt.Sprintf("%sptrace (%s),", q.prefix, strings.Join(perms, ", "))}, nil
}

// mountRules translates a mount rule. Exact are umount, by mount point or of every mount,
// and pivot_root as a whole: umount2(2) and pivot_root(2) are the only ways to do them and
// AppArmor sees both. Not exact:
//
//   - mount: AppArmor mediates mount(2), but the new mount API (fsopen, fsmount, open_tree
//     and move_mount) only since Linux 6.7, after Debian 12's kernel, and even then it
//     sees an attached detached mount as a move with no source or file system type;
//   - fsTypes, flags and sources of umount, which AppArmor's umount rules do not have;
//   - targets of pivotroot: the rule model does not say which of pivot_root's paths a
//     target is.
func mountRules(q qualifier, m *ruleset.Mount) ([]string, error) {
	if len(m.Operations) == 0 {
		return nil, errors.New("the rule has no operations")
	}
	ops := map[v1alpha1.MountOperation]bool{}
	for _, op := range m.Operations {
		switch op {
		case v1alpha1.MountMount:
			return nil, errors.New("AppArmor does not see the new mount API (fsopen, fsmount, open_tree, move_mount) before Linux 6.7, and later sees an attached new mount as a move without source or file system type")
		case v1alpha1.MountUmount, v1alpha1.MountPivotRoot:
			ops[op] = true
		default:
			return nil, fmt.Errorf("unknown mount operation %q", op)
		}
	}
	switch {
	case len(m.FSTypes) > 0:
		return nil, errors.New("AppArmor umount and pivot_root rules cannot match file system types")
	case len(m.Flags) > 0:
		return nil, errors.New("AppArmor umount and pivot_root rules cannot match mount flags")
	case len(m.Sources) > 0:
		return nil, errors.New("AppArmor umount and pivot_root rules cannot match mount sources")
	case len(m.Targets) > 0 && ops[v1alpha1.MountPivotRoot]:
		return nil, errors.New("the rule model does not say which path of pivot_root a target matches, so pivotroot rules with targets are not translated")
	}
	var out []string
	if ops[v1alpha1.MountUmount] {
		if len(m.Targets) == 0 {
			out = append(out, q.prefix+"umount,")
		} else {
			paths, err := parsePaths(m.Targets)
			if err != nil {
				return nil, err
			}
			for _, p := range paths {
				out = append(out, fmt.Sprintf("%sumount %s,", q.prefix, p))
			}
		}
	}
	if ops[v1alpha1.MountPivotRoot] {
		out = append(out, q.prefix+"pivot_root,")
	}
	return out, nil
}

// operationReason says why AppArmor 3.0 cannot express an operation.
func operationReason(op v1alpha1.Operation) string {
	switch op {
	case v1alpha1.OperationBPF:
		return "AppArmor 3.0 has no bpf rule, and the capabilities that guard bpf(2) (bpf, sys_admin, perfmon) guard far more while unprivileged bpf(2) needs none"
	case v1alpha1.OperationKernelModule:
		return "capability sys_module also guards unloading modules (delete_module) and the module autoloading of network device names (dev_load), so denying it is wider than denying loads"
	case v1alpha1.OperationUsernsCreate:
		return "user namespace rules need AppArmor 4 (abi 4.0); the profile is written for abi 3.0"
	case v1alpha1.OperationUserfaultfd:
		return "AppArmor does not mediate userfaultfd(2)"
	case v1alpha1.OperationIoUring:
		return "AppArmor 3.0 does not mediate io_uring (AppArmor 4's io_uring rules cover only sqpoll and override_creds)"
	case v1alpha1.OperationPerfEvent:
		return "AppArmor does not mediate perf_event_open(2); capability perfmon guards more and unprivileged use needs none"
	case v1alpha1.OperationChmodSetuid:
		return "AppArmor file rules cannot match the mode chmod(2) sets"
	}
	return "unknown operation"
}

// operationError says why an operation rule is not expressible; every operation is
// either not mediated by AppArmor 3.0 or mediated only together with more.
func operationError(o *ruleset.Operation) error {
	if len(o.Operations) == 0 {
		return errors.New("the rule has no operations")
	}
	var reasons []string
	for _, op := range o.Operations {
		s := fmt.Sprintf("%s: %s", op, operationReason(op))
		if !slices.Contains(reasons, s) {
			reasons = append(reasons, s)
		}
	}
	return errors.New(strings.Join(reasons, "; "))
}
