// Package conntrack looks up and deletes entries of the kernel's connection
// tracking table over ctnetlink (NETLINK_NETFILTER), inside one network
// namespace.
//
// The agent uses it to make a UDP flow "new" again once the socket that sent
// it is gone: Bastion's iptables chain lets later packets of a flow pass on
// the verdict saved on its conntrack entry (ctstate ESTABLISHED, or the
// connmark), so an entry that outlives its socket would hand that verdict to
// whichever socket reuses the exact 5-tuple next.
//
// Only the default conntrack zone (0) is addressed.
//
// Trust boundary: the tuples come from the agent (packets it queued, sock_diag
// messages from the kernel); replies come from the kernel and are parsed
// bounds-checked. Deleting entries needs CAP_NET_ADMIN in the namespace.
package conntrack
