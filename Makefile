# Bastion's build. `sudo make run` and `sudo make test` install what they
# need first (deploy/install-deps.sh); everything else expects Go on PATH.

SHELL      := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO         ?= go
BIN        := bin
TOOLBIN    := $(CURDIR)/.tools
NETNS      ?=
AGENT_ARGS ?=
# Root end-to-end tests share the kernel's netfilter and BPF state; one
# package at a time keeps their timing honest on a 2-core machine. They
# build and run the programs themselves, which go test's result cache does
# not see: -count=1 never reports a cached pass.
TEST_FLAGS ?= -count=1 -p 1 -timeout 40m

.PHONY: help all build generate generate-bpf generate-proto test e2e-mechanisms unit-test deps deps-test bench run fmt-check lint clean gtk-test screenshots install uninstall deb units-verify deb-check docs-test attack

all: build ## the default: build

# `make help` lists every target with the line after its `##`.
help: ## list the targets, one line each
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-zA-Z0-9_-]+):.*## (.*)$$/\1\t\2/' | \
		awk -F'\t' '{ printf "  %-16s %s\n", $$1, $$2 }'

# $(call own-clone,PATHS): run as root (sudo make ...) in a clone that a
# person owns, gives PATHS, where inside the clone, back to that person, so
# that a later `make build` or `make deb` as that person still works.
own-clone = if [ "$$(id -u)" = 0 ] && o=$$(stat -c %u:%g $(CURDIR)) && [ "$${o%%:*}" != 0 ]; then \
	for p in $(1); do case $$(realpath -m "$$p")/ in $(CURDIR)/?*) [ ! -e "$$p" ] || chown -R "$$o" "$$p";; esac; done; fi

# Everything builds without cgo except bastion-gtk, which links GTK 3
# (libgtk-3-dev); without it, bastion-gtk is skipped with a note.
build: ## build the programs into bin/ (bastion-gtk when GTK 3 headers are installed)
	@trap '$(call own-clone,$(BIN))' EXIT; set -e; \
	echo "CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/..."; \
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ $$($(GO) list ./cmd/... | grep -v '/cmd/bastion-gtk$$'); \
	if pkg-config --exists gtk+-3.0 2>/dev/null; then \
		echo "CGO_ENABLED=1 $(GO) build -trimpath -buildmode=pie -o $(BIN)/ ./cmd/bastion-gtk"; \
		CGO_ENABLED=1 $(GO) build -trimpath -buildmode=pie -o $(BIN)/ ./cmd/bastion-gtk; \
	else echo "build: skipping bastion-gtk: GTK 3 headers missing (apt-get install libgtk-3-dev)"; fi

# Tools pinned by version and built with Go from the module proxy into
# .tools/ on first use (`go install tool@version` builds each with the
# dependencies its own go.mod names), so nothing else is downloaded.
# protoc-gen-go, protoc-gen-go-grpc and bpf2go are pinned in go.mod (its
# `tool` block) and run with `go tool`. staticcheck v0.8.2 is 2026.2.2, which
# supports Go 1.26.
BUF_VERSION         := v1.75.0
STATICCHECK_VERSION := v0.8.2
BUF                 := $(TOOLBIN)/buf-$(BUF_VERSION)/buf
STATICCHECK         := $(TOOLBIN)/staticcheck-$(STATICCHECK_VERSION)/staticcheck

$(BUF):
	GOBIN=$(@D) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION); rc=$$?; $(call own-clone,$(TOOLBIN)); exit $$rc

$(STATICCHECK):
	GOBIN=$(@D) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); rc=$$?; $(call own-clone,$(TOOLBIN)); exit $$rc

# Regenerates committed code: the eBPF objects (needs clang-14, llvm-strip-14,
# libbpf-dev) and the protobuf/gRPC code (buf, which compiles the .proto
# files itself: no protoc, and the generated headers name no protoc version).
generate: generate-bpf generate-proto ## regenerate the committed eBPF objects and protobuf code

generate-bpf: bpf-toolchain ## regenerate the eBPF objects (clang-14)
	$(GO) generate ./internal/procid/ ./internal/kdecide/

generate-proto: $(BUF) ## regenerate the protobuf and gRPC code (buf)
	$(BUF) generate

# The eBPF compiler is pinned: the committed objects are byte for byte what
# clang 14.0.6 (Debian 12's clang-14) and llvm-strip-14 compile from
# bpf/procid.c; another clang may emit other bytes. internal/procid/gen.go
# names the same binaries. Checked: the checkout's path and libbpf-dev's
# headers (1.1.2 of Debian 12, 1.3 of Ubuntu 24.04, 1.5) change nothing.
BPF_CLANG         := clang-14
BPF_CLANG_VERSION := 14.0.6
BPF_STRIP         := llvm-strip-14

.PHONY: bpf-toolchain check-generate
bpf-toolchain: ## check for the pinned eBPF compiler (clang 14.0.6)
	@v=$$($(BPF_CLANG) --version 2>/dev/null | head -n1); \
	case "$$v" in *"clang version $(BPF_CLANG_VERSION)"*) ;; *) \
		echo "bpf-toolchain: the committed eBPF objects are what clang $(BPF_CLANG_VERSION) ($(BPF_CLANG), Debian 12's) compiles; found: $${v:-no $(BPF_CLANG)}" >&2; \
		echo "bpf-toolchain: apt-get install clang-14 llvm-14 libbpf-dev (or: sudo ./deploy/install-deps.sh test)" >&2; \
		exit 1;; esac
	@command -v $(BPF_STRIP) >/dev/null || { echo "bpf-toolchain: $(BPF_STRIP) missing: apt-get install llvm-14" >&2; exit 1; }
	@[ -e /usr/include/bpf/bpf_helpers.h ] || { echo "bpf-toolchain: libbpf headers missing: apt-get install libbpf-dev" >&2; exit 1; }

# Fails, naming each file, where regenerating the protobuf code and the eBPF
# objects from source gives anything but what the working tree holds (in a
# clean clone, as in CI: what is committed). It regenerates in a temporary
# copy, so uncommitted edits are never touched (deploy/check-generate.sh).
check-generate: bpf-toolchain $(BUF) ## fail where regenerated code differs from the committed code
	TOOLBIN=$(TOOLBIN) ./deploy/check-generate.sh

deps: ## as root: install what running Bastion needs
	@if [ "$$(id -u)" = 0 ]; then ./deploy/install-deps.sh run; fi

deps-test: ## as root: install what building and testing need
	@if [ "$$(id -u)" = 0 ]; then ./deploy/install-deps.sh test; fi

# go vet and staticcheck over every package, tests and bastion-gtk's cgo
# (GTK headers: libgtk-3-dev) included, and buf lint over the .proto files
# (buf.yaml says which of its rules the existing API is exempt from).
lint: $(STATICCHECK) $(BUF) ## go vet, staticcheck and buf lint
	$(GO) vet ./...
	$(STATICCHECK) ./...
	$(BUF) lint

fmt-check: ## fail on Go files gofmt would change
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi

# Unit tests, fuzz seed corpora, eBPF tests and, as root, the end-to-end
# tests in their own network namespaces, first with the identification
# mechanism the agent picks (auto: netfilter-link on kernel >= 6.4), then
# once per fallback (e2e-mechanisms). Not root: the root-only tests skip
# and say so. BASTION_E2E=1 means one thing everywhere: a test that would
# skip for lack of root or of a tool fails instead. A kernel feature the
# running kernel lacks still skips (internal/testenv/doc.go, "Gates").
test: deps-test fmt-check lint check-generate ## every check and test (as root: eBPF and end-to-end too)
	$(GO) test $(TEST_FLAGS) ./...
	@$(MAKE) --no-print-directory e2e-mechanisms

# The end-to-end suite again with each fallback mechanism forced
# (BASTION_E2E_MECHANISM, see internal/e2e/doc.go): sockops stands in for
# Debian 12's kernel 6.1, procfs for kernels without usable eBPF. Each run
# starts with TestMechanismOffered; where it skips (the kernel lacks the
# mechanism, or not root) the run is skipped with its reason.
E2E_MECHANISMS ?= sockops procfs
e2e-mechanisms: ## the end-to-end tests again with each fallback identification mechanism
	@for m in $(E2E_MECHANISMS); do \
		start=$$(date +%s); \
		probe=$$(BASTION_E2E_MECHANISM=$$m $(GO) test -count=1 -v -run '^TestMechanismOffered$$' ./internal/e2e/ 2>&1) \
			|| { echo "$$probe"; exit 1; }; \
		if grep -q -- '--- SKIP: TestMechanismOffered' <<<"$$probe"; then \
			echo "== internal/e2e with BASTION_E2E_MECHANISM=$$m: skipped:"; \
			grep -B1 -- '--- SKIP: TestMechanismOffered' <<<"$$probe" | head -1; \
			continue; \
		fi; \
		echo "== internal/e2e with BASTION_E2E_MECHANISM=$$m"; \
		BASTION_E2E_MECHANISM=$$m $(GO) test -count=1 $(TEST_FLAGS) ./internal/e2e/ || exit 1; \
		echo "== internal/e2e with BASTION_E2E_MECHANISM=$$m: $$(( $$(date +%s) - start )) s"; \
	done

# -short: no end-to-end, eBPF or namespace test (testenv.RequireE2E skips them).
unit-test: ## the tests that need neither root nor the built programs
	$(GO) test -short ./...

# The standing attack suite: every TestAttack* end-to-end test (a hostile
# unprivileged user against a real agent, each in its own namespace), then a
# table of attack, tries, got through and expected. Needs root.
attack: deps-test ## as root: the attack suite, then its table
	@report=$$(mktemp /tmp/bastion-attack.XXXXXX.jsonl); \
	BASTION_ATTACK_REPORT=$$report $(GO) test -count=1 $(TEST_FLAGS) -run '^TestAttack' ./internal/e2e/; rc=$$?; \
	$(GO) run ./internal/e2e/attacktable $$report || rc=1; rm -f $$report; exit $$rc

# BENCH_ARGS are bastion-bench's flags, e.g. BENCH_ARGS=-kernel-only for the
# no-firewall baseline and the kernel-decision rounds alone (~5 minutes);
# the whole run takes ~10. A kernel-decision case the kernel did not decide
# fails the run.
BENCH_ARGS ?=
bench: deps-test ## as root: the benchmarks (about 10 minutes)
	$(GO) run ./cmd/bastion-bench $(BENCH_ARGS)

# Runs Bastion in the foreground (deploy/run.sh): the agent as root, then as
# the invoking user (SUDO_USER) their rules service and a prompt client:
# bastion-gtk when a display is available, else `bastionctl prompt` in this
# terminal. Ctrl-C stops them all, the agent last, which removes its rules.
# NETNS=name confines the agent to that network namespace (created if missing).
run: deps build ## as root: run Bastion in the foreground (NETNS=name: in that namespace only)
	@if [ "$$(id -u)" != 0 ]; then echo "make run: run as root (sudo make run)"; exit 1; fi
	BIN=$(abspath $(BIN)) NETNS=$(NETNS) AGENT_ARGS="$(AGENT_ARGS)" ./deploy/run.sh

# For people building from source: PREFIX (default /usr/local) and DESTDIR
# are honoured; uninstall removes exactly the files install recorded.
PREFIX  ?= /usr/local
DESTDIR ?=
install: build ## install under PREFIX (default /usr/local)
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" BIN=$(abspath $(BIN)) ./deploy/install.sh install

uninstall: ## remove exactly what install installed
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" ./deploy/install.sh uninstall

# bin/bastion_VERSION_ARCH.deb, packed by nfpm (pinned in deploy/tools).
deb: build ## build the Debian package bin/bastion_VERSION_ARCH.deb
	BIN=$(abspath $(BIN)) OUT=$(abspath $(BIN)) ./deploy/deb.sh; rc=$$?; $(call own-clone,$(BIN) $(TOOLBIN)); exit $$rc

# Packaging and documentation checks; all of them also run in `make test`
# (they are Go tests in internal/deploytest).
units-verify: ## check the systemd units
	$(GO) test -count=1 -run 'TestUnits' ./internal/deploytest/

deb-check: ## build the package and check it (contents, maintainer scripts, lintian)
	$(GO) test -count=1 -run 'TestDeb' ./internal/deploytest/

docs-test: ## run the documentation's command blocks
	$(GO) test -count=1 -run 'TestDocs' ./internal/deploytest/

# The desktop client's tests alone (they start their own Xvfb).
gtk-test: deps-test ## the desktop client's tests (under Xvfb)
	$(GO) test -count=1 ./gtkclient/... ./cmd/bastion-gtk/

# docs/screenshots/*.png: every page and dialog of bastion-gtk, under Xvfb and
# openbox against the demo rules service, worked by keyboard through xdotool.
screenshots: deps-test build ## docs/screenshots/*.png: every page and dialog of bastion-gtk, under Xvfb
	$(GO) run ./gtkclient/internal/demo/screenshots --out docs/screenshots --gtk $(BIN)/bastion-gtk

clean: ## remove bin/ and .tools/
	rm -rf $(BIN) $(TOOLBIN)
