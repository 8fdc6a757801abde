#!/usr/bin/env bash
# Builds the Debian package (`make deb`): stages the file tree with
# deploy/install.sh, then packs it with nfpm (pinned in deploy/tools/go.mod)
# as described by deploy/nfpm.yaml. Prints the path of the .deb.
#
# Environment: BIN (the built binaries, default <repo>/bin), OUT (where the
# .deb goes, default <repo>/bin), DEB_VERSION (default from git),
# DEB_ARCH (default: dpkg's), NFPM (an nfpm binary; default: built from
# deploy/tools into <repo>/.tools/nfpm).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH=/usr/local/go/bin:$PATH
BIN=${BIN:-$repo/bin}
OUT=${OUT:-$repo/bin}
if [ -z "${DEB_VERSION:-}" ]; then
	DEB_VERSION=0.0~git$(git log -1 --format=%cd.%h --date=format:%Y%m%d%H%M 2>/dev/null || echo 0)
fi
DEB_ARCH=${DEB_ARCH:-$(dpkg --print-architecture 2>/dev/null || go env GOARCH)}
export DEB_VERSION DEB_ARCH

NFPM=${NFPM:-$repo/.tools/nfpm}
if [ ! -x "$NFPM" ]; then
	go -C deploy/tools build -o "$NFPM" github.com/goreleaser/nfpm/v2/cmd/nfpm
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
export DEB_STAGE=$stage/root
DESTDIR=$DEB_STAGE PREFIX=/usr SYSCONFDIR=/etc SYSTEMDUNITDIR=/lib/systemd/system \
	USERUNITDIR=/usr/lib/systemd/user BIN=$BIN ./deploy/install.sh install 2>/dev/null
# The package ships stripped binaries, as Debian's policy asks (10.1): the
# symbol table and DWARF data are a third of a Go binary and no use to
# someone running it. bin/ keeps the unstripped build, for debugging.
command -v strip >/dev/null || {
	echo "deb.sh: strip missing: apt-get install binutils" >&2
	exit 1
}
for b in "$DEB_STAGE"/usr/bin/*; do
	strip --remove-section=.comment --remove-section=.note --strip-unneeded "$b"
done
# dpkg keeps the file list, and the configuration is a conffile (nfpm.yaml).
rm -f "$DEB_STAGE/usr/share/bastion/installed-files" "$DEB_STAGE/etc/bastion/agent.toml"
rmdir "$DEB_STAGE/usr/share/bastion" "$DEB_STAGE/etc/bastion"
rmdir "$DEB_STAGE/etc" 2>/dev/null || true
# Manual pages of every binary and bastionctl's shell completions, made from
# the binaries' own help (internal/manpage/genman).
go run ./internal/manpage/genman -bin "$BIN" -out "$DEB_STAGE/usr/share"
# Debian wants a changelog, in its format: this build, with the latest
# commits as its entries, wrapped at word boundaries (a subject cut
# mid-word reads as a misspelling to lintian).
{
	printf 'bastion (%s) unstable; urgency=medium\n\n' "$DEB_VERSION"
	{ git log -n 20 --format='%h %s' 2>/dev/null || true; } | while IFS= read -r entry; do
		printf '%s\n' "$entry" | fold -s -w 74 | sed -e 's/ *$//' -e '1s/^/  * /' -e '2,$s/^/    /'
	done
	git rev-parse --git-dir >/dev/null 2>&1 || echo '  * Built outside git.'
	printf '\n -- Bastion developers <bastion-fw@users.noreply.github.com>  %s\n' \
		"$(git log -1 --format=%aD 2>/dev/null || date -R)"
} | gzip -9n >"$DEB_STAGE.changelog.gz"
# The .deb's files belong to root, whoever builds it.
mkdir -p "$OUT"
deb=$OUT/bastion_${DEB_VERSION}_${DEB_ARCH}.deb
# nfpm expands no variables in file paths: fill in the staging directory,
# and what bastion-gtk adds when it was built (it links libc and GTK; its
# autostart entry under /etc is a conffile, so it leaves the tree).
conf=$(sed "s|@STAGE@|$DEB_STAGE|" deploy/nfpm.yaml)
if [ -x "$DEB_STAGE/usr/bin/bastion-gtk" ]; then
	conf=${conf//"  # @GTK_DEPENDS@"/"  - libc6
  - libgtk-3-0
  #"}
	autostart=$DEB_STAGE/etc/xdg/autostart/bastion-gtk.desktop
	if [ -f "$autostart" ]; then
		mv "$autostart" "$stage/autostart.desktop"
		rmdir -p "$DEB_STAGE/etc/xdg/autostart" 2>/dev/null || true
		conf=${conf//"  # @GTK_CONTENTS@"/"  - src: $stage/autostart.desktop
    dst: /etc/xdg/autostart/bastion-gtk.desktop
    type: config|noreplace
    file_info:
      mode: 0644
  #"}
	fi
fi
printf '%s\n' "$conf" >"$stage/nfpm.yaml"
"$NFPM" package --config "$stage/nfpm.yaml" --packager deb --target "$deb" >&2
echo "$deb"
