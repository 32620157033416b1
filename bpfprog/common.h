/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What every hook shares: who the current task is (identity), which rules apply (the
 * profile body), path resolution and matching, and how a decision is counted, reported
 * and returned.
 */
#ifndef PODARMOR_COMMON_H
#define PODARMOR_COMMON_H

#define EPERM 1
#define ENOMEM 12

/* open flags and file modes (uapi values, stable) */
#define O_ACCMODE 00000003
#define O_TRUNC 00001000
#define O_APPEND 00002000
#define FMODE_READ 0x1
#define FMODE_WRITE 0x2
#define __FMODE_EXEC 0x20 /* in f_flags of a file exec opens; open(2) cannot set it */

#define S_ISUID 0004000
#define S_ISGID 0002000
#define S_IXGRP 00010
#define S_IFMT 00170000
#define S_IFDIR 0040000

#define CAP_OPT_NOAUDIT 2 /* BIT(1) */
#define CAP_SYS_ADMIN 21
#define CLONE_NEWNS 0x00020000
#define PTRACE_MODE_READ 0x01
#define PTRACE_MODE_ATTACH 0x02

static const __u32 zero = 0;

/* BOUND masks an index where the verifier needs to see the mask: without the barrier the
 * compiler drops a mask it can prove redundant from an earlier check, and the verifier,
 * which tracks the register it actually uses, rejects the access. */
#define BOUND(v, mask)                \
	({                            \
		__u32 __v = (v);      \
		barrier_var(__v);     \
		__v & (mask);         \
	})

/* ---- identity ---------------------------------------------------------------- */

/* task_mntns reads the mount namespace of any task (a ptrace peer, say), through
 * bpf_probe_read_kernel: the pointer may come from anywhere. */
static __always_inline __u32 task_mntns(struct task_struct *task)
{
	return BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
}

/* current_mntns reads the current task's mount namespace with plain loads through the
 * trusted pointer of bpf_get_current_task_btf(): three loads, where task_mntns makes
 * three helper calls. nsproxy is the current task's own and cannot change under it. */
static __always_inline __u32 current_mntns(struct task_struct *current)
{
	return current->nsproxy->mnt_ns->ns.inum;
}

/* task_identity_of returns the identity of a task that carries one. */
static __always_inline struct identity *task_identity_of(struct task_struct *task)
{
	return bpf_task_storage_get(&task_identity, task, 0, 0);
}

/* current_identity_of is task_identity_of for the current task, which first reads the
 * task's local-storage pointer: a task without any task storage (almost every task
 * outside a sandbox) carries no identity, and a load says so where the helper call
 * would lock, look and unlock. */
static __always_inline struct identity *current_identity_of(struct task_struct *current)
{
	if (!current->bpf_storage)
		return 0;
	return task_identity_of(current);
}

/* registration_of returns the registration of mount namespace ns, if there is one. The
 * filter's bit answers for almost every namespace without one (the host's, and those of
 * pods outside any sandbox) with an inlined array load; only a set bit costs the hash
 * lookup. */
static __always_inline struct registration *registration_of(__u32 ns)
{
	__u32 bit = ns & ((1U << PA_NS_FILTER_BITS) - 1);
	__u32 word = bit >> 6;
	__u64 *w = bpf_map_lookup_elem(&ns_filter, &word);
	if (!w || !(*w & (1ULL << (bit & 63))))
		return 0;
	return bpf_map_lookup_elem(&containers, &ns);
}

/* namespace_identity returns the identity of the armed registration of the task's mount
 * namespace, if there is one. A registration not yet armed (the runtime is still setting
 * the container up) confines nobody; the first exec in the namespace arms it (see the
 * exec hook). */
static __always_inline struct identity *namespace_identity(struct task_struct *current)
{
	struct registration *reg = registration_of(current_mntns(current));
	if (!reg || !reg->armed)
		return 0;
	return &reg->id;
}

/* pin gives task a copy of identity id in its task storage, which it keeps wherever it
 * goes: 0 when the storage cannot be created. */
static __always_inline struct identity *pin(struct task_struct *task, struct identity *id)
{
	struct identity *pinned =
		bpf_task_storage_get(&task_identity, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (pinned)
		*pinned = *id;
	return pinned;
}

/* current_identity returns the sandbox identity of the current task, or 0 for a task
 * outside every sandbox. A sandboxed task carries its identity in task storage, pinned at
 * its first hook, and keeps it wherever it goes. Until then it is known by its mount
 * namespace's registration, which it cannot leave unpinned: a child cloned into a new
 * mount namespace is pinned at fork (task_alloc), and unshare and setns of a mount
 * namespace pass the capable hook, which pins, first. So a fork in a sandbox creates no
 * storage, and a child that only execs (the exec hook does not pin) or exits never pays
 * for one. This is the first thing every hook does, and for a task outside every sandbox
 * the whole of what it does: one load (no task storage), three loads (the mount
 * namespace) and the filter's load. */
static __always_inline struct identity *current_identity(void)
{
	struct task_struct *current = bpf_get_current_task_btf();
	struct identity *id = current_identity_of(current);
	if (id)
		return id;
	id = namespace_identity(current);
	if (!id)
		return 0;
	struct identity *pinned = pin(current, id);
	return pinned ? pinned : id; /* out of memory: confine this call, pin at the next */
}

/* /proc/<pid>/stat's clock tick (USER_HZ, 100 on x86) in nanoseconds. */
#define PA_NSEC_PER_TICK (1000000000ULL / 100)

/* the_enforcer tells whether task belongs to the process the enforcer wrote into
 * enforcer_self: same thread group, and a leader started at the same tick. */
static __always_inline int the_enforcer(struct task_struct *task)
{
	struct enforcer_task *self = bpf_map_lookup_elem(&enforcer_self, &zero);
	if (!self || !self->tgid || (__u32)BPF_CORE_READ(task, tgid) != self->tgid)
		return 0;
	__u64 start = BPF_CORE_READ(task, group_leader, start_boottime);
	return start / PA_NSEC_PER_TICK == self->start_ticks;
}

/* body_of returns the active rule body of a profile slot and its index. */
static __always_inline struct profile_body *body_of(__u32 slot, __u32 *index)
{
	__u32 *active = bpf_map_lookup_elem(&profile_active, &slot);
	if (!active || !*active)
		return 0;
	*index = *active;
	return bpf_map_lookup_elem(&profile_bodies, index);
}

/* ---- decisions: count, report, return ----------------------------------------- */

/* count adds one to the decision's counter, creating it at its first use. When the map
 * is full the decision goes to the reserved uncounted key, which the enforcer created at
 * load, so that no decision goes uncounted silently. */
static __always_inline void count(__u32 body, __u16 rule, __u8 action, __u8 hook)
{
	struct counter_key k = {.body = body, .rule = rule, .action = action, .hook = hook};
	__u64 *v = bpf_map_lookup_elem(&counters, &k);
	if (v) {
		*v += 1; /* per-CPU: no other writer */
		return;
	}
	__u64 one = 1;
	if (bpf_map_update_elem(&counters, &k, &one, BPF_NOEXIST) == 0)
		return;
	v = bpf_map_lookup_elem(&counters, &k); /* another CPU created it first */
	if (!v) {
		struct counter_key full = {.body = 0, .rule = PA_RULE_NONE};
		v = bpf_map_lookup_elem(&counters, &full);
	}
	if (v)
		*v += 1;
}

static __always_inline void drop(__u32 why)
{
	__u64 *v = bpf_map_lookup_elem(&drops, &why);
	if (v)
		*v += 1;
}

/* may_report spends one event of the container's budget for this second. */
static __always_inline int may_report(__u32 container)
{
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	__u32 budget = cfg && cfg->events_per_sec ? cfg->events_per_sec : 100;
	__u64 second = bpf_ktime_get_boot_ns() / 1000000000ULL;
	struct rate *r = bpf_map_lookup_elem(&ratelimit, &container);
	if (!r) {
		struct rate fresh = {.second = second, .used = 1};
		bpf_map_update_elem(&ratelimit, &container, &fresh, BPF_ANY);
		return 1;
	}
	if (r->second != second) {
		r->second = second;
		r->used = 1;
		return 1;
	}
	/* not exact under concurrency (two CPUs may both take the last event), which a
	 * budget can afford */
	__sync_fetch_and_add(&r->used, 1);
	if (r->used <= budget)
		return 1;
	drop(PA_DROP_RATELIMIT);
	return 0;
}

/* event_start reserves an event and fills what every hook reports; 0 when the event is
 * rate limited or the ring buffer is full (both counted in drops). */
static __always_inline struct event *event_start(struct identity *id, __u32 body, __u16 rule,
						 __u8 action, __u8 hook)
{
	if (!may_report(id->container))
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		drop(PA_DROP_RINGBUF);
		return 0;
	}
	__u64 pt = bpf_get_current_pid_tgid();
	e->ts = bpf_ktime_get_boot_ns();
	e->pid = (__u32)pt;
	e->tgid = pt >> 32;
	e->container = id->container;
	e->profile = id->profile;
	e->body = body;
	e->rule = rule;
	e->action = action;
	e->hook = hook;
	e->detail = 0;
	e->detail2 = 0;
	e->port = 0;
	e->family = 0;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	e->path_len = 0;
	e->path[0] = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

/* verdict_ret is what a hook returns for an action. The barriers keep the two constants
 * in separate branches: folded into arithmetic (-(action == ENFORCE)), the result is a
 * value Linux 6.12's verifier cannot prove to lie in [-4095, 0], and it refuses the
 * program. */
static __always_inline int verdict_ret(__u8 action)
{
	long r;
	if (action == PA_ACTION_ENFORCE) {
		r = -EPERM;
		barrier_var(r);
	} else {
		r = 0;
		barrier_var(r);
	}
	return r;
}

/* decide_simple counts and reports a decision that carries no path or address. */
static __always_inline int decide_simple(struct identity *id, __u32 body, __u16 rule,
					 __u8 action, __u8 hook, __u32 detail, __u32 detail2)
{
	if (action == PA_ACTION_NONE)
		return 0;
	count(body, rule, action, hook);
	struct event *e = event_start(id, body, rule, action, hook);
	if (e) {
		e->detail = detail;
		e->detail2 = detail2;
		bpf_ringbuf_submit(e, 0);
	}
	return verdict_ret(action);
}

/* pick chooses, among the bits of want, the first enforced one, else the first audited
 * one; it sets *bit and returns the action. Bounded by the number of bits. */
static __always_inline __u8 pick(__u32 enforce, __u32 audit, __u32 want, __u32 nbits, __u32 *bit)
{
	__u32 e = enforce & want, a = audit & want;
	__u32 m = e ? e : a;
	if (!m)
		return PA_ACTION_NONE;
	for (__u32 i = 0; i < 32; i++) {
		if (i >= nbits)
			break;
		if (m & (1U << i)) {
			*bit = i;
			break;
		}
	}
	return e ? PA_ACTION_ENFORCE : PA_ACTION_AUDIT;
}

#endif
