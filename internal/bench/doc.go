// Package bench measures what Bastion costs on new outbound connections, on
// this machine, in one run: a baseline with no firewall, the ceiling of a bare
// NFQUEUE whose Go program accepts everything (behind three rule sets: the
// first packets of new flows, the mechanism's ceiling; TCP SYNs only, without
// connection tracking; Bastion's own chain), and the agent itself (cached
// decision, and each connection answered through its API), plus how well the
// agent attributes connections of short-lived processes and what it costs in
// memory and CPU, and how long a connection's first packet takes to become a
// prompt at a user's prompt client (agent, bastion-uiserver run as UID 1000,
// a WatchPrompts client connected as that user). The kernel-decision rounds
// (kernel.go) measure connections that a remembered decision covers, decided
// in the kernel, with one dialer program (loopdialer) run in the agent's
// cgroup, against no firewall, a bare queue and an agent with kernel
// decisions off; the kernel's own counters prove the kernel decided them.
// Ratios are always between numbers of the same run.
//
// Everything runs in network namespaces the benchmark creates and deletes;
// the host's own namespace is never touched.
//
// Trust boundary: none. Run by root on a development machine. DialUnixAs
// changes the credentials of one locked thread of the (root) process for the
// length of a connect() and restores them before that thread runs anything
// else.
package bench
