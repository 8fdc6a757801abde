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
// # Gates
//
// A test that needs root, a tool or a kernel feature says so through
// RequireRoot, RequireTools or RequireKernelFeature, never with a check of
// its own, and one that builds and runs Bastion's programs without root
// through RequireE2E; they decide here whether it runs, skips or fails:
//
//   - -short (make unit-test): RequireE2E and RequireRoot skip, so every
//     end-to-end, eBPF and namespace test is left out, whatever BASTION_E2E
//     says.
//   - Not root: RequireRoot skips and says how to run the test. With
//     BASTION_E2E=1 it fails instead.
//   - A missing tool: RequireTools fails as root or with BASTION_E2E=1 (a
//     machine that runs these tests must have them, and
//     deploy/install-deps.sh test installs them), and skips otherwise.
//   - A kernel feature (package kernelfeature, the probes the agent reports
//     in its status): RequireKernelFeature skips when the running kernel
//     lacks it, with BASTION_E2E=1 too, because that is the truth about that
//     kernel; a probe that fails any other way fails the test, so a feature
//     the kernel has must work. That the probes tell the truth is itself
//     tested against the real programs (procid's TestDetect).
//
// BASTION_E2E=1 thus means one thing everywhere: a test that would skip for
// lack of root or of a tool fails.
//
// Trust boundary: none. This is test code run by root on a development or CI
// machine; its inputs come from the tests themselves.
package testenv
