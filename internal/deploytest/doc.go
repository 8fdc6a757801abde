// Package deploytest tests what ships: deploy/run.sh (`sudo make run`), the
// systemd units and the capability set they grant, `make install` /
// `make uninstall`, the Debian package (`make deb`) and its maintainer
// scripts, and every runnable command in README.md and docs/.
//
// It has no non-test code. The tests run the real scripts and binaries,
// each agent inside a network namespace the test creates; as root they must
// run (BASTION_E2E=1 makes a skip a failure), not as root the root-only
// ones skip and say how to run them.
//
// Trust boundary: none of its own; it exercises the agent's (root, packets
// and API callers untrusted) and the rules service's (one user) from the
// outside, as an administrator and a user would.
package deploytest
