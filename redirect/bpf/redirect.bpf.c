// SPDX-License-Identifier: GPL-2.0
/* The eBPF redirect backend's kernel half (DESIGN.md §2, backend 2).
 *
 * For sockets of a session cgroup:
 *  - connect4/6 refuse denied TCP destinations (EPERM) and rewrite every other TCP destination to
 *    the session's gateway listener, recording the original in the socket's own storage (with
 *    its cookie); UDP connects to port 53 go to the session resolver, any other UDP is refused;
 *  - sockops copies that record under the socket's local address once the kernel picked it, so
 *    the gateway can name the peer it accepts;
 *  - sendmsg4/6 send UDP port 53 to the session resolver (any other UDP destination is refused);
 *    recvmsg4/6 and getpeername4/6 put the original address back where the agent looks.
 * The gateway's own listener (TCP) and the session resolver (UDP) are never rewritten (no loops),
 * and neither is a TCP connect to a loopback listener the session itself created (a test suite's
 * server, a dev server): sock_create marks the session's stream sockets with its cgroup id, and
 * connect4/6 look the listener up and compare (own_listeners.h). A socket that asks to share its
 * port (SO_REUSEPORT) loses its mark, since the kernel may hand its connections to another
 * member of the group.
 *  - cgroup_skb/egress drops every packet of a session socket for an address that is neither
 *    loopback nor the session's gateway or resolver: whatever path a socket took (an accepted
 *    inbound connection, a raw socket), nothing of the session leaves the host but through the
 *    funnel.
 * Every session lookup that fails refuses: a socket in an attached cgroup without a session is an
 * inconsistency, and the backend fails closed.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "session.h"
#include "own_listeners.h"

#define DNS_PORT 53
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct deny_key);
	__type(value, struct deny_rule);
} denies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} refusals SEC(".maps");

/* Refusals that did not fit in the ring buffer: counted, never silently gone. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} refusals_lost SEC(".maps");

/* The original destination of each redirected socket, stored on the socket itself: it lives
 * exactly as long as the socket, so heavy churn never evicts a live record. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct orig_dst);
} by_socket SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct local_key);
	__type(value, struct orig_dst);
} by_local SEC(".maps");

static __always_inline struct deny_rule *denied(__u32 gen, __u64 cgid, const __u32 a[4], __u16 port)
{
	struct deny_key k = {};
	struct deny_rule *r;

	k.prefixlen = DENY_FIXED_BITS + 128;
	k.gen = gen;
	k.cgid = cgid;
	k.port = port;
	k.addr[0] = a[0];
	k.addr[1] = a[1];
	k.addr[2] = a[2];
	k.addr[3] = a[3];
	r = bpf_map_lookup_elem(&denies, &k);
	if (r)
		return r;
	k.port = 0; /* rules for any port */
	return bpf_map_lookup_elem(&denies, &k);
}

static __always_inline void report(__u64 cgid, __u64 pid_tgid, const __u32 a[4], __u16 port, __u16 family,
				   __u16 proto, __u16 reason, const struct deny_rule *rule)
{
	struct refusal *e = bpf_ringbuf_reserve(&refusals, sizeof(*e), 0);

	if (!e) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&refusals_lost, &zero);

		if (lost)
			__sync_fetch_and_add(lost, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->cgid = cgid;
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = (__u32)pid_tgid;
	e->tgid = pid_tgid >> 32;
	e->addr[0] = a[0];
	e->addr[1] = a[1];
	e->addr[2] = a[2];
	e->addr[3] = a[3];
	e->port = port;
	e->family = family;
	e->proto = proto;
	e->reason = reason;
	if (rule)
		e->rule = *rule;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int record(struct bpf_sock_addr *ctx, __u64 cgid, const __u32 a[4], __u16 port,
				  __u16 family, __u16 proto, const struct endpoint *to)
{
	struct bpf_sock *sk = ctx->sk;
	struct orig_dst *o;
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!sk)
		return 0;
	o = bpf_sk_storage_get(&by_socket, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o)
		return 0;

	o->addr[0] = a[0];
	o->addr[1] = a[1];
	o->addr[2] = a[2];
	o->addr[3] = a[3];
	o->gw[0] = to->addr[0];
	o->gw[1] = to->addr[1];
	o->gw[2] = to->addr[2];
	o->gw[3] = to->addr[3];
	o->port = port;
	o->gw_port = to->port;
	o->family = family;
	o->proto = proto;
	o->pid = (__u32)pid_tgid;
	o->tgid = pid_tgid >> 32;
	o->cookie = bpf_get_socket_cookie(ctx);
	o->cgid = cgid;
	o->ts_ns = bpf_ktime_get_ns();
	return 1;
}

/* The verdict for one destination: 0 to pass (with *rewrite set, `to` is the new destination),
 * else the REFUSED_* reason; `*rule` is the deny rule that matched, if one did. */
static __always_inline int decide(struct bpf_sock_addr *ctx, struct session *s, __u64 cgid, const __u32 a[4],
				  __u16 port, __u16 family, struct endpoint *to, int *rewrite,
				  struct deny_rule **rule)
{
	__u32 type = ctx->type;
	__u32 proto = ctx->protocol;

	/* Only the gateway's own listener is reachable as is over TCP, and only the resolver over
	 * UDP: anything else sharing one of those addresses on the other protocol is not the
	 * session's and stays behind the funnel. */
	if (type == SOCK_STREAM && (proto == IPPROTO_TCP || proto == IPPROTO_MPTCP)) {
		if (is_gateway(s, a, port))
			return 0;
		*rule = denied(s->deny_gen, cgid, a, port);
		if (*rule)
			return REFUSED_DENY_RULE;
		/* The session's own loopback servers stay local, as in a namespace of its own. */
		if (own_listener(ctx, cgid, a, port))
			return 0;
		if (!gateway_for(s, a, to))
			return REFUSED_NO_GATEWAY;
		if (!record(ctx, cgid, a, port, family, IPPROTO_TCP, to))
			return REFUSED_RECORD;
		*rewrite = 1;
		return 0;
	}
	if (type == SOCK_DGRAM && proto == IPPROTO_UDP) {
		if (is_resolver(s, a, port))
			return 0;
		if (port != bpf_htons(DNS_PORT))
			return REFUSED_UDP;
		/* DNS always goes to the session resolver, whatever address the agent was given:
		 * the resolver is where DNS policy lives. */
		if (!resolver_for(s, a, to))
			return REFUSED_NO_RESOLVER;
		if (!record(ctx, cgid, a, port, family, IPPROTO_UDP, to))
			return REFUSED_RECORD;
		*rewrite = 1;
		return 0;
	}
	/* Raw, ICMP and other sockets cannot be funnelled. */
	return REFUSED_PROTOCOL;
}

/* PASS or REFUSE for one destination; every refusal is reported (`connecting`: from a connect
 * hook, where a refused UDP socket has sent nothing yet). */
static __always_inline int steer(struct bpf_sock_addr *ctx, const __u32 a[4], __u16 port,
				 __u16 family, struct endpoint *to, int *rewrite, int connecting)
{
	__u64 cgid = 0;
	struct session *s = find_session(0, &cgid);
	struct deny_rule *rule = 0;
	__u32 proto = ctx->protocol;
	int reason;

	*rewrite = 0;
	if (!s) {
		reason = REFUSED_NO_SESSION;
	} else {
		reason = decide(ctx, s, cgid, a, port, family, to, rewrite, &rule);
	}
	if (!reason)
		return PASS;
	if (reason == REFUSED_UDP && connecting)
		reason = REFUSED_UDP_CONNECT;
	report(cgid, bpf_get_current_pid_tgid(), a, port, family, (__u16)proto, (__u16)reason, rule);
	return REFUSE;
}

static __always_inline int steer4(struct bpf_sock_addr *ctx, int connecting)
{
	__u32 a[4] = {0, 0, bpf_htonl(0xffff), ctx->user_ip4};
	__u16 port = (__u16)ctx->user_port;
	struct endpoint to = {};
	int rewrite;
	int verdict = steer(ctx, a, port, AF_INET, &to, &rewrite, connecting);

	if (verdict == PASS && rewrite) {
		ctx->user_ip4 = to.addr[3];
		ctx->user_port = to.port;
	}
	return verdict;
}

static __always_inline int steer6(struct bpf_sock_addr *ctx, int connecting)
{
	__u32 a[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	__u16 port = (__u16)ctx->user_port;
	struct endpoint to = {};
	int rewrite;
	int verdict = steer(ctx, a, port, AF_INET6, &to, &rewrite, connecting);

	if (verdict == PASS && rewrite) {
		ctx->user_ip6[0] = to.addr[0];
		ctx->user_ip6[1] = to.addr[1];
		ctx->user_ip6[2] = to.addr[2];
		ctx->user_ip6[3] = to.addr[3];
		ctx->user_port = to.port;
	}
	return verdict;
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	return steer4(ctx, 1);
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	return steer6(ctx, 1);
}

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	return steer4(ctx, 0);
}

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx)
{
	return steer6(ctx, 0);
}

/* The record for this socket if (a, port) is where it was redirected to. */
static __always_inline struct orig_dst *redirected_to(struct bpf_sock_addr *ctx, const __u32 a[4], __u16 port)
{
	struct bpf_sock *sk = ctx->sk;
	struct orig_dst *o;

	if (!sk)
		return 0;
	o = bpf_sk_storage_get(&by_socket, sk, 0, 0);

	if (!o || o->gw_port != port || o->gw[0] != a[0] || o->gw[1] != a[1] || o->gw[2] != a[2] ||
	    o->gw[3] != a[3])
		return 0;
	return o;
}

/* A v4-mapped destination on an AF_INET6 socket reaches the IPv4 hooks (the kernel hands such
 * datagrams to udp_sendmsg), so a record's family says nothing about which hook restores it: the
 * 16-byte form does. */
static __always_inline void restore4(struct bpf_sock_addr *ctx)
{
	__u32 a[4] = {0, 0, bpf_htonl(0xffff), ctx->user_ip4};
	struct orig_dst *o = redirected_to(ctx, a, (__u16)ctx->user_port);

	if (o && is_v4mapped(o->addr)) {
		ctx->user_ip4 = o->addr[3];
		ctx->user_port = o->port;
	}
}

static __always_inline void restore6(struct bpf_sock_addr *ctx)
{
	__u32 a[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	struct orig_dst *o = redirected_to(ctx, a, (__u16)ctx->user_port);

	if (o) {
		ctx->user_ip6[0] = o->addr[0];
		ctx->user_ip6[1] = o->addr[1];
		ctx->user_ip6[2] = o->addr[2];
		ctx->user_ip6[3] = o->addr[3];
		ctx->user_port = o->port;
	}
}

/* Replies from the resolver appear to come from the address the agent asked. */
SEC("cgroup/recvmsg4")
int recvmsg4(struct bpf_sock_addr *ctx)
{
	restore4(ctx);
	return PASS;
}

SEC("cgroup/recvmsg6")
int recvmsg6(struct bpf_sock_addr *ctx)
{
	restore6(ctx);
	return PASS;
}

/* getpeername names the original destination, not the gateway. */
SEC("cgroup/getpeername4")
int getpeername4(struct bpf_sock_addr *ctx)
{
	restore4(ctx);
	return PASS;
}

SEC("cgroup/getpeername6")
int getpeername6(struct bpf_sock_addr *ctx)
{
	restore6(ctx);
	return PASS;
}

/* Once the kernel has picked the local address of a redirected TCP socket, file its record under
 * that address; any other connect from the cgroup clears a stale record for its address, so a
 * direct connection can never inherit an earlier socket's destination. */
SEC("sockops")
int record_local(struct bpf_sock_ops *skops)
{
	struct local_key k = {};
	struct bpf_sock *sk;
	struct orig_dst *o = 0;
	/* Every ctx field is read once, up front: the verifier rejects the pointer arithmetic the
	 * compiler would otherwise share between the two families' branches. */
	__u32 op = skops->op;
	__u32 family = skops->family;
	__u32 ip4 = skops->local_ip4;
	__u32 ip6[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2],
			skops->local_ip6[3]};
	__u32 port = skops->local_port;

	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	if (family == AF_INET) {
		k.addr[2] = bpf_htonl(0xffff);
		k.addr[3] = ip4;
	} else if (family == AF_INET6) {
		k.addr[0] = ip6[0];
		k.addr[1] = ip6[1];
		k.addr[2] = ip6[2];
		k.addr[3] = ip6[3];
	} else {
		return 1;
	}
	k.port = bpf_htons((__u16)port);
	sk = skops->sk;
	if (sk)
		o = bpf_sk_storage_get(&by_socket, sk, 0, 0);
	if (o && o->proto == IPPROTO_TCP) {
		struct orig_dst v = *o;

		bpf_map_update_elem(&by_local, &k, &v, BPF_ANY);
	} else {
		bpf_map_delete_elem(&by_local, &k);
	}
	return 1;
}

/* Loopback, or the address of the session's own gateway or resolver. */
static __always_inline int may_leave_for(const struct session *s, const __u32 a[4])
{
	struct endpoint e = {};

	if (is_loopback(a))
		return 1;
	set_mapped(&e, s->gw4, 0);
	if (same_ip(e.addr, a))
		return 1;
	set_mapped(&e, s->dns4, 0);
	if (same_ip(e.addr, a))
		return 1;
	if ((s->flags & SESSION_HAS_GW6) && same_ip(s->gw6, a))
		return 1;
	return (s->flags & SESSION_HAS_DNS6) && same_ip(s->dns6, a);
}

SEC("cgroup_skb/egress")
int egress(struct __sk_buff *skb)
{
	__u64 cgid = 0;
	struct session *s = find_session(skb, &cgid);
	__u32 a[4] = {0, 0, bpf_htonl(0xffff), 0};
	__u32 proto = skb->protocol;
	__u16 family;

	if (proto == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, 16, &a[3], 4))
			return REFUSE;
		family = AF_INET;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 24, a, 16))
			return REFUSE;
		family = AF_INET6;
	} else {
		return REFUSE;
	}
	if (s && may_leave_for(s, a))
		return PASS;
	report(cgid, 0, a, 0, family, 0, s ? REFUSED_EGRESS : REFUSED_NO_SESSION, 0);
	return REFUSE;
}
