// Package testenv builds the real environment that Bastion's end-to-end
// tests and benchmarks run in: network namespaces with working IPv4 and IPv6
// loopback, servers inside them, real programs (curl, wget, nc, ping, a Go
// dialer) run as chosen UIDs inside them, and cgroup v2 children.
//
// Everything it creates is uniquely named and removed at cleanup; it never
// changes the host's own network namespace, and it only ends processes it
// started, by PID. Waits are on conditions with deadlines (WaitFor), never
// fixed sleeps.
//
// Trust boundary: none. This is test code run by root on a development or CI
// machine; its inputs come from the tests themselves.
package testenv
