// Package conntrack looks up, deletes, dumps and watches entries of the
// kernel's connection tracking table over ctnetlink (NETLINK_NETFILTER),
// inside one network namespace, and switches its accounting
// (nf_conntrack_acct) there.
//
// The agent uses it to make a UDP flow "new" again once the socket that sent
// it is gone: Bastion's iptables chain lets later packets of a flow pass on
// the verdict saved on its conntrack entry (ctstate ESTABLISHED, or the
// connmark), so an entry that outlives its socket would hand that verdict to
// whichever socket reuses the exact 5-tuple next. And it uses it to count
// what allowed connections carry: a Dumper reads every entry's original
// tuple, counters, TCP state and time left, Get one entry's, and a
// DestroyWatcher the final counters of entries as they go (used only when
// the dumps are too far apart to see every end, see ShortestEnd).
//
// Only the default conntrack zone (0) is addressed.
//
// Trust boundary: the tuples come from the agent (packets it queued, sock_diag
// messages from the kernel); replies and notifications come from the kernel
// and are parsed bounds-checked (every attribute length is checked before it
// is read). Deleting and dumping entries and subscribing to notifications
// need CAP_NET_ADMIN in the namespace.
package conntrack
