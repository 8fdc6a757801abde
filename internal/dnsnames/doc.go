// Package dnsnames learns destination host names from DNS answers: Parse
// reads the A and AAAA records of a UDP DNS response captured by NFQUEUE;
// Queries remembers who sent each DNS query the agent saw leave (UID,
// process, socket, message IDs, per UDP flow), so that an answer can be
// bound to the owner of the query it answers; and Cache maps each answered
// address, per owner, to the name the application asked for, for as long
// as the answer's TTL (clamped) says, plus a grace period.
//
// Trust boundary: every byte handed to Parse is attacker-controlled (any
// host that can send a UDP packet from port 53 to this machine, and any DNS
// server on the path, chooses what it says). Parse never panics, bounds
// what it keeps from one packet, and rejects names that are not plain host
// names. The owners given to Queries.Sent come from the kernel (the
// socket's UID in the queue metadata) and are trusted.
//
// SECURITY: a name is looked up only for the owner whose query it answered
// (or for everyone, when the caller says the query came from a trusted
// resolver): one user's DNS server cannot name another user's connections.
// The names remain hints, not proof: the DNS server a user asks can claim
// any name for any address, so that user's host rules can be made to match
// a connection to an address that never belonged to that name. The names
// never widen what an address-based rule allows; they only let host rules
// match and let prompts show a name. Every client still shows a name
// through internal/inert, like any untrusted string; FuzzParse checks that
// a learnt name is one inert leaves unchanged.
package dnsnames
