/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Sockets: creation by (family, type, protocol), looked up as the eight combinations of
 * exact value and "any"; egress by destination address (an LPM trie per family, keyed by
 * body and prefix) then port range and protocol within the matched prefix. The compiler
 * splits overlapping prefixes, so the longest match alone carries every rule.
 */
#ifndef PODARMOR_NET_H
#define PODARMOR_NET_H

#define AF_UNSPEC 0
#define AF_INET 2
#define AF_INET6 10
#define SOCK_TYPE_MASK 0xf
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_SCTP 132
#define IPPROTO_ICMP 1
#define IPPROTO_ICMPV6 58

static __always_inline struct verdict *socket_lookup(__u32 body, __u16 f, __u16 t, __u16 p)
{
	struct socket_key k = {.body = body, .family = f, .type = t, .protocol = p};
	return bpf_map_lookup_elem(&socket_rules, &k);
}

/* socket_verdict returns the most specific rule for (family, type, protocol): exact
 * fields win over "any", family first. shapes has bit i when some key has shape i (which
 * fields are PA_ANY: 4 family, 2 type, 1 protocol): only those are looked up. */
static __always_inline struct verdict *socket_verdict(__u32 body, __u32 shapes, __u16 f, __u16 t,
						      __u16 p)
{
	struct verdict *v;
	if ((shapes & 0x01) && (v = socket_lookup(body, f, t, p)))
		return v;
	if ((shapes & 0x02) && (v = socket_lookup(body, f, t, PA_ANY)))
		return v;
	if ((shapes & 0x04) && (v = socket_lookup(body, f, PA_ANY, p)))
		return v;
	if ((shapes & 0x08) && (v = socket_lookup(body, f, PA_ANY, PA_ANY)))
		return v;
	if ((shapes & 0x10) && (v = socket_lookup(body, PA_ANY, t, p)))
		return v;
	if ((shapes & 0x20) && (v = socket_lookup(body, PA_ANY, t, PA_ANY)))
		return v;
	if ((shapes & 0x40) && (v = socket_lookup(body, PA_ANY, PA_ANY, p)))
		return v;
	if (shapes & 0x80)
		return socket_lookup(body, PA_ANY, PA_ANY, PA_ANY);
	return 0;
}

/* default_protocol is what the kernel picks for protocol 0 on inet sockets. */
static __always_inline __u16 default_protocol(int family, int type, int protocol)
{
	if (protocol || (family != AF_INET && family != AF_INET6))
		return protocol;
	if (type == SOCK_STREAM)
		return IPPROTO_TCP;
	if (type == SOCK_DGRAM)
		return IPPROTO_UDP;
	return protocol;
}

SEC("lsm/socket_create")
int BPF_PROG(socket_create, int family, int type, int protocol, int kern)
{
	if (kern)
		return 0;
	struct identity *id = current_identity();
	if (!id)
		return 0;
	__u32 bi;
	struct profile_body *b = body_of(id->profile, &bi);
	if (!b || !b->has_socket)
		return 0;
	type &= SOCK_TYPE_MASK;
	__u16 proto = default_protocol(family, type, protocol);
	__u32 shapes = b->has_socket >> 1;
	if (!shapes)
		shapes = 0xff; /* a body from an enforcer that did not record shapes */
	struct verdict *v = socket_verdict(bi, shapes, family, type, proto);
	if (!v)
		return 0;
	return decide_simple(id, bi, v->rule, v->action, PA_HOOK_SOCKET_CREATE, family,
			     (type << 16) | proto);
}

static __always_inline __u32 proto_index(__u16 p)
{
	switch (p) {
	case IPPROTO_TCP:
		return 0;
	case IPPROTO_UDP:
		return 1;
	case IPPROTO_SCTP:
		return 2;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		return 3;
	}
	return 4; /* no rule names it */
}

/* egress decides a connection or datagram from sock to the address at addr (kernel
 * memory). */
static __always_inline int egress(struct socket *sock, struct sockaddr *addr, __u8 hook)
{
	if (!addr)
		return 0;
	struct identity *id = current_identity();
	if (!id)
		return 0;
	__u32 bi;
	struct profile_body *b = body_of(id->profile, &bi);
	if (!b || !b->has_egress)
		return 0;

	/* One read covers either family: the address is the kernel's copy, in a buffer of
	 * struct sockaddr_storage (a shorter one at the end of a page: read what IPv4
	 * needs). */
	struct sockaddr_in6 sa = {};
	if (bpf_probe_read_kernel(&sa, sizeof(sa), addr) &&
	    bpf_probe_read_kernel(&sa, sizeof(struct sockaddr_in), addr))
		return 0;
	__u16 family = sa.sin6_family;
	__u16 port = 0;
	__u8 a[16] = {};
	int v4 = 0;
	if (family == AF_INET) {
		struct sockaddr_in *in = (void *)&sa;
		port = bpf_ntohs(in->sin_port);
		__builtin_memcpy(a, &in->sin_addr, 4);
		v4 = 1;
	} else if (family == AF_INET6) {
		port = bpf_ntohs(sa.sin6_port);
		__builtin_memcpy(a, &sa.sin6_addr, 16);
		/* ::ffff:a.b.c.d reaches the IPv4 address a.b.c.d */
		if (!a[0] && !a[1] && !a[2] && !a[3] && !a[4] && !a[5] && !a[6] && !a[7] &&
		    !a[8] && !a[9] && a[10] == 0xff && a[11] == 0xff) {
			a[0] = a[12];
			a[1] = a[13];
			a[2] = a[14];
			a[3] = a[15];
			v4 = 1;
		}
	} else {
		return 0;
	}

	struct egress_ports *ports;
	if (v4) {
		struct egress4_key k = {.prefixlen = 64, .body = bi};
		__builtin_memcpy(k.addr, a, 4);
		ports = bpf_map_lookup_elem(&egress4, &k);
	} else {
		struct egress6_key k = {.prefixlen = 160, .body = bi};
		__builtin_memcpy(k.addr, a, 16);
		ports = bpf_map_lookup_elem(&egress6, &k);
	}
	if (!ports)
		return 0;

	struct sock *sk = sock->sk; /* the hook's argument: plain loads */
	if (!sk)
		return 0;
	__u16 proto = sk->sk_protocol;
	__u32 pi = proto_index(proto);
	if (pi > 3)
		return 0;
	__u32 n = ports->n;
	for (__u32 i = 0; i < PA_EGRESS_RANGES; i++) {
		if (i >= n)
			break;
		struct egress_range *r = &ports->r[i];
		if (port < r->first || port > r->last)
			continue;
		__u8 action = r->action[BOUND(pi, 3)];
		if (action == PA_ACTION_NONE)
			return 0;
		count(bi, r->rule[BOUND(pi, 3)], action, hook);
		struct event *e = event_start(id, bi, r->rule[BOUND(pi, 3)], action, hook);
		if (e) {
			e->family = v4 ? AF_INET : AF_INET6;
			e->port = port;
			e->detail = proto;
			__builtin_memcpy(e->addr, a, 16);
			bpf_ringbuf_submit(e, 0);
		}
		return verdict_ret(action);
	}
	return 0;
}

SEC("lsm/socket_connect")
int BPF_PROG(socket_connect, struct socket *sock, struct sockaddr *address, int addrlen)
{
	return egress(sock, address, PA_HOOK_CONNECT);
}

/* sendto/sendmsg with an address reach a peer without connect (UDP, TCP fast open). */
SEC("lsm/socket_sendmsg")
int BPF_PROG(socket_sendmsg, struct socket *sock, struct msghdr *msg, int size)
{
	struct sockaddr *addr = BPF_CORE_READ(msg, msg_name);
	return egress(sock, addr, PA_HOOK_SENDMSG);
}

/* Connecting to a unix socket bound to a path is reaching the file: the peer's bound path
 * (resolved from the socket, not from the address the caller passed) is checked for
 * write, as AppArmor does. Abstract and unbound sockets have no path. */
static __always_inline int unix_peer(struct sock *other)
{
	struct identity *id = current_identity();
	if (!id)
		return 0;
	__u32 bi;
	struct profile_body *b = body_of(id->profile, &bi);
	if (!b || !b->dfa_states)
		return 0;
	struct unix_sock *u = (void *)other;
	struct dentry *d = BPF_CORE_READ(u, path.dentry);
	struct vfsmount *m = BPF_CORE_READ(u, path.mnt);
	if (!d || !m)
		return 0;
	__u64 seq;
	struct scratch *s = take_scratch(&seq);
	if (!s)
		return -EPERM;
	return decide_path(id, bi, b, s, seq, walk_path_raw(s, m, d), 1U << PA_WRITE,
			   PA_HOOK_CONNECT);
}

SEC("lsm/unix_stream_connect")
int BPF_PROG(unix_stream_connect, struct sock *sock, struct sock *other, struct sock *newsk)
{
	/* the rules first, so that a rule's refusal is counted as the rule's */
	int ret = unix_peer(other);
	if (ret)
		return ret;
	return enforcer_listener(other);
}

SEC("lsm/unix_may_send")
int BPF_PROG(unix_may_send, struct socket *sock, struct socket *other)
{
	return unix_peer(BPF_CORE_READ(other, sk));
}

#endif
