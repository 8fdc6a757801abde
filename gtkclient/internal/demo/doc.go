// Package demo holds realistic sample prompts, rules, history and
// decide-later entries for the in-memory rules service
// (internal/testenv/fakeui), and starts the Xvfb that bastion-gtk's tests
// and `make screenshots` draw on. It is never shipped.
package demo
