// Package cgroup2 finds where the cgroup v2 hierarchy is mounted, from
// /proc/self/mountinfo: /sys/fs/cgroup on most systems, /sys/fs/cgroup/unified
// on hybrid ones. The agent attaches its sockops and sock_addr programs
// there; the tests make their cgroups under it.
//
// Trust boundary: mountinfo is written by the kernel, but mount points are
// chosen by whoever mounted them (root, or a user in their own mount
// namespace); they are parsed as data and only their octal escapes undone.
package cgroup2
