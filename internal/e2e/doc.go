// Package e2e holds Bastion's end-to-end tests: the real bastion-agent
// binary, with its real NFQUEUE, iptables rules and eBPF programs, in a
// fresh network namespace per test, deciding the connections of real
// clients (curl, wget, nc, ping sockets and a Go dialer) run as UIDs 0,
// 1000 and 1001, and driven through its gRPC API, bastionctl and grpcurl.
//
// The tests need root. Run them with
//
//	sudo go test -count=1 ./internal/e2e/
//
// Not root, they skip; as root (or with BASTION_E2E=1) a missing tool or
// capability fails them.
//
// # Identification mechanisms
//
// BASTION_E2E_MECHANISM (netfilter-link, sockops or procfs) makes every agent
// the suite starts use that mechanism (--mechanism); empty or "auto" leaves
// the agent's choice, the best the kernel offers. `make test` runs the suite
// once with auto (netfilter-link on a kernel >= 6.4) and then once per
// fallback (make e2e-mechanisms), which stand in for Debian 12's kernel 6.1
// (sockops) and kernels without usable eBPF (procfs):
//
//	sudo BASTION_E2E_MECHANISM=sockops go test -count=1 ./internal/e2e/
//
// Each test applies the assertions that hold for the run's mechanism
// (mechanismCanSee) and logs, naming the mechanism, what it cannot see.
// Tests that select their mechanisms themselves, or whose subject does not
// depend on the mechanism, run in the auto run only (requireAutoRun). A
// mechanism the kernel lacks skips the run's tests with the kernel's
// reason.
//
// Trust boundary: none. This is test code run by root on a development or CI
// machine; everything it starts it ends by PID, and it touches only the
// network namespaces and cgroups it creates.
package e2e
