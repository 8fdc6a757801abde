// Package agent is bastion-agent, the privileged half of Bastion: it holds the
// first packet of every new outbound connection in an NFQUEUE, names the
// process that sent it, and releases it with a verdict from the rules its
// UID's rules service set, the cache, the system policy, an answer given
// through its gRPC API, or the deadline. From a second queue it reads UDP
// DNS answers (internal/dnsnames), re-injecting each at once, to name each
// connection's destination for host rules and prompts.
//
// It also counts what the connections it allowed carry (traffic.go): bytes
// and packets from the kernel's conntrack accounting, read every
// traffic_interval and at each entry's destruction, attributed to the
// process the decision named and streamed with WatchTraffic.
//
// Trust boundary: packet bytes are attacker-controlled (parsed in
// internal/packet and internal/dnsnames), and so are the host names learnt
// from DNS: hints that let host rules match, never proof of who owns an
// address; API callers are local users, identified by SO_PEERCRED
// and allowed to see and decide only the connections of their own UID, and
// to set only their own UID's rules (root sees and sets all). Every held packet gets a verdict: from a decision, from
// its deadline, or at shutdown.
package agent
