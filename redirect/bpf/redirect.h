/* Layouts shared by the BPF programs and userspace (redirect/src/ebpf/maps.rs mirrors them
 * field for field; a size check on both sides catches drift).
 *
 * Addresses are kept as 16 bytes in network order, IPv4 as v4-mapped IPv6 (::ffff:a.b.c.d), so
 * one deny trie and one local-address table serve both families and a v4-mapped connect on an
 * AF_INET6 socket meets the IPv4 rules. Ports are in network order.
 */
#ifndef AGENTSH_REDIRECT_H
#define AGENTSH_REDIRECT_H

#include <linux/types.h>

/* session.flags */
#define SESSION_HAS_GW6 1u
#define SESSION_HAS_DNS6 2u

/* What userspace says about one session cgroup. Replaced whole (never edited in place), so a
 * program sees either the old value or the new one. */
struct session {
	__u32 gw4;      /* gateway listener, IPv4 */
	__u32 dns4;     /* session resolver, IPv4 */
	__u32 gw6[4];   /* gateway listener, IPv6 (valid with SESSION_HAS_GW6) */
	__u32 dns6[4];  /* session resolver, IPv6 (valid with SESSION_HAS_DNS6) */
	__u16 gw4_port;
	__u16 dns4_port;
	__u16 gw6_port;
	__u16 dns6_port;
	__u32 deny_gen; /* generation of the deny rules in force */
	__u32 flags;
};

/* Deny trie key: the exact (generation, cgroup, port) prefix, then the address bits.
 * prefixlen = DENY_FIXED_BITS + address prefix (IPv4 rules: 96 + their prefix). port 0 = any. */
struct deny_key {
	__u32 prefixlen;
	__u32 gen;
	__u64 cgid;
	__u16 port;
	__u16 pad;
	__u32 addr[4];
} __attribute__((packed));
#define DENY_FIXED_BITS 128

/* Deny trie value: the rule itself, so a refusal can name it. */
struct deny_rule {
	__u32 addr[4];  /* network, 16-byte form */
	__u16 port;     /* network order, 0 = any */
	__u8 prefix;    /* in the rule's own family */
	__u8 v4;        /* 1 for an IPv4 rule */
	__u32 index;    /* position in the list userspace installed */
};

/* Why a program refused (struct refusal.reason). */
#define REFUSED_DENY_RULE 1    /* a deny rule matched (rule is set) */
#define REFUSED_NO_GATEWAY 2   /* IPv6 TCP, and the session has no IPv6 gateway */
#define REFUSED_NO_RESOLVER 3  /* IPv6 DNS, and the session has no IPv6 resolver */
#define REFUSED_UDP 4          /* UDP other than DNS */
#define REFUSED_PROTOCOL 5     /* neither TCP nor UDP (raw, ICMP, ...) */
#define REFUSED_NO_SESSION 6   /* attached cgroup without a session entry */
#define REFUSED_RECORD 7       /* the original destination could not be recorded */
#define REFUSED_EGRESS 8       /* a packet for a non-loopback address (no process context: pid 0) */
#define REFUSED_UDP_CONNECT 9  /* connect of a UDP socket to other than DNS (nothing was sent) */

/* One refusal, sent to userspace over a ring buffer for the audit trail. */
struct refusal {
	__u64 cgid;     /* the session's cgroup (the task's own when no session was found) */
	__u64 ts_ns;
	__u32 pid;
	__u32 tgid;
	__u32 addr[4];  /* destination as asked, 16-byte form */
	__u16 port;
	__u16 family;
	__u16 proto;
	__u16 reason;
	struct deny_rule rule;
};

/* The destination a socket asked for, recorded by connect4/6 in the socket's local storage
 * (freed with the socket) and copied by sockops under the socket's local address. */
struct orig_dst {
	__u32 addr[4];   /* as requested */
	__u32 gw[4];     /* what it was rewritten to */
	__u16 port;
	__u16 gw_port;
	__u16 family;    /* AF_INET or AF_INET6: the family of the agent's sockaddr */
	__u16 proto;     /* IPPROTO_TCP / IPPROTO_UDP */
	__u32 pid;       /* thread id */
	__u32 tgid;      /* process id */
	__u64 cookie;
	__u64 cgid;
	__u64 ts_ns;     /* CLOCK_MONOTONIC */
};

/* Local address of a redirected TCP socket, as the gateway sees its accepted peer. */
struct local_key {
	__u32 addr[4];
	__u16 port;
	__u16 pad;
};

/* redirect/src/ebpf/maps.rs asserts the same sizes. */
_Static_assert(sizeof(struct session) == 56, "struct session layout");
_Static_assert(sizeof(struct deny_key) == 36, "struct deny_key layout");
_Static_assert(sizeof(struct orig_dst) == 72, "struct orig_dst layout");
_Static_assert(sizeof(struct local_key) == 20, "struct local_key layout");
_Static_assert(sizeof(struct deny_rule) == 24, "struct deny_rule layout");
_Static_assert(sizeof(struct refusal) == 72, "struct refusal layout");

#endif
