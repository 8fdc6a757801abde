// Package procinfo describes the processes and ports that prompt clients
// show to people: the service name of a port from /etc/services, the
// parent of a process from /proc, and user names. bastionctl's terminal
// prompt and bastion-gtk share it so that both show the same details.
//
// Trust boundary: everything here is best effort and for display only.
// /proc entries of other users' processes may be unreadable or vanish
// between two reads; /etc/services is parsed leniently. Nothing read here
// ever decides a connection.
package procinfo
