/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Mount-table changes: mount(2) (sb_mount, which sees new mounts, binds, moves, remounts
 * and propagation changes), the new mount API's move_mount, umount and pivot_root.
 */
#ifndef PODARMOR_MOUNT_H
#define PODARMOR_MOUNT_H

#define MS_RDONLY 1
#define MS_NOSUID 2
#define MS_NODEV 4
#define MS_NOEXEC 8
#define MS_REMOUNT 32
#define MS_BIND 4096
#define MS_MOVE 8192
#define MS_REC 16384
#define MS_UNBINDABLE (1 << 17)
#define MS_PRIVATE (1 << 18)
#define MS_SLAVE (1 << 19)
#define MS_SHARED (1 << 20)

/* mflags returns the pa_mount_flag bits of mount(2) flags. */
static __always_inline __u32 mflags(unsigned long f)
{
	__u32 m = 0;
	if (f & MS_RDONLY)
		m |= 1U << PA_MF_RO;
	if (f & MS_NOSUID)
		m |= 1U << PA_MF_NOSUID;
	if (f & MS_NODEV)
		m |= 1U << PA_MF_NODEV;
	if (f & MS_NOEXEC)
		m |= 1U << PA_MF_NOEXEC;
	if (f & MS_REMOUNT)
		m |= 1U << PA_MF_REMOUNT;
	if (f & MS_BIND)
		m |= f & MS_REC ? 1U << PA_MF_RBIND : 1U << PA_MF_BIND;
	if (f & MS_MOVE)
		m |= 1U << PA_MF_MOVE;
	if (f & MS_SHARED)
		m |= 1U << PA_MF_SHARED;
	if (f & MS_PRIVATE)
		m |= 1U << PA_MF_PRIVATE;
	if (f & MS_SLAVE)
		m |= 1U << PA_MF_SLAVE;
	if (f & MS_UNBINDABLE)
		m |= 1U << PA_MF_UNBINDABLE;
	return m;
}

/* The candidate set of a mount being decided, built in a per-CPU slot (too big for the
 * stack). */
struct mount_scratch {
	struct mask m;
	struct mask t;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mount_scratch);
} mount_scratch SEC(".maps");

static __always_inline void mask_and(struct mask *dst, const struct mask *a)
{
	for (int i = 0; i < PA_MOUNT_WORDS; i++)
		dst->w[i] &= a->w[i];
}

static __always_inline void mask_or(struct mask *dst, const struct mask *a)
{
	for (int i = 0; i < PA_MOUNT_WORDS; i++)
		dst->w[i] |= a->w[i];
}

/* path_mask narrows c->m to the rules whose sources (source set) or targets allow the
 * path of len bytes in the scratch buffer. */
static __always_inline int path_mask(struct scratch *s, struct mount_scratch *c,
				     struct mount_body *mb, __u32 bi, struct profile_body *b,
				     struct resolved p, int source)
{
	__builtin_memcpy(&c->t, source ? &mb->no_source : &mb->no_target, sizeof(c->t));
	if (p.len >= 0 && b->dfa_states) {
		__u32 state = match(s, bi, b, p.off, p.len);
		if (state) {
			struct dfa_accept_key k = {.body = bi, .state = state};
			struct mount_paths *mp = bpf_map_lookup_elem(&dfa_mount, &k);
			if (mp)
				mask_or(&c->t, source ? &mp->source : &mp->target);
		}
	} else if (p.len < 0) {
		/* unknown path: every rule that names paths may match (fail closed) */
		for (int i = 0; i < PA_MOUNT_WORDS; i++)
			c->t.w[i] = ~0ULL;
	}
	mask_and(&c->m, &c->t);
	return 0;
}

struct first_bit {
	struct mask *m;
	__u32 bit;
	__u32 found;
};

/* mount_decide picks the first rule left in c->m and decides it. */
static __always_inline int mount_decide(struct identity *id, __u32 bi, struct mount_body *mb,
					struct mount_scratch *c, __u32 op, __u32 flags)
{
	__u32 bit = 0, found = 0;
	for (int i = 0; i < PA_MOUNT_WORDS; i++) {
		__u64 w = c->m.w[i];
		if (!w)
			continue;
		for (int j = 0; j < 64; j++) {
			if (w & (1ULL << j)) {
				bit = i * 64 + j;
				found = 1;
				break;
			}
		}
		break;
	}
	if (!found)
		return 0;
	bit = BOUND(bit, PA_MOUNT_RULES - 1);
	return decide_simple(id, bi, mb->rule[bit], mb->action[bit], PA_HOOK_MOUNT, op, flags);
}

/* mount_fs narrows c->m to the rules that allow fs type t (a kernel string), or only the
 * rules without fs types when t is 0. */
static __always_inline void mount_fs(struct mount_scratch *c, struct mount_body *mb, __u32 bi,
				     const char *t)
{
	__builtin_memcpy(&c->t, &mb->no_fstype, sizeof(c->t));
	if (t) {
		struct mount_fstype_key k = {.body = bi};
		if (bpf_probe_read_kernel_str(k.fstype, sizeof(k.fstype), t) > 0) {
			struct mask *fm = bpf_map_lookup_elem(&mount_fstype, &k);
			if (fm)
				mask_or(&c->t, fm);
		}
	}
	mask_and(&c->m, &c->t);
}

/* mount_flags narrows c->m to rules without flags or naming one of the flags in f. */
static __always_inline void mount_flags(struct mount_scratch *c, struct mount_body *mb, __u32 f)
{
	__builtin_memcpy(&c->t, &mb->no_flags, sizeof(c->t));
	for (int i = 0; i < PA_NMOUNTFLAG; i++)
		if (f & (1U << i))
			mask_or(&c->t, &mb->flag[i]);
	mask_and(&c->m, &c->t);
}

struct mount_ctx {
	struct identity *id;
	__u32 bi;
	struct profile_body *b;
	struct mount_body *mb;
	struct mount_scratch *c;
};

/* mount_start finds the rules of the current task for mount operation op. */
static __always_inline int mount_start(struct mount_ctx *x, __u32 op)
{
	x->id = current_identity();
	if (!x->id)
		return 0;
	x->b = body_of(x->id->profile, &x->bi);
	if (!x->b || !(x->b->mount_ops & (1U << op)))
		return 0;
	x->mb = bpf_map_lookup_elem(&mount_bodies, &x->bi);
	x->c = bpf_map_lookup_elem(&mount_scratch, &zero);
	if (!x->mb || !x->c)
		return 0;
	__builtin_memcpy(&x->c->m, &x->mb->op[op], sizeof(x->c->m));
	return 1;
}

SEC("lsm.s/sb_mount")
int BPF_PROG(sb_mount, const char *dev_name, const struct path *path, const char *type,
	     unsigned long flags, void *data)
{
	struct mount_ctx x;
	if (!mount_start(&x, PA_MOUNT_MOUNT))
		return 0;
	__u32 f = mflags(flags);
	int newfs = !(flags & (MS_REMOUNT | MS_BIND | MS_MOVE | MS_SHARED | MS_PRIVATE |
			       MS_SLAVE | MS_UNBINDABLE));
	mount_fs(x.c, x.mb, x.bi, newfs ? type : 0);
	mount_flags(x.c, x.mb, f);

	__u64 seq;
	struct scratch *s = take_scratch(&seq);
	if (!s)
		return -EPERM;
	/* The source as given: a device node path or, for a bind, the directory. */
	struct resolved src = {.off = 0, .len = -1};
	if (dev_name && (newfs || (flags & MS_BIND))) {
		long n = bpf_probe_read_kernel_str(s->path, PATH_BUF, dev_name);
		src.len = n > 1 ? n - 1 : -1;
	}
	if (src.len < 0) {
		__builtin_memcpy(&x.c->t, &x.mb->no_source, sizeof(x.c->t));
		mask_and(&x.c->m, &x.c->t);
	} else {
		path_mask(s, x.c, x.mb, x.bi, x.b, src, 1);
	}
	path_mask(s, x.c, x.mb, x.bi, x.b, resolve(s, path), 0);
	if (s->seq != seq)
		return -EPERM;
	return mount_decide(x.id, x.bi, x.mb, x.c, PA_MOUNT_MOUNT, f);
}

SEC("lsm/move_mount")
int BPF_PROG(move_mount, const struct path *from_path, const struct path *to_path)
{
	struct mount_ctx x;
	if (!mount_start(&x, PA_MOUNT_MOUNT))
		return 0;
	/* The new mount API: the source is a mount made by fsmount (or an existing one);
	 * its superblock names the fs type and, for a block device, the device. */
	struct super_block *sb = BPF_CORE_READ(from_path, mnt, mnt_sb);
	mount_fs(x.c, x.mb, x.bi, BPF_CORE_READ(sb, s_type, name));
	mount_flags(x.c, x.mb, 1U << PA_MF_MOVE);
	__u64 seq;
	struct scratch *s = take_scratch(&seq);
	if (!s)
		return -EPERM;
	struct resolved src = {.off = 0, .len = -1};
	if (BPF_CORE_READ(sb, s_bdev)) {
		s->path[0] = '/';
		s->path[1] = 'd';
		s->path[2] = 'e';
		s->path[3] = 'v';
		s->path[4] = '/';
		long m = bpf_probe_read_kernel_str(&s->path[5], 32, &sb->s_id);
		src.len = m > 1 ? 5 + m - 1 : -1;
	}
	if (src.len < 0) {
		__builtin_memcpy(&x.c->t, &x.mb->no_source, sizeof(x.c->t));
		mask_and(&x.c->m, &x.c->t);
	} else {
		path_mask(s, x.c, x.mb, x.bi, x.b, src, 1);
	}
	path_mask(s, x.c, x.mb, x.bi, x.b, walk_struct_path(s, to_path, 0), 0);
	if (s->seq != seq)
		return -EPERM;
	return mount_decide(x.id, x.bi, x.mb, x.c, PA_MOUNT_MOUNT, 1U << PA_MF_MOVE);
}

/* sb_remount is reached by mount(2)'s remounts (which sb_mount decided already, with
 * their target) and by the new mount API's reconfigure. It sees the superblock only: rules
 * naming sources or targets do not apply here. */
SEC("lsm/sb_remount")
int BPF_PROG(sb_remount, struct super_block *sb, void *mnt_opts)
{
	struct mount_ctx x;
	if (!mount_start(&x, PA_MOUNT_MOUNT))
		return 0;
	mount_fs(x.c, x.mb, x.bi, BPF_CORE_READ(sb, s_type, name));
	mount_flags(x.c, x.mb, 1U << PA_MF_REMOUNT);
	__builtin_memcpy(&x.c->t, &x.mb->no_source, sizeof(x.c->t));
	mask_and(&x.c->m, &x.c->t);
	__builtin_memcpy(&x.c->t, &x.mb->no_target, sizeof(x.c->t));
	mask_and(&x.c->m, &x.c->t);
	return mount_decide(x.id, x.bi, x.mb, x.c, PA_MOUNT_MOUNT, 1U << PA_MF_REMOUNT);
}

SEC("lsm/sb_umount")
int BPF_PROG(sb_umount, struct vfsmount *mnt, int flags)
{
	struct mount_ctx x;
	if (!mount_start(&x, PA_MOUNT_UMOUNT))
		return 0;
	mount_fs(x.c, x.mb, x.bi, BPF_CORE_READ(mnt, mnt_sb, s_type, name));
	mount_flags(x.c, x.mb, 0);
	/* The hook gets the mount, not its mount point's path: rules naming targets or
	 * sources count as matching (fail closed). */
	return mount_decide(x.id, x.bi, x.mb, x.c, PA_MOUNT_UMOUNT, flags);
}

SEC("lsm/sb_pivotroot")
int BPF_PROG(sb_pivotroot, const struct path *old_path, const struct path *new_path)
{
	struct mount_ctx x;
	if (!mount_start(&x, PA_MOUNT_PIVOTROOT))
		return 0;
	mount_fs(x.c, x.mb, x.bi, 0);
	mount_flags(x.c, x.mb, 0);
	__u64 seq;
	struct scratch *s = take_scratch(&seq);
	if (!s)
		return -EPERM;
	path_mask(s, x.c, x.mb, x.bi, x.b, walk_struct_path(s, new_path, 0), 0);
	if (s->seq != seq)
		return -EPERM;
	return mount_decide(x.id, x.bi, x.mb, x.c, PA_MOUNT_PIVOTROOT, 0);
}

#endif
