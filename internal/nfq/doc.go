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
//   - NfQaCfgFlagFailOpen is NOT set by default. Without it the kernel drops
//     a packet that finds the queue full (Config.MaxLen packets awaiting a
//     verdict, read or not), and a packet whose message cannot be delivered
//     because the socket's receive buffer is full: such a packet is never
//     enqueued, so it never waits for a verdict that cannot come. With it,
//     both are accepted, unasked. SECURITY: a flood must not be a way around
//     the policy, so a queue that decides connections never sets FailOpen (a
//     dropped SYN is simply retransmitted). It suits only a queue whose
//     packets may pass unread, such as the agent's DNS answers. FailOpen has
//     nothing to do with iptables' --queue-bypass, which lets packets pass
//     only while no program is bound to the queue.
//   - The socket's receive buffer is set with SO_RCVBUFFORCE to
//     Config.ReadBuffer, so that a burst of packets waits in the queue
//     rather than being dropped for want of buffer before it is read.
//   - NETLINK_NO_ENOBUFS is set: if the socket buffer overflows anyway, the
//     kernel drops the packets whose messages did not fit (see above) and
//     does not also fail the next receive with ENOBUFS. go-nfqueue would
//     report that error to Run's error callback, which logs it and reads
//     on; nothing is lost either way, as a lost message's packet was never
//     enqueued.
package nfq
