// Package sockdiag talks to the kernel's socket diagnostics
// (NETLINK_SOCK_DIAG, inet_diag) about UDP sockets, inside one network
// namespace: it receives the notifications the kernel multicasts when a UDP
// socket is destroyed (SKNLGRP_INET_UDP_DESTROY, SKNLGRP_INET6_UDP_DESTROY;
// joining them needs CAP_NET_ADMIN) and asks which live socket owns a UDP
// flow's local end.
//
// What a destroy notification carries, as measured on Linux 6.18: the
// socket's family, local and remote address and port (remote all zero for an
// unconnected socket), bound interface, socket cookie and protocol. It does
// NOT carry the inode or the owner's UID: the kernel builds it from a
// workqueue after the socket was orphaned, and both read as 0. The
// notification is sent once the socket is freed, that is after close() and
// after the last of its packets left the host (a packet held in an NFQUEUE
// keeps its socket alive), while its port was released at close(): a new
// socket can bind the port before the notification is out.
//
// Trust boundary: messages come from the kernel, over a socket only the
// kernel can send multicast on, and are parsed bounds-checked all the same.
// The addresses in them are those of other users' sockets and must be treated
// as data, not as instructions.
package sockdiag
