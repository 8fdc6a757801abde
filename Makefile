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
# package at a time keeps their timing honest on a 2-core machine.
TEST_FLAGS ?= -p 1 -timeout 40m

.PHONY: all build generate generate-bpf generate-proto test e2e-mechanisms unit-test deps deps-test bench run fmt-check lint clean gtk-test screenshots install uninstall deb units-verify deb-check docs-test attack

all: build

# Everything builds without cgo except bastion-gtk, which links GTK 3
# (libgtk-3-dev); without it, bastion-gtk is skipped with a note.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ $$($(GO) list ./cmd/... | grep -v '/cmd/bastion-gtk$$')
	@if pkg-config --exists gtk+-3.0 2>/dev/null; then \
		echo "CGO_ENABLED=1 $(GO) build -trimpath -buildmode=pie -o $(BIN)/ ./cmd/bastion-gtk"; \
		CGO_ENABLED=1 $(GO) build -trimpath -buildmode=pie -o $(BIN)/ ./cmd/bastion-gtk; \
	else echo "build: skipping bastion-gtk: GTK 3 headers missing (apt-get install libgtk-3-dev)"; fi

# Regenerates committed code: the eBPF objects (needs clang, llvm-strip,
# libbpf-dev) and the protobuf/gRPC code (needs protoc).
generate: generate-bpf generate-proto

generate-bpf:
	$(GO) generate ./internal/procid/

generate-proto:
	@mkdir -p $(TOOLBIN)
	$(GO) build -o $(TOOLBIN)/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	PATH=$(TOOLBIN):$$PATH protoc -I proto -I /usr/include \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		$$(find proto -name '*.proto')

deps:
	@if [ "$$(id -u)" = 0 ]; then ./deploy/install-deps.sh run; fi

deps-test:
	@if [ "$$(id -u)" = 0 ]; then ./deploy/install-deps.sh test; fi

fmt-check:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi

# Unit tests, fuzz seed corpora, eBPF tests and, as root, the end-to-end
# tests in their own network namespaces, first with the identification
# mechanism the agent picks (auto: netfilter-link on kernel >= 6.4), then
# once per fallback (e2e-mechanisms). Not root: the root-only tests skip
# and say so. BASTION_E2E=1 means one thing everywhere: a test that would
# skip for lack of root or of a tool fails instead. A kernel feature the
# running kernel lacks still skips (internal/testenv/doc.go, "Gates").
test: deps-test fmt-check
	$(GO) vet ./...
	$(GO) test $(TEST_FLAGS) ./...
	@$(MAKE) --no-print-directory e2e-mechanisms

# The end-to-end suite again with each fallback mechanism forced
# (BASTION_E2E_MECHANISM, see internal/e2e/doc.go): sockops stands in for
# Debian 12's kernel 6.1, procfs for kernels without usable eBPF. Each run
# starts with TestMechanismOffered; where it skips (the kernel lacks the
# mechanism, or not root) the run is skipped with its reason.
E2E_MECHANISMS ?= sockops procfs
e2e-mechanisms:
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
unit-test:
	$(GO) test -short ./...

# The standing attack suite: every TestAttack* end-to-end test (a hostile
# unprivileged user against a real agent, each in its own namespace), then a
# table of attack, tries, got through and expected. Needs root.
attack: deps-test
	@report=$$(mktemp /tmp/bastion-attack.XXXXXX.jsonl); \
	BASTION_ATTACK_REPORT=$$report $(GO) test -count=1 $(TEST_FLAGS) -run '^TestAttack' ./internal/e2e/; rc=$$?; \
	$(GO) run ./internal/e2e/attacktable $$report || rc=1; rm -f $$report; exit $$rc

bench: deps-test
	$(GO) run ./cmd/bastion-bench

# Runs Bastion in the foreground (deploy/run.sh): the agent as root, then as
# the invoking user (SUDO_USER) their rules service and a prompt client:
# bastion-gtk when a display is available, else `bastionctl prompt` in this
# terminal. Ctrl-C stops them all, the agent last, which removes its rules.
# NETNS=name confines the agent to that network namespace (created if missing).
run: deps build
	@if [ "$$(id -u)" != 0 ]; then echo "make run: run as root (sudo make run)"; exit 1; fi
	BIN=$(CURDIR)/$(BIN) NETNS=$(NETNS) AGENT_ARGS="$(AGENT_ARGS)" ./deploy/run.sh

# For people building from source: PREFIX (default /usr/local) and DESTDIR
# are honoured; uninstall removes exactly the files install recorded.
PREFIX  ?= /usr/local
DESTDIR ?=
install: build
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" BIN=$(CURDIR)/$(BIN) ./deploy/install.sh install

uninstall:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" ./deploy/install.sh uninstall

# bin/bastion_VERSION_ARCH.deb, packed by nfpm (pinned in deploy/tools).
deb: build
	BIN=$(CURDIR)/$(BIN) OUT=$(CURDIR)/$(BIN) ./deploy/deb.sh

# Packaging and documentation checks; all of them also run in `make test`
# (they are Go tests in internal/deploytest).
units-verify:
	$(GO) test -count=1 -run 'TestUnits' ./internal/deploytest/

deb-check:
	$(GO) test -count=1 -run 'TestDeb' ./internal/deploytest/

docs-test:
	$(GO) test -count=1 -run 'TestDocs' ./internal/deploytest/

# The desktop client's tests alone (they start their own Xvfb).
gtk-test: deps-test
	$(GO) test -count=1 ./gtkclient/... ./cmd/bastion-gtk/

# docs/screenshots/*.png: bastion-gtk under Xvfb against the demo rules service.
screenshots: deps-test build
	$(GO) run ./gtkclient/internal/demo/screenshots --out docs/screenshots --gtk $(BIN)/bastion-gtk

clean:
	rm -rf $(BIN) $(TOOLBIN)
