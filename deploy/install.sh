#!/usr/bin/env bash
# Installs or uninstalls a Bastion build (`make install` / `make uninstall`),
# and stages the .deb's file tree (`make deb`).
#
#   deploy/install.sh install     # copies bin/ and deploy/ files into place
#   deploy/install.sh uninstall   # removes exactly what install put there
#
# Environment: DESTDIR (staging root, default none), PREFIX (default
# /usr/local), SYSCONFDIR (default /etc), SYSTEMDUNITDIR (system units,
# default $PREFIX/lib/systemd/system), USERUNITDIR (user units, default
# $PREFIX/lib/systemd/user), BIN (the built binaries, default <repo>/bin).
#
# install records every file it writes in $PREFIX/share/bastion/installed-files;
# uninstall removes those files, then the list, then the directories that
# are Bastion's own. An existing /etc/bastion/agent.toml is never overwritten
# (your settings stay) and is removed by uninstall only when it is still the
# one install put there.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
action=${1:-}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
SYSCONFDIR=${SYSCONFDIR:-/etc}
SYSTEMDUNITDIR=${SYSTEMDUNITDIR:-$PREFIX/lib/systemd/system}
USERUNITDIR=${USERUNITDIR:-$PREFIX/lib/systemd/user}
BIN=${BIN:-$repo/bin}
bindir=$PREFIX/bin
docdir=$PREFIX/share/doc/bastion
manifest=$PREFIX/share/bastion/installed-files

say() { printf 'install: %s\n' "$*" >&2; }

# systemd_live: true when changes should be told to a running systemd.
systemd_live() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

installed=()
# put MODE SRC DST: installs SRC as $DESTDIR/DST and records DST.
put() {
	install -D -m "$1" "$2" "$DESTDIR$3"
	installed+=("$3")
}

# unit SRC DST: a unit with its binaries' paths set to $bindir.
unit() {
	local tmp
	tmp=$(mktemp)
	sed "s|/usr/bin/bastion-|$bindir/bastion-|g" "$1" >"$tmp"
	put 0644 "$tmp" "$2"
	rm -f "$tmp"
}

do_install() {
	local b
	for b in bastion-agent bastion-uiserver bastionctl; do
		[ -x "$BIN/$b" ] || {
			say "$BIN/$b not built (make build)"
			exit 1
		}
		put 0755 "$BIN/$b" "$bindir/$b"
	done
	unit "$repo/deploy/systemd/bastion-agent.service" "$SYSTEMDUNITDIR/bastion-agent.service"
	unit "$repo/deploy/systemd/bastion-uiserver.service" "$USERUNITDIR/bastion-uiserver.service"
	# The desktop client, when it was built (it needs cgo and GTK).
	if [ -x "$BIN/bastion-gtk" ]; then
		put 0755 "$BIN/bastion-gtk" "$bindir/bastion-gtk"
		[ -f "$repo/deploy/bastion-gtk.desktop" ] &&
			put 0644 "$repo/deploy/bastion-gtk.desktop" "$PREFIX/share/applications/bastion-gtk.desktop"
		[ -f "$repo/deploy/bastion-gtk-autostart.desktop" ] &&
			put 0644 "$repo/deploy/bastion-gtk-autostart.desktop" "$SYSCONFDIR/xdg/autostart/bastion-gtk.desktop"
	fi
	put 0644 "$repo/README.md" "$docdir/README.md"
	local d
	for d in "$repo"/docs/*.md; do
		put 0644 "$d" "$docdir/$(basename "$d")"
	done
	put 0644 "$repo/deploy/agent.toml" "$docdir/examples/agent.toml"
	put 0644 "$repo/deploy/uiserver-config.toml" "$docdir/examples/config.toml"
	# The configuration: never overwrite one that is there.
	if [ -e "$DESTDIR$SYSCONFDIR/bastion/agent.toml" ]; then
		say "keeping the existing $SYSCONFDIR/bastion/agent.toml (the default is in $docdir/examples)"
	else
		put 0644 "$repo/deploy/agent.toml" "$SYSCONFDIR/bastion/agent.toml"
	fi
	installed+=("$manifest")
	install -d "$DESTDIR$(dirname "$manifest")"
	printf '%s\n' "${installed[@]}" >"$DESTDIR$manifest"
	say "installed ${#installed[@]} files under ${DESTDIR:-/} (list: $manifest)"
	if systemd_live; then
		systemctl daemon-reload
		say "start the agent now and at boot:   systemctl enable --now bastion-agent"
		say "start your rules service at login: systemctl --global enable bastion-uiserver"
	fi
}

do_uninstall() {
	if [ ! -f "$DESTDIR$manifest" ]; then
		say "nothing to uninstall: no $DESTDIR$manifest"
		exit 0
	fi
	if systemd_live; then
		# Stopping the agent removes its firewall rules.
		systemctl disable --now bastion-agent.service 2>/dev/null || true
		systemctl --global disable bastion-uiserver.service 2>/dev/null || true
	fi
	local f n=0
	while IFS= read -r f; do
		[ -n "$f" ] || continue
		if [ "$f" = "$SYSCONFDIR/bastion/agent.toml" ] && ! cmp -s "$DESTDIR$f" "$repo/deploy/agent.toml"; then
			say "keeping $f: it was edited"
			continue
		fi
		rm -f "$DESTDIR$f"
		n=$((n + 1))
	done <"$DESTDIR$manifest"
	# Bastion's own directories, if now empty.
	for d in "$docdir/examples" "$docdir" "$(dirname "$manifest")" "$SYSCONFDIR/bastion"; do
		rmdir "$DESTDIR$d" 2>/dev/null || true
	done
	say "removed $n files"
	if systemd_live; then
		systemctl daemon-reload
	fi
}

case $action in
install) do_install ;;
uninstall) do_uninstall ;;
*)
	echo "usage: $0 install|uninstall" >&2
	exit 2
	;;
esac
