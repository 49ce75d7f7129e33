/* The session a program runs for, found by cgroup, and the address helpers every program of
 * the backend shares (redirect.bpf.c). Addresses are 16 bytes in network order, IPv4 v4-mapped. */
#ifndef AGENTSH_SESSION_H
#define AGENTSH_SESSION_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "redirect.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_MPTCP 262

#define REFUSE 0 /* the syscall fails with EPERM */
#define PASS 1

/* How deep below a session cgroup a process may sit and still be found. */
#define MAX_DEPTH 16

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct session);
} sessions SEC(".maps");

/* A rewrite target: 16-byte address (v4-mapped for IPv4) and port, network order. */
struct endpoint {
	__u32 addr[4];
	__u16 port;
};

/* Cgroup id at ancestor level `lvl` (-1: the cgroup itself) of the socket that sent `skb`, or of
 * the current task when `skb` is 0 (the address hooks run in the caller's context; packets may
 * leave outside it, e.g. retransmissions). `skb` is a constant at every call, so each program
 * keeps only the helpers its type may call. */
static __always_inline __u64 cgroup_at(struct __sk_buff *skb, int lvl)
{
	if (skb)
		return lvl < 0 ? bpf_skb_cgroup_id(skb) : bpf_skb_ancestor_cgroup_id(skb, lvl);
	return lvl < 0 ? bpf_get_current_cgroup_id() : bpf_get_current_ancestor_cgroup_id(lvl);
}

/* The session owning the cgroup, or one of its ancestors (the deepest registered wins); on a
 * miss *cgid is the cgroup's own id. */
static __always_inline struct session *find_session(struct __sk_buff *skb, __u64 *cgid)
{
	__u64 id = cgroup_at(skb, -1);
	struct session *s = bpf_map_lookup_elem(&sessions, &id);

	*cgid = id;
	if (s)
		return s;
	for (int lvl = MAX_DEPTH; lvl > 0; lvl--) {
		id = cgroup_at(skb, lvl);
		if (!id)
			continue;
		s = bpf_map_lookup_elem(&sessions, &id);
		if (s) {
			*cgid = id;
			return s;
		}
	}
	return 0;
}

static __always_inline int is_v4mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

static __always_inline int is_loopback(const __u32 a[4])
{
	if (is_v4mapped(a))
		return (bpf_ntohl(a[3]) >> 24) == 127;
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

static __always_inline void set_mapped(struct endpoint *e, __u32 ip4, __u16 port)
{
	e->addr[0] = 0;
	e->addr[1] = 0;
	e->addr[2] = bpf_htonl(0xffff);
	e->addr[3] = ip4;
	e->port = port;
}

static __always_inline void set_v6(struct endpoint *e, const __u32 ip6[4], __u16 port)
{
	e->addr[0] = ip6[0];
	e->addr[1] = ip6[1];
	e->addr[2] = ip6[2];
	e->addr[3] = ip6[3];
	e->port = port;
}

static __always_inline int same(const struct endpoint *e, const __u32 a[4], __u16 port)
{
	return e->port == port && e->addr[0] == a[0] && e->addr[1] == a[1] && e->addr[2] == a[2] &&
	       e->addr[3] == a[3];
}

/* The gateway listener or the resolver for the family of `a`; 0 when the session has none. */
static __always_inline int gateway_for(const struct session *s, const __u32 a[4], struct endpoint *e)
{
	if (is_v4mapped(a)) {
		set_mapped(e, s->gw4, s->gw4_port);
		return 1;
	}
	if (!(s->flags & SESSION_HAS_GW6))
		return 0;
	set_v6(e, s->gw6, s->gw6_port);
	return 1;
}

static __always_inline int resolver_for(const struct session *s, const __u32 a[4], struct endpoint *e)
{
	if (is_v4mapped(a)) {
		set_mapped(e, s->dns4, s->dns4_port);
		return 1;
	}
	if (!(s->flags & SESSION_HAS_DNS6))
		return 0;
	set_v6(e, s->dns6, s->dns6_port);
	return 1;
}

/* Is (a, port) the session's gateway listener, in either family? */
static __always_inline int is_gateway(const struct session *s, const __u32 a[4], __u16 port)
{
	struct endpoint e = {};

	set_mapped(&e, s->gw4, s->gw4_port);
	if (same(&e, a, port))
		return 1;
	if (!(s->flags & SESSION_HAS_GW6))
		return 0;
	set_v6(&e, s->gw6, s->gw6_port);
	return same(&e, a, port);
}

/* Is (a, port) the session's resolver, in either family? */
static __always_inline int is_resolver(const struct session *s, const __u32 a[4], __u16 port)
{
	struct endpoint e = {};

	set_mapped(&e, s->dns4, s->dns4_port);
	if (same(&e, a, port))
		return 1;
	if (!(s->flags & SESSION_HAS_DNS6))
		return 0;
	set_v6(&e, s->dns6, s->dns6_port);
	return same(&e, a, port);
}

static __always_inline int same_ip(const __u32 a[4], const __u32 b[4])
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

#endif
