#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The C sources (src/, tests/) in the house format of .clang-format.
#   scripts/format.sh           reformat them in place
#   scripts/format.sh --check   change nothing; print the diff and exit 1 if any file is not
#                               formatted (scripts/test.sh runs this first)
# A table aligned by hand keeps its shape between "// clang-format off" and "// clang-format on".
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
case "${1:-}" in
"") ;;
--check) check=1 ;;
*) echo "format.sh: unknown option $1 (--check)" >&2; exit 2 ;;
esac
command -v clang-format >/dev/null || { echo "format.sh: clang-format is not installed (scripts/deps.sh --tests)" >&2; exit 1; }

mapfile -t files < <(git ls-files -co --exclude-standard 'src/*.[ch]' 'tests/*.[ch]')
if [[ $check -eq 0 ]]; then
    clang-format -i "${files[@]}"
    exit 0
fi
bad=0
for f in "${files[@]}"; do
    [[ -f $f ]] || continue
    if ! out=$(clang-format "$f" | diff -u --label "$f" --label "$f (clang-format)" "$f" -); then
        printf '%s\n' "$out"
        bad=$((bad + 1))
    fi
done
if [[ $bad -gt 0 ]]; then
    echo "format.sh: $bad file(s) not formatted as .clang-format says; run scripts/format.sh" >&2
    exit 1
fi
echo "format.sh: ${#files[@]} files formatted"
