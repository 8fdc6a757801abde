// Package procfs identifies the process behind a network flow without eBPF,
// and reads process identities from /proc for every other mechanism too.
//
// ReadProcess turns a TGID into a flow.Process by reading
// /proc/<tgid>/{stat,status,comm,cmdline,exe}. Resolver is the fallback for
// kernels where no eBPF mechanism loads: it asks the kernel through
// NETLINK_SOCK_DIAG (inet_diag) which socket carries a flow, which gives the
// socket's inode and owning UID, then finds the process holding that inode
// by scanning /proc/*/fd.
//
// # Trust boundary
//
// SECURITY: almost everything read from /proc about another user's process
// is chosen by that process. cmdline (argv) can hold any bytes, including
// newlines, terminal escapes and text that imitates other fields; comm is set
// freely with prctl(PR_SET_NAME) and may impersonate any program; a file
// named "x (deleted)" is indistinguishable from a deleted "x". Only the
// values the kernel sets on its own are trustworthy: PID, PPID, the
// real UID/GID and the exe link (a process cannot fake which file it runs,
// though the file at that path may have been replaced since). Callers must
// treat Comm and Args as untrusted display text, escape them before showing
// them, and never base a security decision on them alone.
//
// The parsers here never trust the shape of their input either: malformed
// files give errors, never panics, and reads are bounded.
//
// sock_diag replies come from the kernel and are parsed bounds-checked all
// the same.
//
// # Races
//
// A process can exit and its PID be reused between any two reads. ReadProcess
// reads stat before and after the other files and fails if the start time
// changed; Resolver re-checks after ReadProcess that the process still holds
// the socket. What remains is the window inherent to any /proc method: the
// socket can be handed to another process (fd passing, fork) at any time, and
// the answer names one of its holders.
package procfs
