// SPDX-License-Identifier: GPL-2.0
/*
 * podarmor's BPF LSM programs: one object, CO-RE, loaded and attached by enforcer/bpf.
 *
 * Every hook starts the same way: current_identity() tells whether the current task is
 * sandboxed (a task outside every sandbox pays a few loads and returns), body_of() finds
 * its profile's active rules, and the hook's own tables decide in time independent of the
 * number of rules. docs/enforcer.md describes the design.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "podarmor.h"
#include "maps.h"
#include "common.h"
#include "path.h"

char LICENSE[] SEC("license") = "GPL";

/* abi is read by the enforcer to refuse an object of another layout. */
const volatile __u32 podarmor_abi = PODARMOR_ABI;

/* event_layout puts struct event into the object's BTF, where the enforcer's layout test
 * finds it; the ring buffer itself is untyped. */
const volatile struct event event_layout = {};

/* ---- identity: inheritance and arming ----------------------------------------- */

/* A child inherits its parent's identity at fork, before it can run or unshare. A child
 * that starts in a namespace whose registration gives the parent's identity needs no
 * storage (see current_identity); one cloned into a new mount namespace, or whose parent
 * carries an identity its namespace does not give (it came from elsewhere), is pinned. */
SEC("lsm/task_alloc")
int BPF_PROG(task_alloc, struct task_struct *task, unsigned long clone_flags)
{
	struct task_struct *current = bpf_get_current_task_btf();
	struct identity *parent = current_identity_of(current);
	if (!(clone_flags & CLONE_NEWNS)) {
		if (!parent)
			return 0;
		struct identity *here = namespace_identity(current);
		if (here && here->profile == parent->profile && here->container == parent->container)
			return 0;
	} else if (!parent) {
		parent = namespace_identity(current);
		if (!parent)
			return 0;
	}
	if (!pin(task, parent))
		return -ENOMEM; /* refuse to create a task that would run unconfined */
	return 0;
}

/* ---- files ---------------------------------------------------------------------- */

/* open_perms is what an open file gives access to: read, write (an append needs write
 * too, which covers it), and write for a truncation. */
static __always_inline __u32 open_perms(struct file *file)
{
	__u32 mode = file->f_mode; /* the hook's argument: plain loads */
	__u32 flags = file->f_flags;
	__u32 want = 0;
	if (mode & FMODE_READ)
		want |= 1U << PA_READ;
	if (mode & FMODE_WRITE)
		want |= flags & O_APPEND ? (1U << PA_APPEND) | (1U << PA_WRITE) : 1U << PA_WRITE;
	if (flags & O_TRUNC)
		want |= 1U << PA_WRITE;
	return want;
}

SEC("lsm.s/file_open")
int BPF_PROG(file_open, struct file *file)
{
	/* The exec hook decides the binary an exec opens, read included (see there), as
	 * AppArmor does: the path is resolved and matched once per exec. */
	if (file->f_flags & __FMODE_EXEC)
		return 0;
	struct identity *id = current_identity();
	if (!id)
		return 0;
	__u32 bi;
	struct profile_body *b = body_of(id->profile, &bi);
	if (!b || !b->dfa_states)
		return 0;

	__u32 want = open_perms(file);
	if (!want)
		return 0;

	__u64 seq;
	struct scratch *s = take_scratch(&seq);
	if (!s)
		return -EPERM;
	return decide_path(id, bi, b, s, seq, resolve(s, &file->f_path), want, PA_HOOK_FILE_OPEN);
}

/* A descriptor passed in over a unix socket was opened elsewhere, perhaps outside the
 * sandbox: it is checked as if the sandbox had opened it. */
SEC("lsm.s/file_receive")
int BPF_PROG(file_receive, struct file *file)
{
	struct identity *id = current_identity();
	if (!id)
		return 0;
	__u32 bi;
	struct profile_body *b = body_of(id->profile, &bi);
	if (!b || !b->dfa_states)
		return 0;
	__u32 want = open_perms(file);
	if (!want)
		return 0;
	__u64 seq;
	struct scratch *s = take_scratch(&seq);
	if (!s)
		return -EPERM;
	return decide_path(id, bi, b, s, seq, resolve(s, &file->f_path), want, PA_HOOK_FILE_OPEN);
}

/* path_op decides a path_* hook on the entry d in dir. The path_* hooks are not sleepable
 * on Linux 6.1, so they resolve with walk_path instead of bpf_d_path. */
static __always_inline int path_op(const struct path *dir, struct dentry *d, __u32 want)
{
	struct identity *id = current_identity();
	if (!id)
		return 0;
	__u32 bi;
	struct profile_body *b = body_of(id->profile, &bi);
	if (!b || !b->dfa_states)
		return 0;
	__u64 seq;
	struct scratch *s = take_scratch(&seq);
	if (!s)
		return -EPERM;
	return decide_path(id, bi, b, s, seq, walk_struct_path(s, dir, d), want, PA_HOOK_PATH);
}

/* path_obj decides a hook on an existing object named by a struct path. */
static __always_inline int path_obj(const struct path *p, __u32 want)
{
	struct identity *id = current_identity();
	if (!id)
		return 0;
	__u32 bi;
	struct profile_body *b = body_of(id->profile, &bi);
	if (!b || !b->dfa_states)
		return 0;
	__u64 seq;
	struct scratch *s = take_scratch(&seq);
	if (!s)
		return -EPERM;
	return decide_path(id, bi, b, s, seq, walk_struct_path(s, p, 0), want, PA_HOOK_PATH);
}

/* open(O_CREAT) of a new file reaches path_mknod too. */
SEC("lsm/path_mknod")
int BPF_PROG(path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode,
	     unsigned int dev)
{
	return path_op(dir, dentry, 1U << PA_CREATE);
}

SEC("lsm/path_mkdir")
int BPF_PROG(path_mkdir, const struct path *dir, struct dentry *dentry, umode_t mode)
{
	return path_op(dir, dentry, 1U << PA_CREATE);
}

SEC("lsm/path_symlink")
int BPF_PROG(path_symlink, const struct path *dir, struct dentry *dentry, const char *old_name)
{
	return path_op(dir, dentry, 1U << PA_CREATE);
}

SEC("lsm/path_unlink")
int BPF_PROG(path_unlink, const struct path *dir, struct dentry *dentry)
{
	return path_op(dir, dentry, 1U << PA_DELETE);
}

SEC("lsm/path_rmdir")
int BPF_PROG(path_rmdir, const struct path *dir, struct dentry *dentry)
{
	return path_op(dir, dentry, 1U << PA_DELETE);
}

SEC("lsm/path_rename")
int BPF_PROG(path_rename, const struct path *old_dir, struct dentry *old_dentry,
	     const struct path *new_dir, struct dentry *new_dentry)
{
	/* A rename takes a file away from its path and every rule on it: a file that any
	 * rule guards may not be renamed, nor may a directory with a guarded file beneath
	 * it; and what lands on the new path replaces what is there. */
	struct identity *id = current_identity();
	if (!id)
		return 0;
	__u32 bi;
	struct profile_body *b = body_of(id->profile, &bi);
	if (!b || !b->dfa_states)
		return 0;
	__u64 seq;
	struct scratch *s = take_scratch(&seq);
	if (!s)
		return -EPERM;
	struct resolved old = walk_struct_path(s, old_dir, old_dentry);
	int ret = decide_path(id, bi, b, s, seq, old, PA_ALL_PERMS, PA_HOOK_PATH);
	if (ret)
		return ret;
	umode_t mode = BPF_CORE_READ(old_dentry, d_inode, i_mode);
	if ((mode & S_IFMT) == S_IFDIR) {
		ret = decide_subtree(id, bi, b, s, seq, old);
		if (ret)
			return ret;
	}
	return path_op(new_dir, new_dentry, PA_REPLACE_PERMS);
}

SEC("lsm/path_link")
int BPF_PROG(path_link, struct dentry *old_dentry, const struct path *new_dir,
	     struct dentry *new_dentry)
{
	/* A hard link is a second name for a file, one no rule covers: a file that any rule
	 * guards may not be linked, and the new name must allow what creating it does. The
	 * old name is in the same mount as the new directory (links never cross mounts). */
	struct identity *id = current_identity();
	if (!id)
		return 0;
	__u32 bi;
	struct profile_body *b = body_of(id->profile, &bi);
	if (!b || !b->dfa_states)
		return 0;
	__u64 seq;
	struct scratch *s = take_scratch(&seq);
	if (!s)
		return -EPERM;
	struct resolved old = walk_path(s, new_dir->mnt, old_dentry, 0);
	int ret = decide_path(id, bi, b, s, seq, old, PA_ALL_PERMS, PA_HOOK_PATH);
	if (ret)
		return ret;
	return path_op(new_dir, new_dentry, PA_REPLACE_PERMS);
}

SEC("lsm/path_chmod")
int BPF_PROG(path_chmod, const struct path *path, umode_t mode)
{
	int ret = path_obj(path, 1U << PA_CHMOD);
	if (ret)
		return ret;
	/* chmodSetuid: the set-user-ID bit, or set-group-ID with group execute (without
	 * group execute it means mandatory locking, not privilege). */
	if (!(mode & S_ISUID) && (mode & (S_ISGID | S_IXGRP)) != (S_ISGID | S_IXGRP))
		return 0;
	struct identity *id = current_identity();
	if (!id)
		return 0;
	__u32 bi;
	struct profile_body *b = body_of(id->profile, &bi);
	if (!b)
		return 0;
	__u32 bit = 0;
	__u8 action = pick(b->op_enforce, b->op_audit, 1U << PA_OP_CHMOD_SETUID, PA_NOP, &bit);
	return decide_simple(id, bi, b->op_rule[PA_OP_CHMOD_SETUID], action, PA_HOOK_OPERATION,
			     PA_OP_CHMOD_SETUID, mode);
}

SEC("lsm/path_chown")
int BPF_PROG(path_chown, const struct path *path, __u32 uid, __u32 gid)
{
	return path_obj(path, 1U << PA_CHOWN);
}

SEC("lsm/path_truncate")
int BPF_PROG(path_truncate, const struct path *path)
{
	return path_obj(path, 1U << PA_WRITE);
}

/* ---- exec: matching the resolved binary, and arming a container -------------- */

SEC("lsm.s/bprm_check_security")
int BPF_PROG(bprm_check_security, struct linux_binprm *bprm)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct identity *id = current_identity_of(task);
	int arming = 0;
	if (!id) {
		/* The runtime's first exec in a registered namespace starts the container's
		 * own program: confinement begins here, as AppArmor's does at exec. The
		 * registration is the identity; the exec'd program's first other hook pins it
		 * (a program that only execs again never needs storage). */
		struct registration *reg = registration_of(current_mntns(task));
		if (!reg)
			return 0;
		arming = !reg->armed;
		reg->armed = 1;
		id = &reg->id;
	}
	__u32 bi;
	struct profile_body *b = body_of(id->profile, &bi);
	if (!b || !b->dfa_states)
		return 0;
	__u64 seq;
	struct scratch *s = take_scratch(&seq);
	if (!s)
		return -EPERM;
	struct file *f = bprm->file;
	struct resolved p = resolve(s, &f->f_path);
	__u32 state = 0;
	int ret = match_path(bi, b, s, seq, p, &state);
	if (ret)
		return ret;
	struct verdicts_path *v = path_verdicts(bi, state);
	if (!v)
		return 0;
	/* file_open leaves the binary's open to this hook: reading it is decided here, on
	 * the same match and first, as the open came first (an exec'd binary, a script and
	 * its interpreter; the ELF interpreter the kernel maps is not checked, as under
	 * AppArmor). The exec that arms the container opened its binary unconfined. */
	if (!arming) {
		ret = decide_verdicts(id, bi, s, p, v, 1U << PA_READ, PA_HOOK_FILE_OPEN);
		if (ret)
			return ret;
	}
	return decide_verdicts(id, bi, s, p, v, 1U << PA_EXEC, PA_HOOK_EXEC);
}

/* ---- capabilities ------------------------------------------------------------- */

SEC("lsm/capable")
int BPF_PROG(capable, const struct cred *cred, struct user_namespace *ns, int cap,
	     unsigned int opts)
{
	struct task_struct *current = bpf_get_current_task_btf();
	struct identity *id = current_identity_of(current);
	if (!id) {
		id = namespace_identity(current);
		if (!id)
			return 0;
		/* unshare and setns of a mount namespace check CAP_SYS_ADMIN first: the task
		 * carries its identity in task storage before it can leave the namespace that
		 * gives it. Where the storage cannot be made, that check fails. */
		struct identity *pinned = pin(current, id);
		if (pinned)
			id = pinned;
		else if (cap == CAP_SYS_ADMIN)
			return -EPERM;
	}
	if (cap < 0 || cap >= 64)
		return 0;
	__u32 bi;
	struct profile_body *b = body_of(id->profile, &bi);
	if (!b)
		return 0;
	__u64 bit = 1ULL << cap;
	__u8 action = b->cap_enforce & bit ? PA_ACTION_ENFORCE
		      : b->cap_audit & bit ? PA_ACTION_AUDIT
					   : PA_ACTION_NONE;
	if (action == PA_ACTION_NONE)
		return 0;
	/* The kernel probes capabilities with NOAUDIT to choose a behaviour (not to grant
	 * an operation the task asked for): refuse them alike, without counting or events. */
	if (opts & CAP_OPT_NOAUDIT)
		return verdict_ret(action);
	return decide_simple(id, bi, b->cap_rule[BOUND(cap, 63)], action, PA_HOOK_CAPABLE, cap, 0);
}

/* ---- kernel operations ---------------------------------------------------------- */

static __always_inline int operation(__u32 op, __u32 detail2)
{
	struct identity *id = current_identity();
	if (!id)
		return 0;
	__u32 bi;
	struct profile_body *b = body_of(id->profile, &bi);
	if (!b)
		return 0;
	__u32 bit = 0;
	__u8 action = pick(b->op_enforce, b->op_audit, 1U << op, PA_NOP, &bit);
	if (action == PA_ACTION_NONE)
		return 0;
	return decide_simple(id, bi, b->op_rule[BOUND(op, 7)], action, PA_HOOK_OPERATION, op, detail2);
}

SEC("lsm/bpf")
int BPF_PROG(bpf, int cmd, union bpf_attr *attr, unsigned int size)
{
	return operation(PA_OP_BPF, cmd);
}

SEC("lsm/kernel_module_request")
int BPF_PROG(kernel_module_request, char *kmod_name)
{
	/* A request is the kernel loading a module on the task's behalf (a socket family,
	 * a filesystem): that is explicitly loading code too. */
	return operation(PA_OP_KERNEL_MODULE, 1);
}

SEC("lsm/kernel_read_file")
int BPF_PROG(kernel_read_file, struct file *file, enum kernel_read_file_id id, bool contents)
{
	if (id != READING_MODULE)
		return 0;
	return operation(PA_OP_KERNEL_MODULE, 2);
}

SEC("lsm/kernel_load_data")
int BPF_PROG(kernel_load_data, enum kernel_load_data_id id, bool contents)
{
	if (id != LOADING_MODULE)
		return 0;
	return operation(PA_OP_KERNEL_MODULE, 3);
}

SEC("lsm/userns_create")
int BPF_PROG(userns_create, const struct cred *cred)
{
	return operation(PA_OP_USERNS_CREATE, 0);
}

SEC("lsm/perf_event_open")
int BPF_PROG(perf_event_open, struct perf_event_attr *attr, int type)
{
	return operation(PA_OP_PERF_EVENT, type);
}

/* userfaultfd and io_uring instances are anonymous inodes with fixed names. */
SEC("lsm/inode_init_security_anon")
int BPF_PROG(inode_init_security_anon, struct inode *inode, const struct qstr *name,
	     const struct inode *context_inode)
{
	char n[16] = {};
	bpf_probe_read_kernel_str(n, sizeof(n), BPF_CORE_READ(name, name));
	/* "[userfaultfd]" and "[io_uring]" */
	if (n[0] != '[')
		return 0;
	if (n[1] == 'u' && n[2] == 's' && n[3] == 'e' && n[4] == 'r' && n[5] == 'f' &&
	    n[12] == ']' && n[13] == 0)
		return operation(PA_OP_USERFAULTFD, 0);
	if (n[1] == 'i' && n[2] == 'o' && n[3] == '_' && n[4] == 'u' && n[9] == ']' && n[10] == 0)
		return operation(PA_OP_IO_URING, 0);
	return 0;
}

#include "self.h"
#include "net.h"
#include "ptrace.h"
#include "mount.h"
