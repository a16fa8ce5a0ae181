#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Quality per byte (issue 19): quality = "auto" and format = "best" against a fixed quality,
# on the benchmark corpus's web pipeline (the 1600 px and 800 px variants, fit inside), with
# imgd's own render code (build/imgd-bench-quality; see its header for what it measures).
#
#   scripts/bench-quality.sh [--quick] [--corpus DIR] [--build DIR] [--target T]
#                            [--formats "jpeg,webp,avif,jxl"] [--no-best] [--levels] [--out DIR]
#
# The corpus is the one scripts/bench.sh builds (default $IMGD_BENCH_CORPUS or
# ~/.cache/imgd-bench; run `scripts/bench.sh --quick --pipelines small` once to build it):
# its photographs and wallpapers, not the generated zz-* images. --quick takes 12 of them.
# It prints, per format, the bytes and DSSIM at quality 80 and with quality = "auto" at the
# target (default "good"), how many outputs meet the target as checked on the published
# files, the median quality chosen, the encode CPU of both and its ratio; and which format
# format = "best" (avif, webp, jpeg) chose how often; then the evidence on bytes: the spread of
# the DSSIM of the quality-80 outputs (10th percentile, median, 90th) and the share of them that
# miss the target, and with --levels the bytes of auto at each named level (high, good, low)
# relative to quality 80. The per-output figures go to OUT/outputs.tsv (default: a new folder
# under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

corpus=${IMGD_BENCH_CORPUS:-$HOME/.cache/imgd-bench}
build=build
target=good
formats=jpeg,webp,avif,jxl
quick=0
best=-b
levels=
out=

while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1 ;;
        --corpus) corpus=$2; shift ;;
        --build) build=$2; shift ;;
        --target) target=$2; shift ;;
        --formats) formats=$2; shift ;;
        --no-best) best= ;;
        --levels) levels=-L ;;
        --out) out=$2; shift ;;
        *) echo "bench-quality.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [ ! -s "$corpus/corpus.tsv" ]; then
    echo "bench-quality.sh: no corpus in $corpus: build it with" \
         "scripts/bench.sh --quick --pipelines small" >&2
    exit 1
fi
[ -x "$build/imgd-bench-quality" ] || cmake --build "$build" --target imgd-bench-quality >&2
build=$(cd "$build" && pwd)

mapfile -t images < <(cut -f1 "$corpus/corpus.tsv" | grep -v '^zz-' | sort)
if [ "$quick" -eq 1 ]; then
    # Every sixth, for a spread of photographs and graphics.
    mapfile -t images < <(printf '%s\n' "${images[@]}" | awk 'NR % 6 == 1' | head -12)
fi
[ -n "$out" ] || out=$(mktemp -d /tmp/imgd-bench-quality-XXXXXX)
mkdir -p "$out"

echo "bench-quality: ${#images[@]} images of $corpus, formats $formats, target $target" >&2
cd "$corpus/images"
exec "$build/imgd-bench-quality" -t "$target" -f "$formats" -s 1600,800 $best $levels \
    -o "$out" -l "$out/outputs.tsv" "${images[@]}"
