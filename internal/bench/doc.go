// Package bench measures what Bastion costs on new outbound connections, on
// this machine, in one run: a baseline with no firewall, the ceiling of a bare
// NFQUEUE whose Go program accepts everything, and the agent itself (cached
// decision, and each connection answered through its API), plus how well the
// agent attributes connections of short-lived processes and what it costs in
// memory and CPU. Ratios are always between numbers of the same run.
//
// Everything runs in network namespaces the benchmark creates and deletes;
// the host's own namespace is never touched.
//
// Trust boundary: none. Run by root on a development machine.
package bench
