// Package agent is bastion-agent, the privileged half of Bastion: it holds the
// first packet of every new outbound connection in an NFQUEUE, names the
// process that sent it, and releases it with a verdict from the rules its
// UID's rules service set, the cache, the system policy, an answer given
// through its gRPC API, or the deadline.
//
// Trust boundary: packet bytes are attacker-controlled (parsed in
// internal/packet); API callers are local users, identified by SO_PEERCRED
// and allowed to see and decide only the connections of their own UID, and
// to set only their own UID's rules (root sees and sets all). Every held packet gets a verdict: from a decision, from
// its deadline, or at shutdown.
package agent
