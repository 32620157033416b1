/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ptrace and the /proc files it guards (mem, environ, root, cwd, the ns links): a rule applies to
 * the tracer (trace, read) or to the traced task (tracedby, readby), towards any peer or
 * only peers outside the task's container. Host agents (tasks outside every sandbox in the
 * node's own mount namespace: the runtime, the kubelet, podarmor) are never refused as
 * tracers by tracedby/readby rules: `kubectl exec` and the runtime reach a container's
 * namespaces through exactly these checks.
 */
#ifndef PODARMOR_PTRACE_H
#define PODARMOR_PTRACE_H

/* peer_identity returns the identity of another task without giving it one. */
static __always_inline struct identity *peer_identity(struct task_struct *task)
{
	struct identity *id = task_identity_of(task);
	if (id)
		return id;
	struct registration *reg = registration_of(task_mntns(task));
	if (!reg || !reg->armed)
		return 0;
	return &reg->id;
}

static __always_inline int host_agent(struct task_struct *task, struct identity *id)
{
	if (id)
		return 0;
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	return cfg && cfg->host_mntns && task_mntns(task) == cfg->host_mntns;
}

/* ptrace_side decides the rules of the task holding identity self, for permission perm,
 * with a peer that is outside self's container when outside is set. */
static __always_inline int ptrace_side(struct identity *self, __u32 perm, int outside,
				       __u32 peer_pid)
{
	__u32 bi;
	struct profile_body *b = body_of(self->profile, &bi);
	if (!b)
		return 0;
	__u8 bit = 1U << perm;
	/* Rules towards any peer apply always, rules towards outside peers only to them;
	 * an enforced rule of either kind wins over an audited one. */
	__u32 peers = PA_PEERS_ANY;
	__u8 action = PA_ACTION_NONE;
	if (b->ptrace_enforce[PA_PEERS_ANY] & bit) {
		action = PA_ACTION_ENFORCE;
	} else if (outside && (b->ptrace_enforce[PA_PEERS_OUTSIDE] & bit)) {
		action = PA_ACTION_ENFORCE;
		peers = PA_PEERS_OUTSIDE;
	} else if (b->ptrace_audit[PA_PEERS_ANY] & bit) {
		action = PA_ACTION_AUDIT;
	} else if (outside && (b->ptrace_audit[PA_PEERS_OUTSIDE] & bit)) {
		action = PA_ACTION_AUDIT;
		peers = PA_PEERS_OUTSIDE;
	}
	if (action == PA_ACTION_NONE)
		return 0;
	return decide_simple(self, bi, b->ptrace_rule[BOUND(peers, 1)][BOUND(perm, 3)], action,
			     PA_HOOK_PTRACE, perm, peer_pid);
}

/* ptrace_pair decides tracer acting on tracee with permission trace (attach) or read;
 * either identity may be 0 (outside every sandbox). */
static __always_inline int ptrace_pair(struct task_struct *tracer, struct identity *tid,
				       struct task_struct *tracee, struct identity *eid, int attach)
{
	int outside = !tid || !eid || tid->container != eid->container;
	int ret;
	if (tid) {
		ret = ptrace_side(tid, attach ? PA_PTRACE_TRACE : PA_PTRACE_READ, outside,
				  BPF_CORE_READ(tracee, tgid));
		if (ret)
			return ret;
	}
	if (!eid || host_agent(tracer, tid))
		return 0;
	if (!attach && the_enforcer(tracer))
		return 0;
	return ptrace_side(eid, attach ? PA_PTRACE_TRACEDBY : PA_PTRACE_READBY, outside,
			   BPF_CORE_READ(tracer, tgid));
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(ptrace_access_check, struct task_struct *child, unsigned int mode)
{
	struct task_struct *me = bpf_get_current_task_btf();
	struct identity *tid = current_identity();
	struct identity *eid = peer_identity(child);
	return ptrace_pair(me, tid, child, eid, mode & PTRACE_MODE_ATTACH);
}

SEC("lsm/ptrace_traceme")
int BPF_PROG(ptrace_traceme, struct task_struct *parent)
{
	struct task_struct *me = bpf_get_current_task_btf();
	struct identity *eid = current_identity();
	struct identity *tid = peer_identity(parent);
	return ptrace_pair(parent, tid, me, eid, 1);
}

#endif
