// Package nfq receives the packets that Bastion's iptables rules send to an
// NFQUEUE and returns verdicts for them. It receives through
// github.com/florianl/go-nfqueue/v2, parses each packet with
// internal/packet, and writes the verdicts to the queue's socket itself
// (one small datagram; see Queue.verdict).
//
// The kernel holds every queued packet until a verdict arrives: Accept lets
// it continue, Drop discards it, and Repeat re-injects it at the start of the
// same hook carrying a packet mark, so that iptables rules installed by
// internal/fw act on (and persist, with CONNMARK) the decision.
//
// Trust boundary: the netlink socket is only reachable with CAP_NET_ADMIN, so
// the metadata the kernel attaches (packet ID, mark, socket UID/GID) is
// trusted. The packet bytes are not: they are parsed by internal/packet and a
// parse failure is reported in Packet.ParseErr, never acted on as a tuple.
// SECURITY: a packet whose ParseErr is set should be denied by the caller;
// Bastion is fail-closed for what it cannot read.
//
// Choices:
//   - Copy mode "packet" with a CopyLen-byte copy range: the agent needs the
//     headers only, and copying less keeps the netlink socket from overflowing.
//   - NfQaCfgFlagUIDGid: the kernel reports the owning socket's UID/GID.
//   - NfQaCfgFlagGSO: GSO packets are queued whole instead of being segmented
//     first; only headers are read, so segmenting would be wasted work. Such a
//     packet's IP length field may be zero or exceed the capture, which
//     internal/packet tolerates.
//   - NfQaCfgFlagFailOpen is NOT set by default: when the queue is full
//     (Config.MaxLen packets awaiting a verdict) the kernel drops new packets
//     rather than letting them bypass the firewall. A flood must not be a way
//     around the policy; a dropped SYN is simply retransmitted. Config.FailOpen
//     turns it on for those who prefer availability.
//   - NETLINK_NO_ENOBUFS is set: if the socket buffer overflows the kernel
//     drops the message (and, queue-side, the packet stays held until the
//     queue is full or the socket closes) instead of failing every receive.
package nfq
