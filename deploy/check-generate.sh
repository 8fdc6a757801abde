#!/usr/bin/env bash
# `make check-generate`: proves that the committed generated code is what
# its sources generate. It copies the working tree (tracked and untracked,
# not ignored files) to a temporary folder, deletes the generated files
# there, runs `make generate` in the copy, and fails, naming each file,
# where the copy and the working tree differ. The working tree is only
# read: uncommitted edits are checked as they are, never overwritten. In a
# clean clone (CI) that is exactly what is committed.
#
# Environment: TOOLBIN (the folder of tools already built, default
# <repo>/.tools), MAKE (default make).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
TOOLBIN=${TOOLBIN:-$repo/.tools}
MAKE=${MAKE:-make}

# What `make generate` writes: protobuf/gRPC code and bpf2go's objects.
patterns=('*.pb.go' '*_bpfel.go' '*_bpfel.o' '*_bpfeb.go' '*_bpfeb.o')
generated_in() {
	(cd "$1" && for p in "${patterns[@]}"; do find . -path ./.git -prune -o -type f -name "$p" -print; done) | sed 's|^\./||'
}

tmp=$(mktemp -d /tmp/bastion-check-generate.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
if [ -n "$(git status --porcelain)" ]; then
	echo "check-generate: the working tree has uncommitted changes; checking it as it is"
fi
# --ignore-failed-read: a tracked file deleted in the working tree is
# simply absent from the copy.
git ls-files -z --cached --others --exclude-standard |
	tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$tmp"
generated_in "$tmp" | (cd "$tmp" && xargs -r rm -f)
"$MAKE" --no-print-directory -C "$tmp" generate TOOLBIN="$TOOLBIN"

stale=0
while read -r f; do
	if [ ! -e "$tmp/$f" ]; then
		echo "check-generate: $f: nothing generates it any more"
	elif [ ! -e "$f" ]; then
		echo "check-generate: $f: generated, but missing"
	elif ! cmp -s "$f" "$tmp/$f"; then
		echo "check-generate: $f: differs from what its source generates"
		diff -u --label "$f" --label "$f (generated)" "$f" "$tmp/$f" | head -n 40 || true
	else
		continue
	fi
	stale=$((stale + 1))
done < <({ git ls-files --cached --others --exclude-standard -- "${patterns[@]}"; generated_in "$tmp"; } | sort -u)

if [ "$stale" -gt 0 ]; then
	echo "check-generate: $stale generated file(s) out of date: run \`make generate\` and commit the result" >&2
	exit 1
fi
echo "check-generate: the protobuf code and the eBPF objects are what their sources generate"
