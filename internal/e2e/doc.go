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
// Trust boundary: none. This is test code run by root on a development or CI
// machine; everything it starts it ends by PID, and it touches only the
// network namespaces and cgroups it creates.
package e2e
