#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the Debian package of this tree with Debian's tooling (debian/, dpkg-buildpackage)
# and checks it with lintian.
#   scripts/package.sh [OUTDIR]     (default: build-deb/)
# The tree (tracked files and new ones not ignored: no build/ directories) is copied to a
# temporary directory first, because dpkg-buildpackage builds in place and writes its
# results to the parent directory. OUTDIR receives imgd_<version>_amd64.deb, the .changes
# and the .buildinfo; lintian's verdict is printed and is the script's exit status (errors
# fail it; warnings and the tags listed in debian/source/lintian-overrides do not).
# Needs: scripts/deps.sh --package (and the build dependencies: scripts/deps.sh).
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$src/build-deb}
mkdir -p "$out"
out=$(cd "$out" && pwd)

for tool in dpkg-buildpackage dh lintian; do
    command -v "$tool" >/dev/null ||
        { echo "package.sh: $tool is missing: run scripts/deps.sh --package" >&2; exit 1; }
done

version=$(sed -n 's/^project(imgd VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
changelog_version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
if [[ "$version" != "$changelog_version" ]]; then
    echo "package.sh: CMakeLists.txt says $version, debian/changelog $changelog_version:" \
         "add a changelog entry (dch -v $version)" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tree="$work/imgd-$version"
mkdir "$tree"
(cd "$src" && git ls-files -z --cached --others --exclude-standard |
     xargs -0 -r tar -cf - --no-recursion) | tar -C "$tree" -xf -

echo "package.sh: building imgd $version in $tree"
(cd "$tree" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 ||
    { tail -n 40 "$work/build.log" >&2; echo "package.sh: dpkg-buildpackage failed" >&2; exit 1; }

arch=$(dpkg-architecture -qDEB_HOST_ARCH)
changes="imgd_${version}_${arch}.changes"
# The package, its -dbgsym package and the .changes and .buildinfo that list them.
cp "$work"/*.deb "$work/$changes" "$work/imgd_${version}_${arch}.buildinfo" "$out/"
cp "$work/build.log" "$out/imgd_${version}_${arch}.build"
echo "package.sh: $out/imgd_${version}_${arch}.deb"

echo "package.sh: lintian $changes"
status=0
(cd "$out" && lintian --info --display-info "$changes") || status=$?
if [[ $status -eq 0 ]]; then
    echo "package.sh: lintian: no errors"
else
    echo "package.sh: lintian found errors (exit status $status)" >&2
fi
exit $status
