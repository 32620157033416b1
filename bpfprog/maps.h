/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every map of the podarmor object. The enforcer sizes the ones marked "sized at load"
 * before loading (enforcer/bpf.Capacity) and pins them all under /sys/fs/bpf/podarmor.
 */
#ifndef PODARMOR_MAPS_H
#define PODARMOR_MAPS_H

/* settings: one struct config. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} settings SEC(".maps");

/* enforcer_self: one struct enforcer_task, written by every enforcer as it loads or adopts
 * the pinned state, so the last one to start is the one exempt. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct enforcer_task);
} enforcer_self SEC(".maps");

/* containers: registered mount namespace inode -> registration (sized at load). */
struct registration {
	struct identity id;
	__u32 armed; /* set at the first exec in the namespace, or at once for late registrations */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct registration);
} containers SEC(".maps");

/* ns_filter: a bit per value of a mount namespace inode's low PA_NS_FILTER_BITS bits, set
 * by the enforcer while a registration in containers has that value. A clear bit tells a
 * task outside every sandbox so with one load, where containers would take a hash lookup;
 * a set bit only says to look there. The enforcer sets a bit before the registration
 * appears and clears it after the last one goes, and rebuilds the filter from
 * containers before it attaches its programs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PA_NS_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} ns_filter SEC(".maps");

/* task_identity: the identity pinned to a sandboxed task at its first hook (see
 * current_identity in common.h). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct identity);
} task_identity SEC(".maps");

/* profile_active: profile slot -> body index (0: no rules). Sized at load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} profile_active SEC(".maps");

/* profile_names: profile slot -> profile ID, for an enforcer that adopts pinned state
 * after a restart. The programs never read it. */
struct profile_name {
	char id[64];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct profile_name);
} profile_names SEC(".maps");

/* profile_bodies: body index -> body. Twice the profiles, for double buffering. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2048);
	__type(key, __u32);
	__type(value, struct profile_body);
} profile_bodies SEC(".maps");

/* dfa_classes: body -> byte classes of its path DFA. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2048);
	__type(key, __u32);
	__type(value, struct dfa_classes);
} dfa_classes SEC(".maps");

/* dfa_trans: every body's transition table, in regions the enforcer allocates within
 * one page each. Memory-mappable: the enforcer writes a new body's region in place,
 * without rewriting the rest of its page, which other bodies' walks are reading. */
struct dfa_page {
	__u16 next[PA_DFA_PAGE];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct dfa_page);
} dfa_trans SEC(".maps");

/* dfa_accept: (body, accepting state) -> file verdicts. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, struct dfa_accept_key);
	__type(value, struct verdicts_path);
} dfa_accept SEC(".maps");

/* dfa_subtree: (body, state) -> the strongest file verdict of any path that extends a path
 * ending in state: renaming a directory moves every file beneath it to a new path, so a
 * directory whose subtree a rule guards may not be renamed or linked away. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18);
	__type(key, struct dfa_accept_key);
	__type(value, struct verdict);
} dfa_subtree SEC(".maps");

/* dfa_mount: (body, accepting state) -> mount rules whose source/target matches. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, struct dfa_accept_key);
	__type(value, struct mount_paths);
} dfa_mount SEC(".maps");

/* socket_rules: (body, family, type, protocol, with PA_ANY) -> verdict. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, struct socket_key);
	__type(value, struct verdict);
} socket_rules SEC(".maps");

/* egress4/egress6: (body, prefix) -> port ranges. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, struct egress4_key);
	__type(value, struct egress_ports);
} egress4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, struct egress6_key);
	__type(value, struct egress_ports);
} egress6 SEC(".maps");

/* mount_bodies: body -> mount rule masks. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2048);
	__type(key, __u32);
	__type(value, struct mount_body);
} mount_bodies SEC(".maps");

/* mount_fstype: (body, fs type) -> rules naming that type. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, struct mount_fstype_key);
	__type(value, struct mask);
} mount_fstype SEC(".maps");

/* counters: exact decision counts, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, struct counter_key);
	__type(value, __u64);
} counters SEC(".maps");

/* drops: events lost, per CPU, by enum pa_drop. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PA_NDROP);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* ratelimit: container -> event budget of the current second. */
struct rate {
	__u64 second;
	__u32 used;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct rate);
} ratelimit SEC(".maps");

/* events: deny and audit events for the enforcer. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* scratch: per-CPU room for a resolved path (a directory's path, '/', and a name). seq
 * changes whenever a program takes the buffer, so a program that was preempted by another
 * user of the same CPU's buffer notices and resolves again. */
struct scratch {
	__u64 seq;
	char path[PATH_BUF * 2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

#endif
