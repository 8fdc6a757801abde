// Package packet parses the IP packets that NFQUEUE hands to Bastion: raw
// IPv4 or IPv6 packets without a link-layer header, often cut short by the
// queue's copy range so that only the headers are present.
//
// Parse extracts the flow tuple (protocol, addresses, ports or ICMP echo
// identifier) and a little per-packet information (TCP flags, ICMP type and
// code) that the agent needs to decide about a new connection.
//
// Trust boundary: packet bytes here are attacker-controlled. A local,
// unprivileged program can put almost any bytes on the wire with a raw or
// packet socket only with CAP_NET_RAW, but the payload and many header fields
// of ordinary packets are still chosen by the sender and, for forwarded or
// looped-back traffic, by remote peers. Parse therefore never trusts a length
// field without checking it against the bytes actually present, bounds every
// loop (IPv6 extension headers), never panics and does not allocate on
// success. Every failure is a wrapped error that names the layer, for example
// "packet: truncated IPv4 header: have 12 of 20 bytes", and matches one of
// the sentinel errors with errors.Is.
//
// Fragments: conntrack reassembles fragments before the OUTPUT hook, so NFQUEUE
// normally sees whole packets. If a non-first fragment does arrive it carries
// no transport header: Parse returns the tuple with addresses and protocol but
// zero ports, sets Info.Fragment, and returns an error matching ErrFragment so
// that a caller cannot mistake port 0 for a real flow.
package packet
