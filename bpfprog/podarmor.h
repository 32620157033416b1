/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The layout shared by the BPF programs and the enforcer (enforcer/bpf/layout.go mirrors
 * every struct and constant here; a test there compares sizes and offsets with the BTF of
 * the built object). Changing a struct here is a format change: bump PODARMOR_ABI.
 */
#ifndef PODARMOR_H
#define PODARMOR_H

#define PODARMOR_ABI 2

#define PATH_BUF 4096 /* PATH_MAX: bpf_d_path writes at most this much */
#define NAME_BUF 256  /* NAME_MAX + 1 */
#define EVENT_PATH 256

/* The path DFAs' transitions are 16-bit state numbers in pages of PA_DFA_PAGE entries (4
 * MiB, the largest array map value Linux allows): a body's table lies in one page, which
 * a walk looks up once and then indexes with plain loads. */
#define PA_DFA_PAGE_SHIFT 21
#define PA_DFA_PAGE (1U << PA_DFA_PAGE_SHIFT)

/* Permissions a path rule can deny; file rules use the first ten, mount rules the last
 * two (matched against the mount's source and target). */
enum pa_perm {
	PA_READ,
	PA_WRITE,
	PA_APPEND,
	PA_CREATE,
	PA_DELETE,
	PA_RENAME,
	PA_LINK,
	PA_CHMOD,
	PA_CHOWN,
	PA_EXEC,
	PA_NPERM,
};

#define PA_ALL_PERMS ((1U << PA_NPERM) - 1)
/* What moving a file onto a path needs there: everything but reading and executing it. */
#define PA_REPLACE_PERMS (PA_ALL_PERMS & ~(1U << PA_READ) & ~(1U << PA_EXEC))

/* Operations rules: one bit each. */
enum pa_op {
	PA_OP_BPF,
	PA_OP_KERNEL_MODULE,
	PA_OP_USERNS_CREATE,
	PA_OP_USERFAULTFD,
	PA_OP_IO_URING,
	PA_OP_PERF_EVENT,
	PA_OP_CHMOD_SETUID,
	PA_NOP,
};

/* Ptrace permissions, with the peer scope they apply to. */
enum pa_ptrace {
	PA_PTRACE_TRACE,
	PA_PTRACE_READ,
	PA_PTRACE_TRACEDBY,
	PA_PTRACE_READBY,
	PA_NPTRACE,
};

enum pa_peers {
	PA_PEERS_ANY,
	PA_PEERS_OUTSIDE,
	PA_NPEERS,
};

/* Mount operations. */
enum pa_mount_op {
	PA_MOUNT_MOUNT,
	PA_MOUNT_UMOUNT,
	PA_MOUNT_PIVOTROOT,
	PA_NMOUNTOP,
};

/* Mount flags, in the API's order; the hook derives them from the mount(2) flags. */
enum pa_mount_flag {
	PA_MF_RO,
	PA_MF_NOSUID,
	PA_MF_NODEV,
	PA_MF_NOEXEC,
	PA_MF_REMOUNT,
	PA_MF_BIND,
	PA_MF_RBIND,
	PA_MF_MOVE,
	PA_MF_SHARED,
	PA_MF_PRIVATE,
	PA_MF_SLAVE,
	PA_MF_UNBINDABLE,
};

/* The hook an event comes from. */
enum pa_hook {
	PA_HOOK_FILE_OPEN = 1,
	PA_HOOK_EXEC,
	PA_HOOK_PATH,      /* path_* operations: detail says which permission */
	PA_HOOK_CAPABLE,
	PA_HOOK_SOCKET_CREATE,
	PA_HOOK_CONNECT,
	PA_HOOK_SENDMSG,
	PA_HOOK_PTRACE,
	PA_HOOK_MOUNT,
	PA_HOOK_OPERATION,
};

/* Actions: what a matched rule does. */
enum pa_action {
	PA_ACTION_NONE,
	PA_ACTION_ENFORCE, /* -EPERM and an event */
	PA_ACTION_AUDIT,   /* allow and an event */
};

#define PA_RULE_NONE 0xffff

/* identity is what a sandboxed task carries: its profile slot and the container it
 * belongs to (the mount-namespace inode it was registered under). */
struct identity {
	__u32 profile;
	__u32 container;
};

/* config is the single entry of the config map. */
struct config {
	__u32 host_mntns;     /* the node's own mount namespace: its tasks are host agents */
	__u32 events_per_sec; /* per-container event budget */
	__u32 events_burst;
	__u32 _pad;
};

/* enforcer_task identifies the enforcer's own process (the single entry of enforcer_self),
 * which a sandbox's readby rules do not refuse (ptrace.h): its thread-group id in the
 * node's PID namespace and the start time of its thread-group leader, in the clock ticks
 * since boot that /proc/<pid>/stat gives, so that a process given the same pid after the
 * enforcer has died is not taken for it. tgid 0: no process is the enforcer. */
struct enforcer_task {
	__u32 tgid;
	__u32 _pad;
	__u64 start_ticks;
};

/* A rule verdict set: which bits are enforced or audited, and for each bit the rule that
 * decided it. */
struct verdicts_path {
	__u32 enforce;
	__u32 audit;
	__u16 rule[16]; /* PA_NPERM used; 16 so that a masked index is in bounds */
};

/* profile_body is one immutable version of a profile's rules. A profile slot points at
 * one body at a time; the enforcer writes a new body (and its tables, keyed by body) then
 * flips the slot, so a reader never sees a half-written rule set. */
struct profile_body {
	__u32 slot;
	__u32 flags;
	/* path DFA: classes and transition table base; dfa_states == 0 means no path rules */
	__u32 dfa_base;    /* entry of state 0 over all pages: page dfa_base / PA_DFA_PAGE; a step reads
			    * entry dfa_base % PA_DFA_PAGE + state * dfa_classes + class */
	__u32 dfa_classes; /* number of byte classes */
	__u32 dfa_states;
	__u32 _pad0;
	__u64 cap_enforce;
	__u64 cap_audit;
	__u16 cap_rule[64];
	__u32 op_enforce;
	__u32 op_audit;
	__u16 op_rule[PA_NOP + 1];
	__u16 _pad1;
	__u8 ptrace_enforce[PA_NPEERS]; /* bit per pa_ptrace */
	__u8 ptrace_audit[PA_NPEERS];
	__u16 ptrace_rule[PA_NPEERS][PA_NPTRACE];
	__u16 _pad3;
	__u32 has_socket; /* bit 0: socket rules present, consult socket_rules; bit 1 + shape:
			   * some key has that shape (socket_verdict's order of lookups); no
			   * shape bit: look every shape up */
	__u32 has_egress; /* egress rules present: consult egress4/egress6 */
	__u32 mount_ops;  /* bit per pa_mount_op with any rule: consult mount_bodies */
	__u32 _pad2;
};

/* dfa_classes value: the byte classes of one body's DFA. */
struct dfa_classes {
	__u8 class[256];
};

/* dfa_accept key: a body's accepting state. */
struct dfa_accept_key {
	__u32 body;
	__u32 state;
};

/* socket_rules key; a rule with an unset field is stored with PA_ANY there, and the hook
 * looks up the eight combinations of exact and any. */
#define PA_ANY 0xffff
struct socket_key {
	__u32 body;
	__u16 family;
	__u16 type;
	__u16 protocol;
	__u16 _pad;
};

struct verdict {
	__u8 action;
	__u8 _pad;
	__u16 rule;
};

/* Egress: an LPM trie per family maps (body, prefix) to a port table entry. The compiler
 * splits overlapping prefixes so the longest match carries every rule that applies. */
struct egress4_key {
	__u32 prefixlen; /* 32 (body) + prefix length */
	__u32 body;
	__u8 addr[4];
};

struct egress6_key {
	__u32 prefixlen; /* 32 (body) + prefix length */
	__u32 body;
	__u8 addr[16];
};

#define PA_EGRESS_RANGES 16
/* egress_ports: the port ranges that apply under one prefix, sorted and disjoint, each with
 * a verdict per protocol slot: 0 TCP, 1 UDP, 2 SCTP, 3 ICMP and ICMPv6. */
struct egress_range {
	__u16 first;
	__u16 last;
	__u8 action[4];
	__u16 rule[4];
};

struct egress_ports {
	__u32 n;
	__u32 _pad;
	struct egress_range r[PA_EGRESS_RANGES];
};

/* The registration filter (ns_filter in maps.h): a bit for each value of a mount namespace
 * inode's low PA_NS_FILTER_BITS bits, in 64-bit words. Namespace inodes come from one
 * counter that hands out the lowest free number, so the low bits of the namespaces alive
 * on a node rarely collide. */
#define PA_NS_FILTER_BITS 17
#define PA_NS_FILTER_WORDS (1U << (PA_NS_FILTER_BITS - 6))

/* Mount rules: up to PA_MOUNT_RULES per body, each a bit of a PA_MOUNT_WORDS-word mask. For a
 * mount the hook ANDs the masks of the rules each field allows: the operation's, the fs
 * type's (mount_fstype, plus rules without fs types), the flags' (rules naming a flag the
 * mount sets, plus rules without flags), and the source's and target's (tags in the path
 * DFA's accept states, plus rules without sources or targets). A constant number of word
 * operations, whatever the number of rules. */
#define PA_MOUNT_WORDS 16
#define PA_MOUNT_RULES (PA_MOUNT_WORDS * 64)
#define PA_NMOUNTFLAG 12

struct mask {
	__u64 w[PA_MOUNT_WORDS];
};

struct mount_body {
	struct mask op[PA_NMOUNTOP];
	struct mask no_fstype;
	struct mask no_flags;
	struct mask flag[PA_NMOUNTFLAG];
	struct mask no_source;
	struct mask no_target;
	__u8 action[PA_MOUNT_RULES];
	__u16 rule[PA_MOUNT_RULES];
};

struct mount_fstype_key {
	__u32 body;
	char fstype[28];
};

/* dfa_mount value: the mount rules whose sources or targets match a path ending here. */
struct mount_paths {
	struct mask source;
	struct mask target;
};

/* counters key: exact counts per (body, rule, action, hook). hook is the enum pa_hook of
 * the decision, as its event carries it. Body 0 is no rule body: the enforcer creates the
 * key {0, PA_RULE_NONE, PA_ACTION_NONE, 0} at load, and a decision whose counter could not
 * be created (the map is full) is counted there, as uncounted. */
struct counter_key {
	__u32 body;
	__u16 rule;
	__u8 action;
	__u8 hook;
};

/* Drops, in the drops per-CPU array. */
enum pa_drop {
	PA_DROP_RINGBUF,
	PA_DROP_RATELIMIT,
	PA_DROP_PATH, /* a path could not be resolved; the operation was decided fail-closed */
	PA_NDROP,
};

struct event {
	__u64 ts;
	__u32 pid;
	__u32 tgid;
	__u32 container;
	__u32 profile;
	__u32 body;
	__u16 rule;
	__u8 action;
	__u8 hook;
	__u32 detail; /* permission, capability, operation, family... by hook */
	__u32 detail2;
	char comm[16];
	__u16 port;
	__u16 family;
	__u8 addr[16];
	__u32 path_len; /* length of the resolved path, which may exceed what path holds */
	char path[EVENT_PATH];
};

#endif
