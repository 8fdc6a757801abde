// Package netns opens network namespaces and runs code inside one without
// leaving the root mount namespace.
//
// `ip netns exec` remounts /sys and so hides the cgroup v2 mount; Bastion
// instead enters a namespace per OS thread (Do) or hands its file descriptor
// to APIs that take one (go-nfqueue's Config.NetNS, exec via Command).
//
// Trust boundary: the namespace name comes from root's own configuration.
package netns
