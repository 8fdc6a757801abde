// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// decide.c: remembered decisions, enforced in the kernel.
//
// The agent decides a connection in userspace the first time it sees it
// (rules, decision cache). When that decision depends only on what the
// kernel knows exactly at connect time — the UID, the executable file
// (device and inode), the protocol, the destination address and port — it
// writes it into `decisions`, and these programs apply it to every later
// connection with the same key, with no NFQUEUE round trip:
//
//   - decide_connect4/6 and decide_sendmsg4/6 (cgroup sock_addr) run in the
//     calling task before a connection or datagram leaves. A remembered
//     deny fails connect()/sendmsg() at once (EPERM; ECONNREFUSED for
//     reject). A remembered allow is written into `sock_allows` under the
//     socket's cookie, with the destination it allows.
//   - xt_allow (socket filter) is an iptables match (`-m bpf
//     --object-pinned`) in Bastion's chain, before the NFQUEUE rules: it
//     matches a packet whose socket has an allow for exactly the packet's
//     protocol, destination address and port, still current, and the
//     rule returns it without queueing.
//
// Every decision is reported on `events` (a ring buffer): denies at
// connect time, allows at the connection's first packet, with its full
// tuple. The agent turns them into the same history records as its own
// decisions.
//
// Current: a decision carries the generation of its UID (uid_gens) it was
// made under; the agent bumps the generation whenever that UID's rules or
// cache change, which invalidates all of the UID's decisions at once. A
// decision also carries its expiry (ns on the expiry clock, 0: none).
//
// The expiry clock is CLOCK_TAI where the kernel has bpf_ktime_get_tai_ns
// (6.1 and later): the wall clock plus a constant, so that a decision
// ends when the wall time its rule names is reached even if the wall
// clock is set (stepped) meanwhile, exactly as the agent's own matching
// decides. Older kernels use the boot clock, which the agent converts to
// when it writes a decision; a step of the wall clock then moves a
// decision's end by the step (docs/security.md).
//
// SECURITY: a miss is always safe: the packet goes to the queue as it did
// before. An allow needs a current decision for this UID and file and an
// entry for this very socket naming the packet's destination. Only tasks
// in the guarded network namespace and the host's mount namespace are
// decided here (the agent only remembers decisions for processes whose
// executable path it verified in its own mount namespace). Packet bytes
// are read with bpf_skb_load_bytes, which is bounds-checked.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_ICMPV6 58
#define EPERM 1
#define ECONNREFUSED 111

#define KD_BY_LEN 40

// Actions; the agent maps them to flow.Action.
#define KD_ALLOW 1
#define KD_DENY 2
#define KD_REJECT 3

// Indexes of `stats`.
#define KD_STAT_ALLOWED 0   // connections allowed (first packet matched)
#define KD_STAT_DENIED 1    // connect()/sendmsg() denied
#define KD_STAT_REJECTED 2  // connect()/sendmsg() rejected
#define KD_STAT_LOST 3      // events the ring buffer had no room for
#define KD_STAT_PACKETS 4   // packets xt_allow matched
#define KD_STAT_MAX 5

// kd_key is a remembered decision's key. daddr is 16 bytes, IPv4
// addresses IPv4-mapped; dport is host order, 0 for ICMP echo.
struct kd_key {
	__u32 uid;
	__u32 exe_dev; // kernel dev_t (MAJOR<<20|MINOR) of the executable's file system
	__u64 exe_ino;
	__u8 daddr[16];
	__u16 dport;
	__u8 proto;
	__u8 _pad[5];
};

struct kd_value {
	__u64 expires; // expiry_now() after which it no longer applies; 0: never
	// The executable's status-change time (ctime) when the agent verified
	// the path it decided for: renaming the file, linking or unlinking it,
	// or a new file that reuses the inode number changes it.
	__s64 exe_ctime_sec;
	__u32 exe_ctime_nsec;
	__u32 gen;     // the UID's generation it was made under
	__u8 action;   // KD_*
	__u8 _pad[7];
	char by[KD_BY_LEN]; // what decided it, as history names it ("rule:ID", "cache:ID")
};

// kd_event is one decision made here, for the agent's history.
struct kd_event {
	__u64 ts;             // bpf_ktime_get_boot_ns()
	__u64 start_boottime; // thread group leader's start time
	__u64 exe_ino;
	__u64 cookie;         // the socket's cookie
	__u64 exec_id;        // thread group leader's self_exec_id (execve bumps it)
	__u32 pid;
	__u32 tgid;
	__u32 uid;
	__u32 gid;
	__u32 exe_dev;
	__u8 action;
	__u8 proto;
	__u8 family; // AF_INET or AF_INET6 of the packet (IPv4 for mapped)
	__u8 has_src; // saddr and sport are known (packet-time events)
	__u16 sport;
	__u16 dport;
	__u32 _pad; // keeps the addresses 8-byte aligned (same_addr)
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[16];
	char by[KD_BY_LEN];
};

// kd_sock is an allow remembered for one socket, from its connect() or its
// latest sendmsg() with an address.
struct kd_sock {
	struct kd_event ev; // what the first packet reports
	__u64 expires;
	__u32 gen;
	__u8 recorded; // the event was sent
	__u8 _pad[3];
};

// kd_config (the `settings` map): the guarded network namespace (its cookie) and the host's
// mount namespace (inode number); enabled = 0 decides nothing.
struct kd_config {
	__u64 netns_cookie;
	__u32 host_mntns;
	__u32 enabled;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct kd_key);
	__type(value, struct kd_value);
} decisions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} uid_gens SEC(".maps");

// sock_allows: socket cookie -> the allow its first packet will meet. An
// entry is needed from connect()/sendmsg() to the packets the chain asks
// about: a TCP connection's SYN (xt_allow frees the entry once it has
// matched it), a UDP flow's packets until it is answered. LRU eviction
// only sends a packet to the queue.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct kd_sock);
} sock_allows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kd_config);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KD_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

// Scratch space for a kd_sock (too big for the stack with the rest).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kd_sock);
} sock_scratch SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

// Waking the agent for every record costs each decision an irq_work (a
// self-IPI: a VM exit on a virtual machine, ~3 us of xt_allow's ~4 us here)
// and the agent a context switch (~10 us of CPU a connection). A record
// wakes the agent when the last wake-up is more than KD_WAKE_GAP_NS old
// (so a lone record is read at once) or when the records waiting reach
// KD_WAKE_BYTES (once, not again for each record written until the agent
// has read them); one written within KD_WAKE_GAP_NS of a wake-up is read
// by the agent's next look, which it takes twice, 3 ms apart, after a
// wake-up or a read (kdecide.ReadEvents).
#define KD_WAKE_GAP_NS 4000000ULL
#define KD_WAKE_BYTES (256 * KD_RECORD_BYTES)
// A record's room in the ring: the event and the ring's 8-byte header,
// rounded up to 8 bytes.
#define KD_RECORD_BYTES ((sizeof(struct kd_event) + 8 + 7) & ~7ULL)

// last_wake: [0] = bpf_ktime_get_boot_ns() of the last forced wake-up.
// Written by emit on any CPU without a lock: a lost update costs at most
// one wake-up more or one record read a few ms later.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} last_wake SEC(".maps");

static __always_inline void emit(const struct kd_event *ev)
{
	__u32 zero = 0;
	__u64 flags = BPF_RB_NO_WAKEUP, now = bpf_ktime_get_boot_ns();
	__u64 *last = bpf_map_lookup_elem(&last_wake, &zero);
	// The size test wakes once, as the waiting records reach
	// KD_WAKE_BYTES, not with each record written until the agent has
	// read them: each wake-up is an IPI, and on a busy machine the agent
	// may take a while to run.
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	if (!last || now - *last > KD_WAKE_GAP_NS ||
	    (avail < KD_WAKE_BYTES && avail + KD_RECORD_BYTES >= KD_WAKE_BYTES)) {
		flags = BPF_RB_FORCE_WAKEUP;
		if (last)
			*last = now;
	}
	if (bpf_ringbuf_output(&events, (void *)ev, sizeof(*ev), flags))
		count(KD_STAT_LOST);
}

static __always_inline int same_addr(const __u8 a[16], const __u8 b[16])
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return x[0] == y[0] && x[1] == y[1];
}

// The inode's ctime, as each kernel since 5.x names it: two fields since
// 6.11 (the nanoseconds' top bit may carry I_CTIME_QUERIED), __i_ctime in
// 6.6-6.10, i_ctime before.
struct inode___v611 {
	time64_t i_ctime_sec;
	u32 i_ctime_nsec;
} __attribute__((preserve_access_index));
struct inode___v66 {
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));
struct inode___v5 {
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

// same_ctime reports whether inode i's ctime is sec.nsec.
static __always_inline int same_ctime(struct inode *i, __s64 sec, __u32 nsec)
{
	if (bpf_core_field_exists(((struct inode___v611 *)0)->i_ctime_sec)) {
		struct inode___v611 *n = (void *)i;
		return n->i_ctime_sec == sec && (n->i_ctime_nsec & 0x7fffffff) == nsec;
	}
	if (bpf_core_field_exists(((struct inode___v66 *)0)->__i_ctime)) {
		struct inode___v66 *m = (void *)i;
		return m->__i_ctime.tv_sec == sec && m->__i_ctime.tv_nsec == nsec;
	}
	struct inode___v5 *o = (void *)i;
	return o->i_ctime.tv_sec == sec && o->i_ctime.tv_nsec == nsec;
}

// use_tai selects the expiry clock: set by the agent when it loads the
// programs, if the kernel has bpf_ktime_get_tai_ns. It is read-only data,
// so the verifier knows its value and never checks the branch not taken
// (an older kernel would refuse the unknown helper).
const volatile __u8 use_tai = 0;

// expiry_now is the expiry clock's current time.
static __always_inline __u64 expiry_now(void)
{
	if (use_tai)
		return bpf_ktime_get_tai_ns();
	return bpf_ktime_get_boot_ns();
}

// current_decision returns the decision for k if it is current, else NULL.
static __always_inline struct kd_value *current_decision(const struct kd_key *k)
{
	struct kd_value *v = bpf_map_lookup_elem(&decisions, k);
	if (!v)
		return NULL;
	__u32 *gen = bpf_map_lookup_elem(&uid_gens, &k->uid);
	if (!gen || *gen != v->gen)
		return NULL;
	if (v->expires && expiry_now() >= v->expires)
		return NULL;
	return v;
}

// socket_uid finds the UID a connection belongs to, as the agent takes it:
// the socket's owner (sk_uid, the file-system UID that created it), which
// a setuid program or a socket passed between processes can make differ
// from the caller's. TCP and IPv6 UDP sockets have a typed view that shows
// it; for the others (IPv4 UDP, ping) the caller's UID stands for it only
// when all the caller's UIDs are one (no setuid program midway), and the
// match checks the socket's own UID before any allow. Non-zero: unknown.
static __always_inline int socket_uid(struct bpf_sock_addr *ctx, struct task_struct *t, __u32 *uid)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return -1;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (tp) {
		*uid = tp->inet_conn.icsk_inet.sk.sk_uid.val;
		return 0;
	}
	struct udp6_sock *u6 = bpf_skc_to_udp6_sock(sk);
	if (u6) {
		*uid = u6->udp.inet.sk.sk_uid.val;
		return 0;
	}
	const struct cred *c = t->cred;
	__u32 u = c->uid.val;
	if (c->euid.val != u || c->suid.val != u || c->fsuid.val != u)
		return -1;
	*uid = u;
	return 0;
}

// decide applies a remembered decision to a connect() or sendmsg() to
// daddr:dport. It returns 1 to let the call go on, 0 to fail it.
static __always_inline int decide(struct bpf_sock_addr *ctx, __u8 family, const __u32 d[4])
{
	__u32 zero = 0;
	struct kd_config *cfg = bpf_map_lookup_elem(&settings, &zero);
	if (!cfg || !cfg->enabled)
		return 1;
	if (bpf_get_netns_cookie(ctx) != cfg->netns_cookie)
		return 1;

	struct kd_key k = {};
	__u32 proto = ctx->protocol;
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
		k.dport = bpf_ntohs(ctx->user_port);
	else if (proto != IPPROTO_ICMP && proto != IPPROTO_ICMPV6)
		return 1;
	k.proto = proto;
	__builtin_memcpy(k.daddr, d, 16);

	// Fields are read by direct loads through the task's BTF pointers
	// (a fault reads 0), cheaper than a helper call each.
	// The task's fields are read by direct loads through its BTF
	// pointers (a fault reads 0), cheaper than a helper call each.
	struct task_struct *t = bpf_get_current_task_btf();
	if (t->nsproxy->mnt_ns->ns.inum != cfg->host_mntns)
		return 1;
	struct inode *ei = t->mm->exe_file->f_inode;
	if (!ei)
		return 1;
	// A file no name leads to any more (deleted, or replaced by an
	// upgrade) is not the program at any path: the agent would not
	// verify it (flow.ExeDeleted), so its decisions are not its file's.
	// SECURITY: and a file with more than one name (hard links) is
	// always decided in userspace: the agent decided for the file under
	// the path it was run by, path and glob rules may decide its other
	// names otherwise, and the kernel cannot tell the names apart.
	if (ei->i_nlink != 1)
		return 1;
	k.exe_ino = ei->i_ino;
	k.exe_dev = ei->i_sb->s_dev;
	if (socket_uid(ctx, t, &k.uid))
		return 1;

	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct kd_value *v = current_decision(&k);
	// SECURITY: the decision was made for the file under the path the
	// agent verified; once renamed (or its inode number reused by a new
	// file) it may be another path's, which the rules may decide
	// otherwise: the queue decides it again.
	if (v && !same_ctime(ei, v->exe_ctime_sec, v->exe_ctime_nsec))
		v = NULL;
	if (!v) {
		// A socket's entry names one destination: the last one it
		// connected or sent to. Without a current allow for this
		// one, the socket has none.
		bpf_map_delete_elem(&sock_allows, &cookie);
		return 1;
	}

	if (v->action == KD_ALLOW) {
		// The socket already has this allow (datagrams sent one by
		// one to the same destination): keep it as it is, recorded or
		// not, so that a flow is recorded once, not once per datagram.
		struct kd_sock *old = bpf_map_lookup_elem(&sock_allows, &cookie);
		if (old && old->gen == v->gen && old->expires == v->expires && old->ev.proto == k.proto &&
		    old->ev.dport == k.dport && same_addr(old->ev.daddr, k.daddr))
			return 1;
	}

	struct kd_sock *s = bpf_map_lookup_elem(&sock_scratch, &zero);
	if (!s)
		return 1;
	struct kd_event *ev = &s->ev;
	ev->ts = bpf_ktime_get_boot_ns();
	ev->start_boottime = t->group_leader->start_boottime;
	ev->exec_id = t->group_leader->self_exec_id;
	ev->exe_ino = k.exe_ino;
	ev->exe_dev = k.exe_dev;
	ev->cookie = cookie;
	ev->pid = t->pid;
	ev->tgid = t->tgid;
	ev->uid = k.uid;
	ev->gid = t->cred->gid.val;
	ev->action = v->action;
	ev->proto = k.proto;
	ev->family = family;
	ev->has_src = 0;
	ev->sport = 0;
	ev->dport = k.dport;
	__builtin_memset(ev->saddr, 0, 16);
	__builtin_memcpy(ev->daddr, k.daddr, 16);
	bpf_probe_read_kernel_str(ev->comm, sizeof(ev->comm), &t->comm);
	__builtin_memcpy(ev->by, v->by, KD_BY_LEN);

	if (v->action == KD_ALLOW) {
		s->expires = v->expires;
		s->gen = v->gen;
		s->recorded = 0;
		bpf_map_update_elem(&sock_allows, &cookie, s, BPF_ANY);
		return 1;
	}
	bpf_map_delete_elem(&sock_allows, &cookie);
	emit(ev);
	if (v->action == KD_REJECT) {
		count(KD_STAT_REJECTED);
		bpf_set_retval(-ECONNREFUSED);
	} else {
		count(KD_STAT_DENIED);
	}
	return 0;
}

static __always_inline int decide4(struct bpf_sock_addr *ctx)
{
	__u32 d[4] = {0, 0, bpf_htonl(0x0000ffff), ctx->user_ip4};
	return decide(ctx, AF_INET, d);
}

static __always_inline int decide6(struct bpf_sock_addr *ctx)
{
	__u32 d[4];
	d[0] = ctx->user_ip6[0];
	d[1] = ctx->user_ip6[1];
	d[2] = ctx->user_ip6[2];
	d[3] = ctx->user_ip6[3];
	__u8 family = (d[0] == 0 && d[1] == 0 && d[2] == bpf_htonl(0x0000ffff)) ? AF_INET : AF_INET6;
	return decide(ctx, family, d);
}

SEC("cgroup/connect4")
int decide_connect4(struct bpf_sock_addr *ctx) { return decide4(ctx); }

SEC("cgroup/connect6")
int decide_connect6(struct bpf_sock_addr *ctx) { return decide6(ctx); }

SEC("cgroup/sendmsg4")
int decide_sendmsg4(struct bpf_sock_addr *ctx) { return decide4(ctx); }

SEC("cgroup/sendmsg6")
int decide_sendmsg6(struct bpf_sock_addr *ctx) { return decide6(ctx); }

// xt_allow matches a packet whose socket has a current allow for the
// packet's protocol, destination address and port. The packet starts at
// its IP header. IPv6 packets with extension headers never match (they go
// to the queue, as before).
SEC("socket")
int xt_allow(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	if (!cookie)
		return 0;
	struct kd_sock *s = bpf_map_lookup_elem(&sock_allows, &cookie);
	if (!s)
		return 0;

	__u8 saddr[16] __attribute__((aligned(8))) = {}, daddr[16] __attribute__((aligned(8))) = {};
	__u8 proto, family;
	__u32 l4;
	__u8 vihl;
	if (bpf_skb_load_bytes(skb, 0, &vihl, 1))
		return 0;
	if ((vihl >> 4) == 4) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 0;
		if (ip.frag_off & bpf_htons(0x3fff)) // a fragment: no ports to compare
			return 0;
		family = AF_INET;
		proto = ip.protocol;
		saddr[10] = saddr[11] = daddr[10] = daddr[11] = 0xff;
		__builtin_memcpy(&saddr[12], &ip.saddr, 4);
		__builtin_memcpy(&daddr[12], &ip.daddr, 4);
		l4 = (vihl & 0xf) * 4;
	} else if ((vihl >> 4) == 6) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 0;
		family = AF_INET6;
		proto = ip6.nexthdr;
		__builtin_memcpy(saddr, &ip6.saddr, 16);
		__builtin_memcpy(daddr, &ip6.daddr, 16);
		l4 = sizeof(ip6);
	} else {
		return 0;
	}
	__u16 ports[2] = {};
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)))
			return 0;
		ports[0] = bpf_ntohs(ports[0]);
		ports[1] = bpf_ntohs(ports[1]);
	} else if (proto != IPPROTO_ICMP && proto != IPPROTO_ICMPV6) {
		return 0;
	}
	if (proto != s->ev.proto || ports[1] != s->ev.dport || !same_addr(daddr, s->ev.daddr))
		return 0;
	// The decision was made for this UID; the socket must be its.
	if (bpf_get_socket_uid(skb) != s->ev.uid)
		return 0;
	__u32 *gen = bpf_map_lookup_elem(&uid_gens, &s->ev.uid);
	if (!gen || *gen != s->gen)
		return 0;
	if (s->expires && expiry_now() >= s->expires)
		return 0;

	count(KD_STAT_PACKETS);
	if (!s->recorded) {
		s->recorded = 1;
		s->ev.has_src = 1;
		s->ev.family = family;
		s->ev.sport = ports[0];
		__builtin_memcpy(s->ev.saddr, saddr, 16);
		s->ev.ts = bpf_ktime_get_boot_ns();
		emit(&s->ev);
		count(KD_STAT_ALLOWED);
	}
	// A TCP socket's entry is needed for its SYN only: the chain asks
	// about a connection's first packet, and a retransmitted SYN without
	// it goes to the queue, which decides it as before. Freeing the entry
	// now keeps the map small, so that a new socket's insert never has to
	// evict an entry (an LRU map's slowest path).
	if (proto == IPPROTO_TCP)
		bpf_map_delete_elem(&sock_allows, &cookie);
	return 1;
}
