// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// procid.c: kernel-side process identification for new outbound flows.
//
// Three groups of programs write the maps that the Go package
// internal/procid reads:
//
//   - nf_local_out (SEC "netfilter", NF_INET_LOCAL_OUT, priority -200, one
//     link per network namespace and family) records who sent the first
//     packet of each flow, of any IP protocol, into `flows`, and a copy into
//     `recent_flows`, which the agent reads from memory.
//   - sockops_connect (cgroup sockops) and connect4/6 + sendmsg4/6 (cgroup
//     sock_addr) are the fallback for kernels without the netfilter link
//     (< 6.4). They write the same `flows` map and always allow.
//   - on_exec / on_fork / on_exit (tp_btf) keep `execs`: the executable path
//     and argv of every process, keyed by TGID, with the executable's
//     device and inode and the process's mount namespace, which userspace
//     checks the path against (a mount namespace can show any file at any
//     path).
//   - nf_parse_test runs nf_local_out's packet parser under
//     BPF_PROG_TEST_RUN for tests; the agent never loads it.
//
// All programs only observe; none of them ever drops or denies anything.
//
// SECURITY: packet bytes parsed here come from local senders and may be
// crafted (raw sockets). They are only copied into map keys, never used to
// index memory without bounds checks, and every read of them goes through
// bpf_probe_read_kernel, which cannot fault.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define NF_ACCEPT 1
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10
#define ICMP_ECHO 8
#define ICMP_ECHOREPLY 0
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129
#define IP_OFFSET_MASK 0x1fff
#define IP_MF 0x2000
#define IPPROTO_ICMPV6 58 // not an enum member in vmlinux.h

// IPv6 extension headers walked by parse_packet (macros in the kernel, so
// not in vmlinux.h). ESP (50) and anything else end the walk.
#define NEXTHDR_HOP 0       // Hop-by-Hop Options, (hdrlen+1)*8 bytes
#define NEXTHDR_ROUTING 43  // (hdrlen+1)*8 bytes
#define NEXTHDR_FRAGMENT 44 // always 8 bytes
#define NEXTHDR_AUTH 51     // AH, (hdrlen+2)*4 bytes
#define NEXTHDR_DEST 60     // Destination Options, (hdrlen+1)*8 bytes
// MAX_V6_EXT bounds the walk; equal to packet.MaxExtHeaders, so that the
// agent's parser and this one give up on the same chains.
#define MAX_V6_EXT 8

#define COMM_LEN 16
#define EXE_LEN 256  // must match the mask in mask_exe
#define ARGS_LEN 512 // power of two, see read_args
#define MAX_PATH_DEPTH 32
#define MAX_WALK_STEPS 48 // path components plus mount crossings

// flow_value.flags
#define FLOW_F_NETFILTER 0x1 // written by nf_local_out
#define FLOW_F_SOCKOPS 0x2   // written by sockops_connect
#define FLOW_F_SOCKADDR 0x4  // written by connect4/6 or sendmsg4/6 (saddr :: key)
#define FLOW_F_UID_MISMATCH 0x8 // task uid != sk->sk_uid: maybe not the socket's owner

// exec_value.flags
#define EXEC_F_FORKED 0x1     // copied from the parent at fork, no exec seen since
#define EXEC_F_EXITED 0x2     // the thread group leader has exited
#define EXEC_F_EXE_TRUNC 0x4  // exe longer than EXE_LEN or deeper than MAX_PATH_DEPTH
#define EXEC_F_EXE_FILENAME 0x8 // exe is bprm->filename, the dentry walk failed
#define EXEC_F_ARGS_TRUNC 0x10 // argv longer than ARGS_LEN

// flow_key identifies a flow as the sending host sees it.
//
// Addresses are 16 bytes; IPv4 addresses are stored IPv4-mapped
// (::ffff:a.b.c.d), and family is AF_INET for them even when the socket is
// AF_INET6 (dual-stack sockets send IPv4 packets). Ports are host byte
// order, 0 for protocols without ports. For ICMP/ICMPv6 echo sport is the
// echo identifier and dport is 0. The sock_addr programs do not know the
// source address yet and write saddr = ::; with sport = 0 too when the
// socket has no port yet ("destination keys"), else with the socket's port
// ("port keys").
//
// netns is the network namespace's inode number (net->ns.inum), so the same
// 5-tuple in two namespaces never collides.
struct flow_key {
	__u32 netns;
	__u8 proto;
	__u8 family;
	__u16 _pad;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
};

// flow_value describes the task that sent a flow's first packet.
struct flow_value {
	__u32 pid;  // thread ID (kernel pid)
	__u32 tgid; // process ID
	__u32 uid;  // real UID of the task
	__u32 gid;  // real GID of the task
	__u32 sk_uid; // sk->sk_uid, the socket owner's UID (netfilter only)
	__u32 flags;  // FLOW_F_*
	__u64 start_boottime; // thread group leader's start_boottime (ns)
	__u64 ts;     // bpf_ktime_get_boot_ns() when written
	__u64 sk_ino; // socket inode, 0 when unknown (netfilter only)
	// The socket cookie, 0 when unknown (sockops and sock_addr only: a
	// netfilter program cannot ask for it). It names the socket where
	// sk_ino is unknown.
	__u64 sk_cookie;
	char comm[COMM_LEN];
	// The thread group leader's self_exec_id, which every execve bumps:
	// with tgid and start_boottime it names one process image, so
	// userspace can cache exe and argv without an exec-map lookup.
	__u64 exec_id;
};

// exec_value describes a process image.
struct exec_value {
	__u32 tgid;
	__u32 ppid;
	__u64 start_boottime; // thread group leader's start_boottime (ns)
	__u32 flags;          // EXEC_F_*
	__u16 exe_len;        // bytes of exe without the NUL
	__u16 args_len;       // bytes of args used
	char exe[EXE_LEN];    // absolute path, NUL-terminated
	char args[ARGS_LEN];  // argv, each argument NUL-terminated
	// The executable's identity, which no mount can fake: the inode of
	// mm->exe_file and its file system's kernel dev_t (MAJOR<<20|MINOR),
	// and the task's mount namespace (mnt_ns->ns.inum). Userspace checks
	// them against the file at exe in its own namespace.
	__u64 exe_ino;
	__u32 exe_dev;
	__u32 mnt_ns;
};

// path_scratch is per-CPU working memory for building exe paths.
struct path_scratch {
	__u64 names[MAX_PATH_DEPTH]; // d_name.name of each component, leaf first
	__u32 lens[MAX_PATH_DEPTH];  // d_name.len of each component
	char buf[EXE_LEN * 2];       // output; twice EXE_LEN: offset and size are each < EXE_LEN
	// Components found so far. Kept here, not in walk_ctx, so that the
	// verifier sees an unknown count: a known one made it explore every
	// bpf_loop iteration separately, past its 1M-instruction limit.
	__u32 n;
};


// flows: struct flow_key -> struct flow_value.
// Written by nf_local_out (exact tuples), sockops_connect (exact TCP tuples)
// and the sock_addr programs (port and destination keys). Read, and deleted through
// Resolver.Forget, by userspace. LRU so it can never fill up.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

// recent_flows is a second, lock-free copy of what nf_local_out writes into
// `flows`, which userspace reads through a read-only memory mapping instead
// of a bpf() syscall: the agent looks up every queued packet's flow, and the
// syscall was the largest part of its own cost per connection.
//
// It is a direct-mapped cache of RECENT_FLOWS slots, indexed by
// recent_slot(key); a slot holds the newest flow written there. Each slot is
// a seqlock: the writer moves seq from even to odd with a compare-and-swap
// (so only one CPU writes a slot at a time), writes key and value, and makes
// seq even again; the reader copies the slot between two reads of seq and
// keeps the copy only if seq was even and unchanged and the key is the one
// it asked for. Anything else (an older flow in the slot, a writer busy on
// it, a write given up because another CPU held the slot) sends the reader
// to `flows`, which nf_local_out always writes. A write given up leaves no
// stale copy of its key behind: it is given up only when another writer is
// overwriting the whole slot.
//
// Only nf_local_out writes it, so only MechNetfilterLink reads it.
#define RECENT_FLOWS 8192 // power of two; 1 MB of 128-byte slots

struct recent_flow {
	__u32 seq; // odd while a writer owns the slot
	struct flow_key key;
	struct flow_value val;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, RECENT_FLOWS);
	__type(key, __u32);
	__type(value, struct recent_flow);
} recent_flows SEC(".maps");

// sock_flows: __u64 socket cookie -> struct flow_value.
// Written by connect4/6 for UDP sockets that have no port yet, whose flows
// share one destination key in `flows`. Userspace finds a live flow's
// socket cookie with sock_diag and reads who connected that very socket.
// Cookies are never reused, so an entry cannot name the wrong socket; LRU.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct flow_value);
} sock_flows SEC(".maps");

// execs: __u32 tgid -> struct exec_value.
// Written by on_exec (new image), on_fork (copy of the parent's entry for a
// new process) and on_exit (sets EXEC_F_EXITED). Read by userspace, which
// checks start_boottime against the flow's. Never deleted on exit, so a
// process that exits right after connect() stays nameable; LRU evicts.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct exec_value);
} execs SEC(".maps");

// exec_scratch: 0 -> struct exec_value, per-CPU staging for on_exec/on_fork
// (the value is larger than the 512-byte BPF stack). Only BPF touches it.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_value);
} exec_scratch SEC(".maps");

// path_scratch_map: 0 -> struct path_scratch, per-CPU working memory for
// build_exe_path. Only BPF touches it.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_scratch);
} path_scratch_map SEC(".maps");

static __always_inline void map_v4(__u8 dst[16], __u32 addr_be)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(&dst[12], &addr_be, 4);
}

static __always_inline int is_v4_mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

static __always_inline __u32 task_netns(struct task_struct *t)
{
	return BPF_CORE_READ(t, nsproxy, net_ns, ns.inum);
}

// fill_task fills v from the current task (thread) t.
static __always_inline void fill_task(struct flow_value *v, struct task_struct *t)
{
	const struct cred *cred = t->cred;
	struct task_struct *leader = t->group_leader;

	v->pid = t->pid;
	v->tgid = t->tgid;
	v->uid = cred->uid.val;
	v->gid = cred->gid.val;
	v->start_boottime = leader->start_boottime;
	v->exec_id = leader->self_exec_id;
	v->ts = bpf_ktime_get_boot_ns();
	bpf_probe_read_kernel_str(v->comm, sizeof(v->comm), &t->comm);
}

// recent_slot is the slot of k in recent_flows. The agent computes the same
// function over the same 11 words (internal/procid, recentSlot); change
// both or neither.
static __always_inline __u32 recent_slot(const struct flow_key *k)
{
	const __u32 *w = (const __u32 *)k;
	__u32 h = 0x811c9dc5;
#pragma unroll
	for (int i = 0; i < sizeof(*k) / 4; i++) {
		h ^= w[i];
		h *= 0x9e3779b1;
		h ^= h >> 16;
	}
	return h & (RECENT_FLOWS - 1);
}

// put_recent copies key and val into their recent_flows slot, unless another
// CPU is writing that slot (see recent_flows).
static __always_inline void put_recent(const struct flow_key *key, const struct flow_value *val)
{
	__u32 idx = recent_slot(key);
	struct recent_flow *slot = bpf_map_lookup_elem(&recent_flows, &idx);
	if (!slot)
		return;
	__u32 seq = *(volatile __u32 *)&slot->seq;
	if (seq & 1)
		return;
	if (__sync_val_compare_and_swap(&slot->seq, seq, seq + 1) != seq)
		return;
	__builtin_memcpy(&slot->key, key, sizeof(*key));
	__builtin_memcpy(&slot->val, val, sizeof(*val));
	// A fetching atomic is a full barrier on every JIT (a plain atomic
	// add is not on arm64): key and value are visible before seq is even.
	__sync_val_compare_and_swap(&slot->seq, seq + 1, seq + 2);
}

// ---------------------------------------------------------------------------
// Netfilter: NF_INET_LOCAL_OUT, first packet of each flow.

static __always_inline int is_v6_ext(__u8 nexthdr)
{
	return nexthdr == NEXTHDR_HOP || nexthdr == NEXTHDR_ROUTING || nexthdr == NEXTHDR_FRAGMENT ||
	       nexthdr == NEXTHDR_AUTH || nexthdr == NEXTHDR_DEST;
}

// parse_packet reads the flow key (all but netns) and the TCP flags of the
// IP packet in skb whose IP header starts at address nh, exactly as
// internal/packet.Parse reads the tuple of the same bytes in the agent. It
// returns 0 for every protocol whose header it read (ports for TCP, UDP,
// UDP-Lite, SCTP and DCCP, the identifier of ICMP/ICMPv6 echo, none for the
// rest), -1 for non-first fragments, malformed or truncated headers and IPv6
// extension-header chains longer than MAX_V6_EXT.
//
// Every read stays inside the linear data (head + tail; the headers of a
// locally generated packet are always there) and inside the length the IP
// header claims, so bytes past the packet never end up in a key. Addresses
// are plain integers here: bpf_probe_read_kernel does the loads.
static __always_inline int parse_packet(struct sk_buff *skb, __u64 nh, struct flow_key *key, __u8 *tcp_flags)
{
	// tail is an offset from head on 64-bit kernels (sk_buff_data_t).
	__u64 end = (__u64)skb->head + skb->tail;
	__u64 l4;
	__u8 proto, vihl;

	if (nh + 1 > end || bpf_probe_read_kernel(&vihl, 1, (void *)nh))
		return -1;
	if ((vihl >> 4) == 4) {
		struct iphdr ip;
		if (nh + sizeof(ip) > end || bpf_probe_read_kernel(&ip, sizeof(ip), (void *)nh))
			return -1;
		__u64 ihl = (vihl & 0xf) * 4;
		__u64 tot = bpf_ntohs(ip.tot_len);
		if (ihl < sizeof(ip) || nh + ihl > end)
			return -1;
		if (tot != 0) { // 0 only for GSO super-packets (BIG TCP)
			if (tot < ihl)
				return -1;
			if (nh + tot < end)
				end = nh + tot;
		}
		// Only the first fragment carries the transport header.
		if (bpf_ntohs(ip.frag_off) & IP_OFFSET_MASK)
			return -1;
		key->family = AF_INET;
		map_v4(key->saddr, ip.saddr);
		map_v4(key->daddr, ip.daddr);
		proto = ip.protocol;
		l4 = nh + ihl;
	} else if ((vihl >> 4) == 6) {
		struct ipv6hdr ip6;
		if (nh + sizeof(ip6) > end || bpf_probe_read_kernel(&ip6, sizeof(ip6), (void *)nh))
			return -1;
		__u64 plen = bpf_ntohs(ip6.payload_len);
		if (plen != 0 && nh + sizeof(ip6) + plen < end) // 0: jumbogram or BIG TCP
			end = nh + sizeof(ip6) + plen;
		// A v4-mapped destination counts as IPv4, as in every key
		// (and as the agent's tuple for these bytes says); only raw
		// sockets send such packets.
		key->family = is_v4_mapped((const __u32 *)&ip6.daddr) ? AF_INET : AF_INET6;
		__builtin_memcpy(key->saddr, &ip6.saddr, 16);
		__builtin_memcpy(key->daddr, &ip6.daddr, 16);

		// Walk the extension headers. Applications add Hop-by-Hop,
		// Routing and Destination Options with IPV6_HOPOPTS/RTHDR/
		// DSTOPTS (per socket or per sendmsg), IPsec adds AH, and raw
		// sockets can send anything, fragments included.
		proto = ip6.nexthdr;
		l4 = nh + sizeof(ip6);
		for (int i = 0; i < MAX_V6_EXT && is_v6_ext(proto); i++) {
			__u8 eh[4]; // next header, hdrlen, fragment offset and flags
			__u64 len;
			// RFC 8200: Hop-by-Hop Options only directly after the
			// IPv6 header; a stack that sends it elsewhere is broken
			// or lying, and the agent's parser refuses it too.
			if (proto == NEXTHDR_HOP && i != 0)
				return -1;
			if (l4 + 8 > end || bpf_probe_read_kernel(eh, sizeof(eh), (void *)l4))
				return -1;
			if (proto == NEXTHDR_FRAGMENT) {
				// A first fragment (offset 0) carries the transport
				// header after this one; later fragments carry
				// none, and their flow was recorded from the first.
				if ((((__u16)eh[2] << 8) | eh[3]) >> 3)
					return -1;
				len = 8;
			} else if (proto == NEXTHDR_AUTH) {
				len = ((__u64)eh[1] + 2) * 4;
			} else {
				len = ((__u64)eh[1] + 1) * 8;
			}
			if (l4 + len > end)
				return -1;
			proto = eh[0];
			l4 += len;
		}
		if (is_v6_ext(proto))
			return -1; // more than MAX_V6_EXT extension headers
	} else {
		return -1;
	}
	key->proto = proto;

	if (proto == IPPROTO_TCP) {
		struct {
			__u16 source;
			__u16 dest;
			__u32 seq;
			__u32 ack_seq;
			__u8 doff;
			__u8 flags;
		} th;
		if (l4 + 20 > end || bpf_probe_read_kernel(&th, sizeof(th), (void *)l4))
			return -1;
		if ((th.doff >> 4) < 5)
			return -1; // data offset below the 20-byte minimum
		key->sport = bpf_ntohs(th.source);
		key->dport = bpf_ntohs(th.dest);
		*tcp_flags = th.flags;
	} else if (proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE || proto == IPPROTO_SCTP ||
		   proto == IPPROTO_DCCP) {
		// Ports first in each; the minimum header is 8 bytes for UDP
		// and UDP-Lite, 12 for SCTP and DCCP (as in the agent's parser).
		__u16 ports[2];
		__u64 hlen = proto == IPPROTO_SCTP || proto == IPPROTO_DCCP ? 12 : 8;
		if (l4 + hlen > end || bpf_probe_read_kernel(ports, sizeof(ports), (void *)l4))
			return -1;
		key->sport = bpf_ntohs(ports[0]);
		key->dport = bpf_ntohs(ports[1]);
	} else if ((proto == IPPROTO_ICMP && (vihl >> 4) == 4) ||
		   (proto == IPPROTO_ICMPV6 && (vihl >> 4) == 6)) {
		// ICMP in IPv6 or ICMPv6 in IPv4 is opaque, as below. Echo
		// requests and replies are keyed by identifier, other types
		// have no ports.
		struct {
			__u8 type;
			__u8 code;
			__u16 csum;
			__u16 id;
			__u16 seq;
		} ih;
		if (l4 + 4 > end || bpf_probe_read_kernel(&ih, 4, (void *)l4))
			return -1;
		int v4 = proto == IPPROTO_ICMP;
		if (ih.type == (v4 ? ICMP_ECHO : ICMPV6_ECHO_REQUEST) ||
		    ih.type == (v4 ? ICMP_ECHOREPLY : ICMPV6_ECHO_REPLY)) {
			if (l4 + sizeof(ih) > end || bpf_probe_read_kernel(&ih, sizeof(ih), (void *)l4))
				return -1;
			key->sport = bpf_ntohs(ih.id);
		}
	}
	// Any other protocol: addresses and protocol only, no ports.
	return 0;
}

SEC("netfilter")
int nf_local_out(struct bpf_nf_ctx *ctx)
{
	struct sk_buff *skb = ctx->skb;
	struct flow_key key = {};
	struct flow_value val = {};
	struct sock *sk;
	__u8 tcp_flags = 0;

	sk = skb->sk;
	if (!sk)
		return NF_ACCEPT; // kernel-generated (RST, ICMP errors): no owner

	// Leave every later packet of a TCP connection at once, before any
	// header is read: only a socket in SYN_SENT sends a first SYN.
	// Request and time-wait mini sockets (SYN-ACKs, final ACKs) have
	// only the common part, so their state is checked before sk_protocol
	// is read; UDP and ping sockets pass on to the per-packet checks.
	__u8 sk_state = sk->__sk_common.skc_state;
	if (sk_state == TCP_NEW_SYN_RECV || sk_state == TCP_TIME_WAIT)
		return NF_ACCEPT;
	// (A raw socket may name IPPROTO_TCP too; it has no TCP state.)
	int tcp_sock = sk->sk_protocol == IPPROTO_TCP && sk->sk_type == SOCK_STREAM;
	if (tcp_sock && sk_state != TCP_SYN_SENT)
		return NF_ACCEPT;

	__u64 nh = (__u64)skb->head + skb->network_header;
	if (parse_packet(skb, nh, &key, &tcp_flags))
		return NF_ACCEPT;
	key.netns = ctx->state->net->ns.inum;
	__u8 proto = key.proto;

	if (proto == IPPROTO_TCP) {
		// First packet only: SYN without ACK ...
		if (!(tcp_flags & TCP_FLAG_SYN) || (tcp_flags & TCP_FLAG_ACK))
			return NF_ACCEPT;
		// ... and not a retransmission. Retransmitted SYNs are sent from
		// the retransmit timer, in the context of whatever task happens to
		// run; the first transmission's entry answers for them.
		struct inet_connection_sock *icsk = (void *)sk;
		if (tcp_sock && BPF_CORE_READ(icsk, icsk_retransmits) != 0)
			return NF_ACCEPT;
	}

	struct socket *sock = sk->sk_socket;
	__u64 ino = 0;
	if (sock)
		ino = sock->file->f_inode->i_ino;

	if (proto != IPPROTO_TCP) {
		// A kernel socket (no file: ICMP errors, neighbour discovery,
		// tunnels) sends for no process; the task running now is
		// whichever one the softirq interrupted.
		if (!ino)
			return NF_ACCEPT;
		// Datagrams: every packet comes here. Keep the first sender of
		// this tuple unless the tuple now belongs to another socket.
		struct flow_value *old = bpf_map_lookup_elem(&flows, &key);
		if (old && old->sk_ino == ino && (old->flags & FLOW_F_NETFILTER))
			return NF_ACCEPT;
	}

	struct task_struct *t = bpf_get_current_task_btf();
	fill_task(&val, t);
	val.sk_uid = sk->sk_uid.val;
	val.sk_ino = ino;
	val.flags = FLOW_F_NETFILTER;
	if (val.sk_uid != val.uid)
		val.flags |= FLOW_F_UID_MISMATCH;
	put_recent(&key, &val);
	bpf_map_update_elem(&flows, &key, &val, BPF_ANY);
	return NF_ACCEPT;
}

// parse_result is what nf_parse_test found in one packet.
struct parse_result {
	struct flow_key key; // netns is always 0
	__s32 ret;           // parse_packet's return value
	__u8 tcp_flags;
	__u8 _pad[3];
};

// parse_results: __u32 0 -> struct parse_result. Written by nf_parse_test,
// read by the tests that run it.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct parse_result);
} parse_results SEC(".maps");

// nf_parse_test runs parse_packet on a packet handed in through
// BPF_PROG_TEST_RUN (whose skb has no socket, so nf_local_out itself would
// stop at once) and stores the result, so that tests can hold the kernel-side
// parser against internal/packet on packets no ordinary socket sends. The
// agent never loads it.
SEC("netfilter")
int nf_parse_test(struct bpf_nf_ctx *ctx)
{
	struct parse_result r = {};
	__u32 zero = 0;

	// The test-run skb starts at the IP header but, unlike a packet at
	// LOCAL_OUT, has no network header offset set (it is 0, i.e. head).
	__u64 nh = (__u64)BPF_CORE_READ(ctx->skb, data);
	r.ret = parse_packet(ctx->skb, nh, &r.key, &r.tcp_flags);
	bpf_map_update_elem(&parse_results, &zero, &r, BPF_ANY);
	return NF_ACCEPT;
}

// ---------------------------------------------------------------------------
// Fallback: cgroup sockops (TCP) and sock_addr (UDP, ping).

SEC("sockops")
int sockops_connect(struct bpf_sock_ops *ctx)
{
	struct flow_key key = {};
	struct flow_value val = {};

	if (ctx->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;

	if (ctx->family == AF_INET) {
		key.family = AF_INET;
		map_v4(key.saddr, ctx->local_ip4);
		map_v4(key.daddr, ctx->remote_ip4);
	} else if (ctx->family == AF_INET6) {
		__u32 s[4], d[4];
		s[0] = ctx->local_ip6[0];
		s[1] = ctx->local_ip6[1];
		s[2] = ctx->local_ip6[2];
		s[3] = ctx->local_ip6[3];
		d[0] = ctx->remote_ip6[0];
		d[1] = ctx->remote_ip6[1];
		d[2] = ctx->remote_ip6[2];
		d[3] = ctx->remote_ip6[3];
		key.family = is_v4_mapped(d) ? AF_INET : AF_INET6;
		__builtin_memcpy(key.saddr, s, 16);
		__builtin_memcpy(key.daddr, d, 16);
	} else {
		return 1;
	}
	key.proto = IPPROTO_TCP;
	key.sport = ctx->local_port; // host byte order
	// remote_port holds the big-endian port in its upper 16 bits on
	// little-endian machines; ntohl brings it to host order on both.
	key.dport = bpf_ntohl(ctx->remote_port) & 0xffff;

	struct task_struct *t = bpf_get_current_task_btf();
	key.netns = task_netns(t);
	fill_task(&val, t);
	val.sk_cookie = bpf_get_socket_cookie(ctx);
	val.flags = FLOW_F_SOCKOPS;
	bpf_map_update_elem(&flows, &key, &val, BPF_ANY);
	return 1;
}

// record_dst writes a port key (saddr ::, the socket's port) or, when the
// socket has no port yet, a destination key (saddr ::, sport 0) for a UDP or
// ping socket about to connect or send.
//
// At sendmsg the port is always known: inet_sendmsg and inet6_sendmsg bind
// an unbound socket before udp(v6)_sendmsg runs the hook (measured on 6.18,
// and so since the hook exists). At connect it is known only when the
// application bound the socket first; otherwise the kernel picks it after
// the hook. A port key tells apart two sockets sending to one destination,
// which a destination key cannot: the later sender overwrites the earlier.
static __always_inline void record_dst(struct bpf_sock_addr *ctx, __u8 family, const __u32 d[4])
{
	struct flow_key key = {};
	struct flow_value val = {};
	__u32 proto = ctx->protocol;
	struct bpf_sock *sk = ctx->sk;

	if (proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE) { // UDP-Lite sends through udp_sendmsg
		key.dport = bpf_ntohs(ctx->user_port);
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		key.dport = 0;
	} else {
		return; // TCP is recorded with its full tuple by sockops_connect
	}
	key.proto = proto;
	key.family = family;
	__builtin_memcpy(key.daddr, d, 16);
	if (sk)
		key.sport = sk->src_port; // host order; 0 while unbound

	struct task_struct *t = bpf_get_current_task_btf();
	key.netns = task_netns(t);
	fill_task(&val, t);
	val.sk_cookie = bpf_get_socket_cookie(ctx);
	val.flags = FLOW_F_SOCKADDR;
	bpf_map_update_elem(&flows, &key, &val, BPF_ANY);
	if (key.sport == 0 && proto == IPPROTO_UDP) {
		// A destination key, shared with every other unbound socket
		// connecting there: also remember this socket's own entry.
		// (Ping sockets are not in sock_diag, so not for them.)
		bpf_map_update_elem(&sock_flows, &val.sk_cookie, &val, BPF_ANY);
	}
}

static __always_inline void record_dst4(struct bpf_sock_addr *ctx)
{
	__u32 d[4] = {0, 0, bpf_htonl(0x0000ffff), ctx->user_ip4};
	record_dst(ctx, AF_INET, d);
}

static __always_inline void record_dst6(struct bpf_sock_addr *ctx)
{
	__u32 d[4];
	d[0] = ctx->user_ip6[0];
	d[1] = ctx->user_ip6[1];
	d[2] = ctx->user_ip6[2];
	d[3] = ctx->user_ip6[3];
	record_dst(ctx, is_v4_mapped(d) ? AF_INET : AF_INET6, d);
}

// The sock_addr programs must always return 1: returning 0 would fail the
// application's connect()/sendmsg() with EPERM.

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	record_dst4(ctx);
	return 1;
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	record_dst6(ctx);
	return 1;
}

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	record_dst4(ctx);
	return 1;
}

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx)
{
	record_dst6(ctx);
	return 1;
}

// ---------------------------------------------------------------------------
// Exec tracking.

// mask_exe bounds x to [0, EXE_LEN) in a way the compiler cannot fold away,
// so that the verifier sees the bound on every buffer offset and size.
static __always_inline __u64 mask_exe(__u64 x)
{
	asm volatile("%[x] &= 255" : [x] "+r"(x));
	return x;
}

// Path building runs in bpf_loop callbacks: the verifier checks each
// callback once instead of every iteration of an unrolled walk, whose
// branches (component or mount crossing, truncated or not) would otherwise
// multiply into millions of states.

struct walk_ctx {
	__u64 d;  // struct dentry *
	__u64 vm; // struct vfsmount *
	__u64 m;  // struct mount *, container of vm
	__u64 off;
	__u32 n;
	__u32 flags;
	int state; // 0 walking, 1 reached the root, -1 failed
};

static long walk_step(__u64 i, struct walk_ctx *c)
{
	__u32 zero = 0;
	struct path_scratch *s = bpf_map_lookup_elem(&path_scratch_map, &zero);
	struct dentry *d = (void *)c->d;
	struct vfsmount *vm = (void *)c->vm;
	struct mount *m = (void *)c->m;

	if (!s) {
		c->state = -1;
		return 1;
	}
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	struct dentry *mnt_root = BPF_CORE_READ(vm, mnt_root);
	if (d == mnt_root) {
		struct mount *mp = BPF_CORE_READ(m, mnt_parent);
		if (mp == m || !mp) {
			c->state = 1; // root of the mount tree
			return 1;
		}
		c->d = (__u64)BPF_CORE_READ(m, mnt_mountpoint);
		c->m = (__u64)mp;
		c->vm = (__u64)mp + bpf_core_field_offset(struct mount, mnt);
		return 0;
	}
	if (d == parent || !parent) {
		c->state = -1; // disconnected dentry: no absolute path
		return 1;
	}
	__u32 n = s->n;
	if (n >= MAX_PATH_DEPTH) {
		c->flags |= EXEC_F_EXE_TRUNC;
		c->state = 1;
		return 1;
	}
	__u32 k = n & (MAX_PATH_DEPTH - 1);
	s->names[k] = (__u64)BPF_CORE_READ(d, d_name.name);
	s->lens[k] = BPF_CORE_READ(d, d_name.len);
	s->n = n + 1;
	c->d = (__u64)parent;
	return 0;
}

static long emit_step(__u64 j, struct walk_ctx *c)
{
	__u32 zero = 0;
	struct path_scratch *s = bpf_map_lookup_elem(&path_scratch_map, &zero);
	if (!s || j >= c->n)
		return 1;
	__u32 i = (c->n - 1 - j) & (MAX_PATH_DEPTH - 1);
	__u64 len = s->lens[i];
	__u64 off = c->off;
	if (off >= EXE_LEN - 1) {
		c->flags |= EXEC_F_EXE_TRUNC;
		return 1;
	}
	s->buf[mask_exe(off)] = '/';
	off++;
	if (len > EXE_LEN - 1 - off) {
		len = EXE_LEN - 1 - off;
		c->flags |= EXEC_F_EXE_TRUNC;
	}
	bpf_probe_read_kernel(&s->buf[mask_exe(off)], mask_exe(len), (void *)s->names[i]);
	c->off = off + len;
	return 0;
}

// build_exe_path writes the absolute path of f into s->buf and returns its
// length, or -1 when the walk failed. It walks dentries up to the root of
// their mount, crosses to the parent mount at mount points, and stops at the
// root of the mount tree (the root of the task's mount namespace, so paths
// inside containers are container paths).
static __always_inline int build_exe_path(struct path_scratch *s, struct file *f, __u32 *flags)
{
	struct walk_ctx c = {};
	struct vfsmount *vm = BPF_CORE_READ(f, f_path.mnt);

	c.d = (__u64)BPF_CORE_READ(f, f_path.dentry);
	c.vm = (__u64)vm;
	c.m = (__u64)vm - bpf_core_field_offset(struct mount, mnt);
	if (!c.d || !c.vm)
		return -1;
	s->n = 0;
	bpf_loop(MAX_WALK_STEPS, walk_step, &c, 0);
	if (c.state != 1)
		return -1; // failed, or ran out of steps
	c.n = s->n;
	bpf_loop(MAX_PATH_DEPTH, emit_step, &c, 0);
	if (c.n == 0) {
		s->buf[0] = '/';
		c.off = 1;
	}
	if (c.off > EXE_LEN - 1)
		c.off = EXE_LEN - 1;
	s->buf[mask_exe(c.off)] = 0;
	*flags |= c.flags;
	return c.off;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 zero = 0;
	struct exec_value *v = bpf_map_lookup_elem(&exec_scratch, &zero);
	struct path_scratch *s = bpf_map_lookup_elem(&path_scratch_map, &zero);
	if (!v || !s)
		return 0;

	v->tgid = BPF_CORE_READ(p, tgid);
	v->ppid = BPF_CORE_READ(p, real_parent, tgid);
	v->start_boottime = BPF_CORE_READ(p, group_leader, start_boottime);
	v->flags = 0;

	int n = build_exe_path(s, BPF_CORE_READ(bprm, file), &v->flags);
	if (n > 0) {
		bpf_probe_read_kernel(v->exe, EXE_LEN, s->buf);
		v->exe_len = n;
	} else {
		// Fall back to the name execve() was given; it may be relative.
		v->flags |= EXEC_F_EXE_FILENAME;
		const char *fn = BPF_CORE_READ(bprm, filename);
		long r = bpf_probe_read_kernel_str(v->exe, EXE_LEN, fn);
		v->exe_len = r > 0 ? r - 1 : 0;
	}
	v->exe[EXE_LEN - 1] = 0;
	struct inode *ei = BPF_CORE_READ(p, mm, exe_file, f_inode);
	v->exe_ino = BPF_CORE_READ(ei, i_ino);
	v->exe_dev = BPF_CORE_READ(ei, i_sb, s_dev);
	v->mnt_ns = BPF_CORE_READ(p, nsproxy, mnt_ns, ns.inum);

	unsigned long start = BPF_CORE_READ(p, mm, arg_start);
	unsigned long end = BPF_CORE_READ(p, mm, arg_end);
	__u64 len = end > start ? end - start : 0;
	if (len > ARGS_LEN) {
		len = ARGS_LEN;
		v->flags |= EXEC_F_ARGS_TRUNC;
	}
	v->args_len = 0;
	__u32 l = len;
	asm volatile("" : "+r"(l)); // keep the bound check below visible to the verifier
	if (l > ARGS_LEN)
		l = ARGS_LEN;
	if (l > 0 && bpf_probe_read_user(v->args, l, (void *)start) == 0)
		v->args_len = l;

	bpf_map_update_elem(&execs, &v->tgid, v, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	__u32 zero = 0;

	if (ptgid == ctgid)
		return 0; // a new thread, not a new process
	struct exec_value *pv = bpf_map_lookup_elem(&execs, &ptgid);
	if (!pv)
		return 0; // parent started before us; userspace reads /proc
	struct exec_value *v = bpf_map_lookup_elem(&exec_scratch, &zero);
	if (!v)
		return 0;
	if (bpf_probe_read_kernel(v, sizeof(*v), pv))
		return 0;
	v->tgid = ctgid;
	v->ppid = ptgid;
	v->start_boottime = BPF_CORE_READ(child, start_boottime);
	v->flags = (v->flags | EXEC_F_FORKED) & ~EXEC_F_EXITED;
	bpf_map_update_elem(&execs, &ctgid, v, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	__u32 tgid = BPF_CORE_READ(p, tgid);
	if (BPF_CORE_READ(p, pid) != tgid)
		return 0; // a thread other than the leader
	struct exec_value *v = bpf_map_lookup_elem(&execs, &tgid);
	if (v && v->start_boottime == BPF_CORE_READ(p, start_boottime))
		v->flags |= EXEC_F_EXITED; // benign race with on_fork: a lost bit only hides a hint
	return 0;
}
