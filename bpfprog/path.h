/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Paths: resolved by the kernel from the objects an operation acts on (bpf_d_path of a
 * struct path, relative to the task's root, so a container sees its own paths), then
 * matched by walking the profile's DFA over the bytes: one table step per byte, whatever
 * the number of rules. The verifier lets a program call bpf_d_path on the hooks the
 * kernel lists as sleepable (file_open, bprm_check_security, sb_mount...), whether or not
 * the program itself is; those programs are lsm.s/. The path_* hooks are not on that list
 * on Linux 6.1: they resolve with the walk below.
 */
#ifndef PODARMOR_PATH_H
#define PODARMOR_PATH_H

/* The walk takes WALK_CHUNK bytes per bpf_loop iteration, with the scratch buffer, the
 * byte classes, the body's page of transitions and the table's geometry looked up once
 * per path and carried in the context: a byte costs a load, a class load, an index
 * computation and a load from the page. A whole chunk is walked without checking for the
 * end of the path; the last, partial one checks every byte. */
#define WALK_CHUNK 32

struct walk {
	struct scratch *s;
	struct dfa_classes *cl;
	struct dfa_page *page;
	__u32 base;
	__u32 nclasses;
	__u32 state;
	__u32 off;
	__u32 len;
};

/* WALK_BYTE takes byte k of the chunk at p, or leaves the chunk in the dead state. The
 * mask keeps the index in the page for the verifier; the enforcer keeps every body's
 * table inside its page. */
#define WALK_BYTE(k)                                                                    \
	do {                                                                            \
		__u32 idx = (row + cl->class[p[k]]) & (PA_DFA_PAGE - 1);                \
		__u32 next = page->next[idx];                                           \
		if (!next)                                                              \
			goto dead; /* nothing can match any more */                     \
		state = next;                                                           \
		row = base + next * nclasses;                                           \
	} while (0)

/* WALK_LAST takes byte k of the last chunk, which has n bytes. */
#define WALK_LAST(k)                \
	do {                        \
		if ((k) >= n)       \
			goto out;   \
		WALK_BYTE(k);       \
	} while (0)

static long walk_chunk(__u32 i, struct walk *w)
{
	struct dfa_classes *cl = w->cl;
	struct dfa_page *page = w->page;
	__u32 base = w->base, nclasses = w->nclasses, state = w->state;
	__u32 row = base + state * nclasses;
	__u64 at = (__u64)i * WALK_CHUNK;
	__u64 x = w->off + at, n = w->len - at;
	/* match keeps off + len within the first half of the buffer; the verifier needs
	 * to see that a chunk at x stays inside the buffer */
	if (x > PATH_BUF * 2 - WALK_CHUNK)
		goto dead;
	const __u8 *p = (const __u8 *)&w->s->path[x];
	if (n >= WALK_CHUNK) {
		WALK_BYTE(0);
		WALK_BYTE(1);
		WALK_BYTE(2);
		WALK_BYTE(3);
		WALK_BYTE(4);
		WALK_BYTE(5);
		WALK_BYTE(6);
		WALK_BYTE(7);
		WALK_BYTE(8);
		WALK_BYTE(9);
		WALK_BYTE(10);
		WALK_BYTE(11);
		WALK_BYTE(12);
		WALK_BYTE(13);
		WALK_BYTE(14);
		WALK_BYTE(15);
		WALK_BYTE(16);
		WALK_BYTE(17);
		WALK_BYTE(18);
		WALK_BYTE(19);
		WALK_BYTE(20);
		WALK_BYTE(21);
		WALK_BYTE(22);
		WALK_BYTE(23);
		WALK_BYTE(24);
		WALK_BYTE(25);
		WALK_BYTE(26);
		WALK_BYTE(27);
		WALK_BYTE(28);
		WALK_BYTE(29);
		WALK_BYTE(30);
		WALK_BYTE(31);
	} else {
		WALK_LAST(0);
		WALK_LAST(1);
		WALK_LAST(2);
		WALK_LAST(3);
		WALK_LAST(4);
		WALK_LAST(5);
		WALK_LAST(6);
		WALK_LAST(7);
		WALK_LAST(8);
		WALK_LAST(9);
		WALK_LAST(10);
		WALK_LAST(11);
		WALK_LAST(12);
		WALK_LAST(13);
		WALK_LAST(14);
		WALK_LAST(15);
		WALK_LAST(16);
		WALK_LAST(17);
		WALK_LAST(18);
		WALK_LAST(19);
		WALK_LAST(20);
		WALK_LAST(21);
		WALK_LAST(22);
		WALK_LAST(23);
		WALK_LAST(24);
		WALK_LAST(25);
		WALK_LAST(26);
		WALK_LAST(27);
		WALK_LAST(28);
		WALK_LAST(29);
		WALK_LAST(30);
	}
out:
	w->state = state;
	return 0;
dead:
	w->state = 0;
	return 1;
}

/* match walks the len bytes at off in the scratch path s through body's DFA and returns
 * the final state (0 when no rule can match). Every resolver leaves its path in the first
 * half of the buffer (off + len <= PATH_BUF). */
static __always_inline __u32 match(struct scratch *s, __u32 bodyidx, struct profile_body *b,
				   __u32 off, __u32 len)
{
	if (len > PATH_BUF || off > PATH_BUF)
		return 0;
	struct dfa_classes *cl = bpf_map_lookup_elem(&dfa_classes, &bodyidx);
	__u32 pg = b->dfa_base >> PA_DFA_PAGE_SHIFT;
	struct dfa_page *page = bpf_map_lookup_elem(&dfa_trans, &pg);
	if (!cl || !page)
		return 0;
	struct walk w = {
		.s = s,
		.cl = cl,
		.page = page,
		.base = b->dfa_base & (PA_DFA_PAGE - 1),
		.nclasses = b->dfa_classes,
		.state = 1,
		.off = off,
		.len = len,
	};
	bpf_loop((len + WALK_CHUNK - 1) / WALK_CHUNK, walk_chunk, &w, 0);
	return w.state;
}

/* step moves state over one more byte c. */
static __always_inline __u32 step(__u32 bodyidx, struct profile_body *b, __u32 state, __u8 c)
{
	struct dfa_classes *cl = bpf_map_lookup_elem(&dfa_classes, &bodyidx);
	__u32 pg = b->dfa_base >> PA_DFA_PAGE_SHIFT;
	struct dfa_page *page = bpf_map_lookup_elem(&dfa_trans, &pg);
	if (!cl || !page || !state)
		return 0;
	__u32 idx = (b->dfa_base + state * b->dfa_classes + cl->class[c]) & (PA_DFA_PAGE - 1);
	return page->next[idx];
}

/* take_scratch claims this CPU's path buffer and returns it with its sequence number. */
static __always_inline struct scratch *take_scratch(__u64 *seq)
{
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	s->seq++;
	*seq = s->seq;
	return s;
}

/* A resolved path lies in the scratch buffer at [off, off+len). */
struct resolved {
	__u32 off;
	long len; /* < 0: the path could not be resolved */
};

/* resolve writes the path of p into the scratch buffer with bpf_d_path (sleepable hooks
 * only), at offset 0. */
static __always_inline struct resolved resolve(struct scratch *s, const struct path *p)
{
	struct resolved r = {.off = 0, .len = -1};
	long n = bpf_d_path((struct path *)p, s->path, PATH_BUF);
	if (n > 0)
		r.len = n - 1;
	return r;
}

/* The same walk, for hooks that may not call bpf_d_path: from a dentry up to the task's
 * root, crossing mount points, prepending each name to the end of the first half of the
 * scratch buffer. It stops at the task's root, at the root of the mount namespace (for an
 * object the task's root does not reach), and at a disconnected dentry.
 *
 * Within the mount the hook's own path or dentry lies in, the walk follows typed pointers
 * with plain loads (which the verifier turns into fault-safe loads): a name costs one
 * helper call, the copy of its bytes. Crossing a mount needs struct mount, which encloses
 * the struct vfsmount the path points to, and the verifier cannot type that step back
 * (container_of) on every supported kernel: from the first crossing on, the walk reads
 * each field with bpf_probe_read_kernel. */
struct up {
	struct scratch *s;
	struct dentry *root_dentry; /* the task's root, typed */
	struct vfsmount *root_mnt;
	/* typed, within the first mount */
	struct dentry *dentry;
	struct vfsmount *mnt;
	struct dentry *mnt_root;
	/* addresses read with bpf_probe_read_kernel, after the first mount crossing */
	__u64 raw_dentry;
	__u64 raw_mnt;
	__u32 pos;
	int err;
	int crossed;
};

/* prepend puts "/" and the len bytes at name before pos. */
static __always_inline int prepend(struct scratch *s, struct up *u, const unsigned char *name,
				   __u32 len)
{
	if (len > NAME_BUF - 1 || u->pos < len + 1) {
		u->err = -36; /* ENAMETOOLONG */
		return 1;
	}
	u->pos -= len;
	bpf_probe_read_kernel(&s->path[u->pos & (PATH_BUF - 1)], len & (NAME_BUF - 1), name);
	u->pos -= 1;
	s->path[u->pos & (PATH_BUF - 1)] = '/';
	return 0;
}

/* cross leaves the mount whose struct vfsmount is at m for the mount it is mounted on, or
 * returns 1 at the root of the mount namespace. m may be typed or an address: it is only
 * read through bpf_probe_read_kernel. */
static __always_inline int cross(struct up *u, __u64 m)
{
	struct mount *mnt = (void *)(m - bpf_core_field_offset(struct mount, mnt));
	struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
	if (up == mnt)
		return 1;
	u->raw_dentry = (__u64)BPF_CORE_READ(mnt, mnt_mountpoint);
	u->raw_mnt = (__u64)up + bpf_core_field_offset(struct mount, mnt);
	u->crossed = 1;
	return 0;
}

/* walk_up_raw takes one step of the walk from addresses. */
static long walk_up_raw(__u32 i, struct up *u)
{
	struct dentry *d = (void *)u->raw_dentry;
	struct vfsmount *m = (void *)u->raw_mnt;
	if (u->raw_dentry == (__u64)u->root_dentry && u->raw_mnt == (__u64)u->root_mnt)
		return 1;
	struct dentry *mroot = BPF_CORE_READ(m, mnt_root);
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (d == mroot)
		return cross(u, u->raw_mnt);
	if (d == parent)
		return 1; /* disconnected */
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	__u32 len = BPF_CORE_READ(d, d_name.len);
	if (prepend(u->s, u, name, len))
		return 1;
	u->raw_dentry = (__u64)parent;
	return 0;
}

/* walk_up_typed takes one step of the walk within the first mount; it ends at the
 * mount's root, having crossed it (u->crossed) unless that is the namespace's root. */
static long walk_up_typed(__u32 i, struct up *u)
{
	struct dentry *d = u->dentry;
	if (d == u->root_dentry && u->mnt == u->root_mnt)
		return 1;
	if (d == u->mnt_root) {
		cross(u, (__u64)u->mnt);
		return 1;
	}
	struct dentry *parent = d->d_parent;
	if (d == parent)
		return 1; /* disconnected */
	if (prepend(u->s, u, d->d_name.name, d->d_name.len))
		return 1;
	u->dentry = parent;
	return 0;
}

/* walk finishes a walk that u starts. Two loops, not one loop with a branch on
 * u->crossed: Linux 6.1 verifies a bpf_loop callback once, with the state of its first
 * call, and would take the branch of the later calls for dead code. */
static __always_inline struct resolved walk(struct scratch *s, struct up *u)
{
	struct resolved r = {.off = 0, .len = -1};
	if (!u->crossed)
		bpf_loop(PATH_BUF / 2, walk_up_typed, u, 0);
	if (u->crossed && !u->err)
		bpf_loop(PATH_BUF / 2, walk_up_raw, u, 0);
	if (u->err)
		return r;
	if (u->pos == PATH_BUF) { /* the root itself */
		u->pos--;
		s->path[u->pos & (PATH_BUF - 1)] = '/';
	}
	s->path[PATH_BUF] = 0; /* events copy from off: end the string */
	r.off = u->pos & (PATH_BUF - 1);
	r.len = PATH_BUF - u->pos;
	return r;
}

/* walk_path resolves the typed (mnt, dentry), with child's name appended when child is
 * set. */
static __always_inline struct resolved walk_path(struct scratch *s, struct vfsmount *mnt,
						 struct dentry *dentry, struct dentry *child)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fs_struct *fs = task->fs;
	struct up u = {
		.s = s,
		.root_dentry = fs->root.dentry,
		.root_mnt = fs->root.mnt,
		.dentry = dentry,
		.mnt = mnt,
		.mnt_root = mnt->mnt_root,
		.pos = PATH_BUF,
	};
	if (child && prepend(s, &u, child->d_name.name, child->d_name.len)) {
		struct resolved r = {.off = 0, .len = -1};
		return r;
	}
	return walk(s, &u);
}

/* walk_path_raw resolves (mnt, dentry) given as addresses read with
 * bpf_probe_read_kernel. */
static __always_inline struct resolved walk_path_raw(struct scratch *s, struct vfsmount *mnt,
						     struct dentry *dentry)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fs_struct *fs = task->fs;
	struct up u = {
		.s = s,
		.root_dentry = fs->root.dentry,
		.root_mnt = fs->root.mnt,
		.raw_dentry = (__u64)dentry,
		.raw_mnt = (__u64)mnt,
		.pos = PATH_BUF,
		.crossed = 1,
	};
	return walk(s, &u);
}

/* walk_struct_path resolves a struct path, for hooks without bpf_d_path. */
static __always_inline struct resolved walk_struct_path(struct scratch *s, const struct path *p,
							struct dentry *child)
{
	return walk_path(s, p->mnt, p->dentry, child);
}

/* decide_subtree refuses (or audits) moving the directory whose path was just resolved
 * when a rule guards anything beneath it. */
static __always_inline int decide_subtree(struct identity *id, __u32 bodyidx,
					  struct profile_body *b, struct scratch *s, __u64 seq,
					  struct resolved p)
{
	if (p.len < 0) {
		drop(PA_DROP_PATH);
		return -EPERM;
	}
	__u32 state = step(bodyidx, b, match(s, bodyidx, b, p.off, p.len), '/');
	if (s->seq != seq) {
		drop(PA_DROP_PATH);
		return -EPERM;
	}
	if (!state)
		return 0;
	struct dfa_accept_key k = {.body = bodyidx, .state = state};
	struct verdict *v = bpf_map_lookup_elem(&dfa_subtree, &k);
	if (!v || v->action == PA_ACTION_NONE)
		return 0;
	count(bodyidx, v->rule, v->action, PA_HOOK_PATH);
	struct event *e = event_start(id, bodyidx, v->rule, v->action, PA_HOOK_PATH);
	if (e) {
		e->detail = PA_RENAME;
		e->detail2 = 1; /* a guarded subtree */
		e->path_len = p.len;
		bpf_probe_read_kernel(e->path, EVENT_PATH, &s->path[p.off & (PATH_BUF - 1)]);
		e->path[EVENT_PATH - 1] = 0;
		bpf_ringbuf_submit(e, 0);
	}
	return verdict_ret(v->action);
}

/* path_verdicts returns the file verdicts of the state a path ends in, or 0. */
static __always_inline struct verdicts_path *path_verdicts(__u32 bodyidx, __u32 state)
{
	if (!state)
		return 0;
	struct dfa_accept_key k = {.body = bodyidx, .state = state};
	return bpf_map_lookup_elem(&dfa_accept, &k);
}

/* decide_verdicts decides an operation that wants the permission bits in want on the
 * path p whose DFA state carries the verdicts v, counting and reporting it. */
static __always_inline int decide_verdicts(struct identity *id, __u32 bodyidx, struct scratch *s,
					   struct resolved p, struct verdicts_path *v, __u32 want,
					   __u8 hook)
{
	__u32 bit = 0;
	__u8 action = pick(v->enforce, v->audit, want, PA_NPERM, &bit);
	if (action == PA_ACTION_NONE)
		return 0;
	__u16 rule = v->rule[BOUND(bit, 15)];
	count(bodyidx, rule, action, hook);
	struct event *e = event_start(id, bodyidx, rule, action, hook);
	if (e) {
		e->detail = bit;
		e->path_len = p.len;
		/* the scratch path is NUL-terminated at len; a longer one is cut */
		bpf_probe_read_kernel(e->path, EVENT_PATH, &s->path[p.off & (PATH_BUF - 1)]);
		e->path[EVENT_PATH - 1] = 0;
		bpf_ringbuf_submit(e, 0);
	}
	return verdict_ret(action);
}

/* match_path matches a resolved path and sets *state; it returns -EPERM for a path that
 * cannot be resolved or a buffer another program reused meanwhile (fail closed, counted). */
static __always_inline int match_path(__u32 bodyidx, struct profile_body *b, struct scratch *s,
				      __u64 seq, struct resolved p, __u32 *state)
{
	if (p.len < 0) {
		drop(PA_DROP_PATH);
		return -EPERM;
	}
	*state = match(s, bodyidx, b, p.off, p.len);
	if (s->seq != seq) {
		/* another program reused this CPU's buffer while we matched */
		drop(PA_DROP_PATH);
		return -EPERM;
	}
	return 0;
}

/* decide_path decides an operation that wants the permission bits in want on a resolved
 * path, counting and reporting it. A path that cannot be resolved is refused (fail
 * closed) and counted. */
static __always_inline int decide_path(struct identity *id, __u32 bodyidx, struct profile_body *b,
				       struct scratch *s, __u64 seq, struct resolved p, __u32 want,
				       __u8 hook)
{
	__u32 state = 0;
	int ret = match_path(bodyidx, b, s, seq, p, &state);
	if (ret)
		return ret;
	struct verdicts_path *v = path_verdicts(bodyidx, state);
	if (!v)
		return 0;
	return decide_verdicts(id, bodyidx, s, p, v, want, hook);
}

#endif
