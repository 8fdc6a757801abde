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

.PHONY: all build generate generate-bpf generate-proto test unit-test deps deps-test bench run fmt-check lint clean gtk-test screenshots

all: build

# Everything builds without cgo except bastion-gtk, which links GTK 3
# (libgtk-3-dev); without it, bastion-gtk is skipped with a note.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ $$($(GO) list ./cmd/... | grep -v '/cmd/bastion-gtk$$')
	@if pkg-config --exists gtk+-3.0 2>/dev/null; then \
		echo "CGO_ENABLED=1 $(GO) build -trimpath -o $(BIN)/ ./cmd/bastion-gtk"; \
		CGO_ENABLED=1 $(GO) build -trimpath -o $(BIN)/ ./cmd/bastion-gtk; \
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
# tests in their own network namespaces. Not root: the root-only tests skip
# and say so; BASTION_E2E=1 makes them fail instead.
test: deps-test fmt-check
	$(GO) vet ./...
	$(GO) test $(TEST_FLAGS) ./...

unit-test:
	$(GO) test -short ./...

bench: deps-test
	$(GO) run ./cmd/bastion-bench

# Runs the agent in the foreground; Ctrl-C stops it and removes its rules.
# NETNS=name confines it to that network namespace (created if missing).
run: deps build
	@if [ "$$(id -u)" != 0 ]; then echo "make run: run as root (sudo make run)"; exit 1; fi
	@if [ -n "$(NETNS)" ] && [ ! -e /run/netns/$(NETNS) ]; then \
		ip netns add $(NETNS) && ip -n $(NETNS) link set lo up && echo "created network namespace $(NETNS)"; fi
	@echo "bastion-agent running; answer prompts with: $(BIN)/bastionctl pending --watch / $(BIN)/bastionctl decide ID allow"
	exec $(BIN)/bastion-agent $(if $(NETNS),--netns $(NETNS) --intercept-loopback) $(AGENT_ARGS)

# The desktop client's tests alone (they start their own Xvfb).
gtk-test: deps-test
	$(GO) test -count=1 ./gtkclient/... ./cmd/bastion-gtk/

# docs/screenshots/*.png: bastion-gtk under Xvfb against the demo rules service.
screenshots: deps-test build
	$(GO) run ./gtkclient/internal/demo/screenshots --out docs/screenshots --gtk $(BIN)/bastion-gtk

clean:
	rm -rf $(BIN) $(TOOLBIN)
