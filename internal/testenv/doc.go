// Package testenv builds the real environment that Bastion's end-to-end
// tests and benchmarks run in: network namespaces with working IPv4 and IPv6
// loopback, servers inside them, real programs (curl, wget, nc, ping, a Go
// dialer) run as chosen UIDs inside them, cgroup v2 children, and the agent
// and the rules service themselves (StartAgent, StartUIServer: the one way
// every test and the benchmark start them), with clients that connect as a
// chosen user (ClientAs). Subpackage fakeui is an in-memory rules service
// for the clients' tests.
//
// Everything it creates is uniquely named and removed at cleanup; it never
// changes the host's own network namespace, and it only ends processes it
// started, by PID. Waits are on conditions with deadlines (WaitFor), never
// fixed sleeps.
//
// Trust boundary: none. This is test code run by root on a development or CI
// machine; its inputs come from the tests themselves.
package testenv
