// Package fw installs and removes Bastion's own iptables and ip6tables rules
// (filter table) in a network namespace, and takes normalized snapshots of
// the namespace's ruleset.
//
// Install inserts one jump rule at the top of OUTPUT and fills the chain
// Config.Chain (default BASTION-OUT), in order:
//
//  0. packets of established connections, and packets related to them,
//     return at once, except TCP SYNs: a connection got past its first
//     packet only if it was allowed, so most packets cost one rule;
//  1. packets marked Own return (the agent's own sockets, SO_MARK);
//  2. unless InterceptLoopback, loopback traffic returns; with DNSQueueNum
//     set, DNS queries on loopback (UDP to port 53, ctstate NEW, no verdict
//     mark) first go to NFQUEUE DNSQueueNum, always with --queue-bypass, so
//     that the agent sees which user asked a local stub resolver; it
//     re-injects each at once with the Allow mark;
//  3. a packet that carries a verdict mark in Marks.Mask — set by the agent
//     when it re-injects a queued packet with NF_REPEAT — has the mark saved
//     on its connection (CONNMARK --save-mark);
//  4. a TCP SYN without a verdict mark goes to NFQUEUE Config.QueueNum,
//     whatever conntrack remembers of its 4-tuple: an earlier connection
//     that ended without conntrack seeing its reset would otherwise lend
//     the new one its state and its connmark;
//  5. connections marked Allow return to OUTPUT (the user's own rules still
//     apply), Deny drops, Reject answers with a TCP reset or ICMP port
//     unreachable (the answer itself, ctstate RELATED, is let through);
//  6. new UDP flows and new ICMP echo requests go to NFQUEUE
//     Config.QueueNum;
//  7. what is left has no connection that carries a verdict: a verdict
//     re-injected on such a packet acts on its packet mark (Allow returns,
//     Reject rejects, any other mark drops);
//  8. TCP returns (asked at its SYN, step 4), and so do the kernel's own
//     packets: no socket, or a kernel socket without a file (xt_owner);
//  9. everything else goes to NFQUEUE Config.QueueNum: the first packet of
//     every other protocol (UDP-Lite, SCTP, GRE, any number), ICMP types
//     other than echo, and each packet conntrack calls INVALID or
//     UNTRACKED.
//
// Every NFQUEUE rule has --queue-bypass when FailOpen.
//
// With Config.DNSQueueNum set, Install also fills Config.InputChain (default
// BASTION-IN) in the mangle table and jumps to it from the top of mangle
// INPUT for UDP from port 53 only, so that every other packet the host
// receives (on loopback, every packet it sends too) costs one failed match:
// UDP packets from source port 53 of a tracked flow (answers to
// queries this host sent, loopback included, so a local stub resolver's
// answers count) go to NFQUEUE DNSQueueNum, always with --queue-bypass, and packets carrying the Allow mark return. The agent
// reads each answer and re-injects it at once with NF_REPEAT and the Allow
// mark, so it then walks the rest of mangle INPUT and the filter table like
// any other packet. Mangle, not filter: a bypassed packet (no agent) moves
// on to the next table, and the administrator's filter INPUT rules must
// still see it.
//
// Only the first packet of a connection is queued; once Allow is saved on the
// connection, later packets return at step 0 (or, for a UDP flow not yet
// answered, at step 5) without leaving the kernel. A retransmitted SYN is
// queued again (step 4), and the agent answers it from its own verdict of
// the first. Deny and Reject drop the packet before conntrack confirms the
// connection, so the connmark does not outlive that packet.
//
// Rules are applied with one iptables-restore --noflush transaction per
// family. Install is idempotent and also repairs what a crashed agent left
// behind: the chain is flushed and rebuilt and the jump rule ends up present
// exactly once, at position 1. Remove deletes exactly the jump rules and the
// chain, and never flushes OUTPUT or touches other rules.
//
// Commands run as "nsenter --net=/run/netns/NAME iptables ...", so only the
// network namespace changes: the process stays in the root mount namespace
// (unlike "ip netns exec", which remounts /sys), and the xtables lock
// (/run/xtables.lock, taken with -w) is the host's.
//
// Trust boundary: the caller (the agent, running as root) is trusted; the
// configuration is validated and every value is formatted by this package, so
// nothing reaches iptables unquoted from elsewhere. SECURITY: the rules trust
// packet marks in Marks.Mask, which only processes with CAP_NET_ADMIN (or,
// since Linux 5.17, CAP_NET_RAW) can set with SO_MARK, and mangle-table rules
// can set. A mask that another tool on the host also uses for its marks would
// let its packets skip or hit Bastion's verdicts; the default 0x0F000000
// avoids the ranges used by common tools (WireGuard, Tailscale, Docker,
// Kubernetes).
package fw
