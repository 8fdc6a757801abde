// Package dnsnames learns destination host names from DNS answers: Parse
// reads the A and AAAA records of a UDP DNS response captured by NFQUEUE,
// and Cache maps each answered address to the name the application asked
// for, for as long as the answer's TTL (clamped) says, plus a grace period.
//
// Trust boundary: every byte handed to Parse is attacker-controlled (any
// host that can send a UDP packet from port 53 to this machine, and any DNS
// server on the path, chooses what it says). Parse never panics, bounds
// what it keeps from one packet, and rejects names that are not plain host
// names. SECURITY: the names it learns are hints, not proof: a DNS server
// can claim any name for any address, so a host rule can be made to match a
// connection to an address that never belonged to that name. The names
// never widen what an address-based rule allows; they only let host rules
// match and let prompts show a name. Every client still shows a name
// through internal/inert, like any untrusted string; FuzzParse checks that
// a learnt name is one inert leaves unchanged.
package dnsnames
