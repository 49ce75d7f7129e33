/* Loopback listeners of the session itself: a connect to one stays direct, as it would inside a
 * network namespace of the session's own (redirect.bpf.c, decide). Ownership is a mark the session's
 * TCP sockets get when they are created, read back from the listener the kernel's lookup finds. */
#ifndef AGENTSH_OWN_LISTENERS_H
#define AGENTSH_OWN_LISTENERS_H

#include "session.h"

#define SOL_SOCKET 1
#define SO_REUSEPORT 15
#define PAGE_SIZE 4096

/* The session (cgroup id) that created each of its TCP sockets, on the socket itself. Sockets of
 * the host and of cgroups without the programs have no entry. Not cloned to accepted sockets:
 * only listeners are looked up. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} owners SEC(".maps");

/* Is (a, port) a loopback TCP listener created by session `cgid` (its cgroup or one below)?
 * The kernel's own lookup in the caller's namespace finds what the connect would reach, a
 * wildcard listener included; every failure (no listener, not listening, no mark, another
 * session's or the host's) answers no, and the connect is funnelled as usual. */
static __always_inline int own_listener(struct bpf_sock_addr *ctx, __u64 cgid, const __u32 a[4], __u16 port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u64 *owner = 0;
	int ours;

	if (!is_loopback(a))
		return 0;
	if (is_v4mapped(a)) {
		t.ipv4.daddr = a[3];
		t.ipv4.dport = port;
		sk = bpf_sk_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	} else {
		t.ipv6.daddr[0] = a[0];
		t.ipv6.daddr[1] = a[1];
		t.ipv6.daddr[2] = a[2];
		t.ipv6.daddr[3] = a[3];
		t.ipv6.dport = port;
		sk = bpf_sk_lookup_tcp(ctx, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return 0;
	if (sk->state == BPF_TCP_LISTEN)
		owner = bpf_sk_storage_get(&owners, sk, 0, 0);
	ours = owner && *owner == cgid;
	bpf_sk_release(sk);
	return ours;
}

/* Marks each TCP socket a session process creates with the session (see own_listener). Never
 * refuses: a socket without a mark is only ever funnelled. */
SEC("cgroup/sock_create")
int mark_owner(struct bpf_sock *sk)
{
	__u64 cgid = 0;
	__u64 *owner;

	if (sk->type != SOCK_STREAM || sk->protocol != IPPROTO_TCP)
		return PASS;
	if (!find_session(0, &cgid))
		return PASS;
	owner = bpf_sk_storage_get(&owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (owner)
		*owner = cgid;
	return PASS;
}

/* A socket joining a SO_REUSEPORT group shares its port with any socket of the same user, the
 * host's included, and the kernel picks the member per connection: it is no longer the session's
 * alone, so it loses its mark. */
SEC("cgroup/setsockopt")
int forget_shared(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (sk && ctx->level == SOL_SOCKET && ctx->optname == SO_REUSEPORT)
		bpf_sk_storage_delete(&owners, sk);
	/* Let the kernel use the caller's buffer as is, whatever its size. */
	if (ctx->optlen > PAGE_SIZE)
		ctx->optlen = 0;
	return PASS;
}

#endif
