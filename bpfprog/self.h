/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The enforcer guards itself: whatever its policy, a sandboxed task may not signal the
 * enforcer's process (task_kill: kill, tgkill, pidfd_send_signal, every signal, 0
 * included) nor connect to a unix stream socket the enforcer listens on (its registration
 * socket: a container that reached it, through a hostPath volume say, could ask it to
 * unregister the container). Ptrace and the /proc files of the enforcer are the ptrace
 * rules' (ptrace.h). The enforcer is the process in enforcer_self (the_enforcer).
 * Both hooks exist in every kernel podarmor supports.
 */
#ifndef PODARMOR_SELF_H
#define PODARMOR_SELF_H

/* enforcer_listener refuses a sandboxed task a connection to a socket whose listener is
 * the enforcer's process: listen(2) records the listener's thread group in sk_peer_pid
 * (for connect to copy), in the node's PID namespace at numbers[0]. Only the pid is
 * compared: a process given the enforcer's pid after it died is refused sandboxes'
 * connections until the next enforcer writes itself in, which fails closed. */
static __always_inline int enforcer_listener(struct sock *listener)
{
	struct enforcer_task *self = bpf_map_lookup_elem(&enforcer_self, &zero);
	if (!self || !self->tgid)
		return 0;
	struct pid *pid = BPF_CORE_READ(listener, sk_peer_pid);
	if (!pid || (__u32)BPF_CORE_READ(pid, numbers[0].nr) != self->tgid)
		return 0;
	if (!current_identity())
		return 0;
	return -EPERM;
}

SEC("lsm/task_kill")
int BPF_PROG(task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig,
	     const struct cred *cred, int ret)
{
	if (ret)
		return ret;
	if (!the_enforcer(p) || !current_identity())
		return 0;
	return -EPERM;
}

#endif
