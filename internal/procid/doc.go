// Package procid finds the process behind each new outbound connection.
//
// Three mechanisms exist, chosen at start-up by Open (MechAuto picks the best
// one the kernel offers and logs why others were skipped):
//
//   - netfilter-link (kernel >= 6.4): an eBPF program on NF_INET_LOCAL_OUT at
//     priority -199 (the first free one up to -151: just after conntrack's
//     -200, which a BPF hook may not share) in the attributed network
//     namespace records, for the first packet of every flow of any IP
//     protocol sent from a process's socket (raw sockets included; kernel
//     sockets, which have no file, send for no process and are skipped),
//     the task that sent it. It runs before iptables, so the entry exists by the time the
//     packet reaches the NFQUEUE. It walks up to 8 IPv6 extension headers
//     (Hop-by-Hop, Routing, Destination Options, AH, a first Fragment) and
//     reads the same tuple from the same bytes as internal/packet, which the
//     tests check by running its parser on crafted packets (nf_parse_test).
//     It also copies each record into recent_flows, a small direct-mapped
//     array that the agent maps read-only into memory: Resolve reads a
//     queued packet's flow from there with a few loads (a seqlock per slot)
//     and asks the flows map with a bpf() syscall only when the slot holds
//     another flow or is being written. ~0.3 us instead of ~2 us per
//     lookup here, and the lookup is on every queued packet's path.
//   - sockops: cgroup sockops (TCP, full tuple at connect) plus cgroup
//     connect4/6 and sendmsg4/6 (UDP and ping sockets, UDP-Lite at sendmsg
//     only; no hook runs for raw sockets; keyed without the
//     source address, which is not chosen yet: by source port and
//     destination when the socket has a port, which it always has at sendmsg,
//     else by destination alone). Unbound UDP sockets connected to one
//     destination share that key; while a flow's socket is open, sock_diag
//     gives its cookie and connect's entry for that cookie names the
//     process, and once it is closed the later connect wins. Covers only
//     processes in the configured cgroup and its descendants.
//   - procfs: no eBPF; sock_diag finds the socket (TCP, UDP, UDP-Lite),
//     /proc/net/icmp{,6} a ping socket and /proc/net/raw{,6} a raw one (if
//     only one fits), and a /proc/*/fd scan its holder (package procfs). Slow, and blind to processes that exit before
//     the scan.
//
// With both eBPF mechanisms, tp_btf programs on sched_process_exec/fork/exit
// keep each process's executable path and argv in a map keyed by TGID, so a
// process that exits right after connect() can still be named. Processes
// started before the agent are completed from /proc.
//
// # Trust boundary
//
// SECURITY: the kernel programs take PID, UID, GID, start time, netns and the
// executable path from kernel structures the process cannot forge. Comm and
// argv are chosen by the process (and argv can be rewritten after exec); they
// are display text only and must be escaped before showing and never decide a
// verdict alone. Exe is the path of the file that was executed, resolved from
// its dentry (not the string passed to execve); the file at that path may
// have been replaced since. TGIDs are those of the initial PID namespace, so
// the agent must run there for the /proc fallback to read the right process.
//
// Packets seen by the netfilter program may be crafted by a local raw-socket
// user; the program only copies header fields into map keys. Such a user can
// create misleading entries only for tuples it sends itself.
//
// The maps are readable and writable by root (CAP_BPF) only; anyone with that
// privilege can already do anything to the firewall. The agent maps
// recent_flows read-only.
package procid
