// Package apparmor compiles an enforcer-neutral rule set (policies/ruleset) into an
// AppArmor profile for apparmor_parser, written for the AppArmor 3.0 feature ABI
// (abi <abi/3.0>), which apparmor_parser 3.0.8 (Debian 12) compiles and 4.x (Debian 13)
// keeps honouring for policy that declares it; the tests run 3.0.8 for a kernel with
// exactly the features of abi 3.0. The profile is self-contained (no #include), named
// podarmor-<profile id> (ProfileName), and flagged attach_disconnected and
// mediate_deleted.
//
// # Allow by default
//
// The profile first allows every class AppArmor 3.0 mediates (files, link, capability,
// network, unix, signal, dbus, mount, umount, pivot_root, ptrace) and then only takes
// away: a rule whose action is Enforce becomes "audit deny" (a bare deny refuses without
// logging), a rule whose action is Audit becomes "audit" on an allow rule, which AppArmor
// logs as AUDIT when an access matching it is allowed; deny rules still win over it.
// Two things are deliberately not allowed: change_profile (a process could otherwise
// swap the profile for unconfined and shed every rule) and exec transitions other than
// ix (programs stay under this profile). Files are allowed with a file rule without l
// plus "link /** -> /**" (no subset condition), so that denying a permission on a file
// does not also refuse hard links to it.
//
// # What Express accepts
//
// Express accepts a rule only when the AppArmor rules take away exactly the operations
// the neutral rule names; otherwise it says why, Render leaves the rule out with a
// comment "# not expressible in AppArmor: <rule id>: <reason>", and the other enforcers
// carry it. Both go through one translation, so they cannot disagree.
//
//	neutral rule                         AppArmor 3.0 (P = the path's expression)
//	-----------------------------------  -----------------------------------------------
//	file {write, append, create,         P w
//	  delete, rename, chmod, chown}
//	file the above and read              P rw
//	file {append}                        P a
//	file link (alone or with the above)  link P -> /**  and  link /** -> P
//	file, other permission sets          not exact (below)
//	exec                                 P x      (Audit: P ix)
//	capability                           capability <name>... (not CHECKPOINT_RESTORE)
//	socket {families, types}             network <family> [<type>]  (Enforce only)
//	ptrace {trace, read}, peers Any      ptrace (read, trace)
//	mount {umount}, targets or none      umount [P]
//	mount {pivotroot}, no targets        pivot_root
//	egress, syscall, operation           not exact
//
// File permissions. The kernel maps AppArmor 3.0's file permissions (map_old_perms) so
// that w is write, append, create, delete, chmod, chown and setattr at once (the parser
// also sets append with w), and a is append only; r is read, and getattr, which
// current kernels allow regardless. rename(2) asks for r and w on the old path and w on
// the new one, truncate for w, unlink and rmdir for w, mkdir, mknod and symlink for w on
// the new name, open with O_CREAT for w even when the file exists (podarmor's create, as
// BPF must also count it), and link(2) only for l on the new name. Hence:
//
//   - write, create, delete, chmod, chown, rename and append can only be taken away
//     together (w), except append alone (a);
//   - read cannot be taken away alone: r also takes renaming the file away; with all of
//     w's permissions in the same rule, rw is exact;
//   - link is exact through link rules, because the allow rule for links carries no
//     subset condition;
//   - auditing read is not exact: the audit bits of r include getattr, so every stat(2)
//     of the file would be recorded.
//
// Exec. x is checked when execve(2) or execveat(2) runs a file, on its resolved path;
// the interpreter of a #! script or the ELF interpreter is loaded without an exec check
// (but reading a script needs r).
//
// Sockets. AppArmor 3.0 network rules say whether a process may use sockets of a family
// and type at all: they also refuse using such a socket it did not create (inherited, or
// received over a unix socket). Not exact: protocols (AppArmor 3.0 matches family and
// type; tcp and the like stand for types), the unix family and rules naming no family
// (apparmor_parser turns unix network rules into fine-grained unix rules, which it can
// neither enforce nor downgrade on kernels without af_unix mediation, such as Debian
// 12's), and Audit (an audit network rule records every send and receive). Egress is not
// expressible: AppArmor 3.0 cannot match addresses or ports.
//
// Capabilities. AppArmor's capable hook sees every capability check after the process's
// own capability sets pass, so denying one is exact. abi 3.0 predates CHECKPOINT_RESTORE:
// apparmor_parser compiles a rule for it as sys_admin, so it is refused.
//
// Ptrace. trace and read towards any peer are exact: the tracer's profile is asked for
// every tracee. tracedby and readby are not, because the tracee's profile is consulted
// only when the tracer is confined, so unconfined host processes are never refused.
// Peers OutsideContainer are not either: AppArmor tells processes apart by profile, and
// all containers of the pods a policy selects share it, so "peer=podarmor-<id>" would
// let the pod's other containers in (shareProcessNamespace, kubectl debug --target).
//
// Mounts. umount (AppArmor matches the mount point) and pivot_root as a whole are exact.
// mount is not: AppArmor does not see the new mount API (fsopen, fsmount, open_tree with
// move_mount) before Linux 6.7, and later sees attaching a new mount as a move without
// source or file system type. File system types, flags and sources of umount have no
// AppArmor form, and the rule model does not say which path of pivot_root a target is.
//
// Operations. kernelModule is not capability sys_module, which also guards delete_module
// and the autoloading of network device modules; bpf has no AppArmor 3.0 rule and the
// capabilities guarding it guard more; usernsCreate needs abi 4.0; userfaultfd,
// io_uring and perf_event_open are not mediated by AppArmor 3.0; chmodSetuid would need
// the mode chmod(2) sets. System call rules are Seccomp's.
//
// Differences that remain, outside what the rule model names: AppArmor refuses with
// EACCES (EPERM for capabilities) where BPF returns EPERM; a file descriptor received
// from another process is checked again against the profile, as is a socket.
//
// # Paths
//
// Patterns (policies/pattern) become AppArmor expressions that match exactly the same
// paths, each also in the directory form with a trailing '/' that AppArmor gives the
// names of directories: see pathExpr. The tests check this against the shared table of
// pattern cases twice: with a reference interpreter of the AARE subset written here, and
// by running apparmor_parser and the table's paths through the DFA it builds.
package apparmor
