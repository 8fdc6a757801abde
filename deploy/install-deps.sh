#!/usr/bin/env bash
# Installs what building, running and testing Bastion needs on Debian or
# Ubuntu, skipping whatever is already there. Run as root (make does this for
# `sudo make run` and `sudo make test`).
#
#   deploy/install-deps.sh run    # to run Bastion
#   deploy/install-deps.sh test   # to run the tests too
set -euo pipefail

GO_VERSION=1.26.8        # matches go.mod's go line
GRPCURL_VERSION=v1.9.4   # v1.9.3's -unix is broken
what=${1:-run}

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: run as root (sudo make $what)" >&2
	exit 1
fi

# command -> Debian package
declare -A pkgs=(
	[iptables]=iptables
	[ip]=iproute2
	[nsenter]=util-linux
	[curl]=curl
	[git]=git
	[make]=make
)
if [ "$what" = test ]; then
	pkgs+=([wget]=wget [nc]=netcat-openbsd [ping]=iputils-ping [gcc]=gcc)
	# procid's forking client, and the web server in the README's examples.
	pkgs+=([python3]=python3)
	# bastion-gtk: building (GTK headers, pkg-config) and its headless tests.
	pkgs+=([pkg-config]=pkg-config [Xvfb]=xvfb [xauth]=xauth [import]=imagemagick [dbus-daemon]=dbus-daemon
		[desktop-file-validate]=desktop-file-utils)
	# bastion-gtk tests and screenshots as a person meets it: a window
	# manager, keys and clicks.
	pkgs+=([openbox]=openbox [xdotool]=xdotool [xprop]=x11-utils)
	# packaging checks: unit verification, the .deb's stripped binaries, its
	# maintainer scripts' helpers, and its lint.
	pkgs+=([systemd-analyze]=systemd [lintian]=lintian [strip]=binutils [deb-systemd-invoke]=init-system-helpers)
	# make check-generate: the eBPF objects are compiled with a pinned clang,
	# 14.0.6 (the Makefile's BPF_CLANG_VERSION): Debian 12's clang-14; Ubuntu
	# 24.04's clang-14 (universe) is the same version. libbpf-dev, below,
	# brings the headers bpf/procid.c includes.
	pkgs+=([clang-14]=clang-14 [llvm-strip-14]=llvm-14)
fi
missing=()
for cmd in "${!pkgs[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkgs[$cmd]}")
done
# iptables-legacy and iptables-nft both come with Debian's iptables package.
command -v iptables-legacy >/dev/null 2>&1 || missing+=(iptables)
# bastion-gtk runs with GTK 3; building and testing it needs the headers.
if [ "$what" = test ]; then
	[ -e /usr/include/gtk-3.0/gtk/gtk.h ] || missing+=(libgtk-3-dev)
	[ -e /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev) # make check-generate
else
	ldconfig -p 2>/dev/null | grep -q 'libgtk-3\.so\.0 ' || missing+=(libgtk-3-0)
fi
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates "${missing[@]}" >/dev/null
fi

# Go: Debian's golang-go is too old for this module, so a missing or older Go
# is fetched as the official toolchain module from the Go module proxy.
export PATH=/usr/local/go/bin:$PATH
have_go=$(go env GOVERSION 2>/dev/null || true)
if [ "$(printf '%s\n' "go$GO_VERSION" "$have_go" | sort -V | head -n1)" != "go$GO_VERSION" ] || [ -z "$have_go" ]; then
	echo "install-deps: installing Go $GO_VERSION into /usr/local/go (found: ${have_go:-none})"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	arch=$(dpkg --print-architecture)
	curl -fsSL -o "$tmp/go.zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-$arch.zip"
	command -v unzip >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip >/dev/null
	unzip -q "$tmp/go.zip" -d "$tmp/x"
	rm -rf /usr/local/go
	mv "$tmp/x/golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-$arch" /usr/local/go
	chmod -R a+rX /usr/local/go
	chmod a+x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/*
fi

if [ "$what" = test ] && ! command -v grpcurl >/dev/null 2>&1; then
	echo "install-deps: installing grpcurl $GRPCURL_VERSION"
	GOBIN=/usr/local/bin go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
fi
