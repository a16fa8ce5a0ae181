#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The cluster benchmark of issue 18 (a script, not a test; it prints figures):
#
#  (a) claim-and-complete throughput with a no-op render (imgd-worker's benchmark hook,
#      IMGD_FAULT_SKIP=worker.render, in builds with -DIMGD_FAULT_INJECTION=ON: every job after
#      a worker's first gets its outputs without decoding or rendering, still written, verified
#      and synced): the jobs are taken in first with every node paused, then the nodes resume
#      and the time to the last done job is measured: jobs/s of the PostgreSQL engine with 1, 2
#      and 3 nodes on one database, against the SQLite engine on one node. Each node has
#      2 workers per core.
#  (b) the avatar pipeline of bench.sh (three circle-masked WebP variants) over the corpus of
#      ~/.cache/imgd-bench/images: 3 nodes of 1 worker each against 1 node of `nproc` workers on
#      this same machine; the same CPUs, so the figure is the coordination's cost, not a
#      speed-up.
#
#   scripts/bench-cluster.sh [--full] [--build DIR] [--corpus DIR] [--keep]
#
# Quick (default, a few minutes): 600 no-op jobs per row, 12 avatar images. --full: 2,000
# no-op jobs, every image of the corpus. PostgreSQL is started as tests/tools/pg-fixture.c
# does: initdb and pg_ctl of the newest /usr/lib/postgresql/*/bin, a Unix socket in a
# temporary directory, fsync on; each row gets a fresh schema. The machine's other work shows
# in the figures: run it on an idle machine, and more than once.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

full=0
build=${IMGD_BUILD:-$top/build}
corpus=${IMGD_BENCH_CORPUS:-$HOME/.cache/imgd-bench}
keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --full) full=1 ;;
        --build) build=$2; shift ;;
        --corpus) corpus=$2; shift ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '/^#   scripts/p' "$0" | sed 's/^# *//' >&2; exit 2 ;;
        *) echo "bench-cluster.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
case $build in /*) ;; *) build=$top/$build ;; esac

if [ "$full" = 1 ]; then noop_n=2000; avatar_n=0; else noop_n=600; avatar_n=12; fi
cores=$(nproc)
imgd=$build/imgd
imgctl=$build/imgctl
for f in "$imgd" "$imgctl" "$build/imgd-worker"; do
    [ -x "$f" ] || { echo "bench-cluster.sh: $f is not built" >&2; exit 1; }
done
grep -q 'IMGD_FAULT_INJECTION:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null || {
    echo "bench-cluster.sh: $build is not built with -DIMGD_FAULT_INJECTION=ON (the no-op render)" >&2
    exit 1
}
[ -d "$corpus/small" ] && [ -d "$corpus/images" ] || {
    echo "bench-cluster.sh: no corpus in $corpus (scripts/bench.sh --quick makes it)" >&2
    exit 1
}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bindir/pg_ctl" ] || { echo "bench-cluster.sh: PostgreSQL is not installed" >&2; exit 1; }

tmp=$(mktemp -d /tmp/imgd-bench-cluster.XXXXXX)
pids=()
as_pg=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    "${as_pg[@]}" "$bindir/pg_ctl" stop -D "$tmp/pg/data" -m immediate -s >/dev/null 2>&1 || true
    [ "$keep" = 1 ] || rm -rf "$tmp"
}
trap cleanup EXIT

now_us() { date +%s%6N; }
log() { printf '%s\n' "$*" >&2; }

mkdir -p "$tmp/pg"
# The server runs as nobody when this runs as root (initdb refuses root), as in pg-fixture.c.
as_pg=()
if [ "$(id -u)" = 0 ]; then
    chown nobody "$tmp/pg"
    chmod 755 "$tmp"
    as_pg=(runuser -u nobody --)
fi
"${as_pg[@]}" "$bindir/initdb" -D "$tmp/pg/data" -U imgd -A trust -E UTF8 --locale=C --no-sync \
    --no-instructions >"$tmp/pg/setup.log" 2>&1 || { cat "$tmp/pg/setup.log" >&2; exit 1; }
"${as_pg[@]}" "$bindir/pg_ctl" start -D "$tmp/pg/data" -l "$tmp/pg/server.log" -w -t 60 -s \
    -o "-c listen_addresses='' -c unix_socket_directories='$tmp/pg' -c fsync=on -c shared_buffers=64MB -c max_connections=50" \
    >>"$tmp/pg/setup.log" 2>&1 || { cat "$tmp/pg/setup.log" "$tmp/pg/server.log" >&2; exit 1; }
psql() { "$bindir/psql" -h "$tmp/pg" -U imgd -d postgres -qAtX "$@"; }

# One row: ENGINE NODES WORKERS PIPELINE FILES...; prints "jobs wall_s jobs_per_s dead".
run_row() {
    local engine=$1 nodes=$2 workers=$3 pipeline=$4
    shift 4
    local n=$# d schema conninfo
    # (run in a subshell: a name of its own, not a counter)
    schema=bench_$(date +%s%N)
    d=$tmp/$schema
    mkdir -p "$d/uploads" "$d/media" "$d/stage"
    psql -c "CREATE SCHEMA $schema" >/dev/null
    conninfo="host=$tmp/pg user=imgd dbname=postgres options='-c search_path=$schema'"
    cp "$@" "$d/stage/"
    local i
    for i in $(seq 1 "$nodes"); do
        mkdir -p "$d/n$i/state"
        {
            printf 'state_dir = "%s";\nsocket = "%s";\nworkers = %d;\n' \
                "$d/n$i/state" "$d/n$i/imgd.sock" "$workers"
            printf 'watch = ( { path = "%s"; output = "%s"; pipeline = "p"; reconcile = false; } );\n' \
                "$d/uploads" "$d/media"
            printf 'pipelines = { p = %s; };\n' "$pipeline"
            printf 'degradation = { enabled = false; };\n'
            if [ "$engine" = postgresql ]; then
                printf 'ledger = { engine = "postgresql"; conninfo = "%s"; node = "n%d"; };\n' \
                    "$conninfo" "$i"
            fi
        } > "$d/n$i/imgd.conf"
        IMGD_FAULT_SKIP=${noop_skip:-} "$imgd" -c "$d/n$i/imgd.conf" 2>"$d/n$i/imgd.log" &
        pids+=($!)
        local t=0
        until "$imgctl" -s "$d/n$i/imgd.sock" status >/dev/null 2>&1; do
            sleep 0.1; t=$((t + 1))
            [ $t -lt 300 ] || { log "node $i did not start: $(tail -3 "$d/n$i/imgd.log")"; exit 1; }
        done
        "$imgctl" -s "$d/n$i/imgd.sock" pause >/dev/null
    done
    # Every job taken in first: claim-and-complete alone is timed.
    find "$d/stage" -mindepth 1 -maxdepth 1 -exec mv -t "$d/uploads/" {} +
    until [ "$(count "$d/n1/imgd.sock" queued)" -ge "$n" ]; do sleep 0.1; done
    local t0 t1
    t0=$(now_us)
    for i in $(seq 1 "$nodes"); do "$imgctl" -s "$d/n$i/imgd.sock" resume >/dev/null; done
    until [ "$(count "$d/n1/imgd.sock" done)" -ge "$n" ]; do sleep 0.02; done
    t1=$(now_us)
    local dead
    dead=$(count "$d/n1/imgd.sock" dead)
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
    awk -v n="$n" -v t0="$t0" -v t1="$t1" -v dead="$dead" \
        'BEGIN { w = (t1 - t0) / 1e6; printf "%d %.3f %.1f %d\n", n, w, n / w, dead }'
}

# A state's count from imgctl status (the ledger's counts: cluster-wide on PostgreSQL).
# imgctl status exits non-zero while the node is paused or degraded; its JSON is read all the same.
count() {
    local json
    json=$("$imgctl" -s "$1" status --json 2>/dev/null) || true
    printf '%s' "$json" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["jobs"].get(sys.argv[1], 0))' "$2" \
            2>/dev/null || echo 0
}

small='( { name = "s"; width = 32; height = 32; fit = "cover"; format = "jpeg"; quality = 80; } )'
avatar='(
    { name = "small";  width = 100; height = 100; fit = "cover"; format = "webp"; quality = 80; mask = "circle"; },
    { name = "medium"; width = 200; height = 200; fit = "cover"; format = "webp"; quality = 80; mask = "circle"; },
    { name = "large";  width = 400; height = 400; fit = "cover"; format = "webp"; quality = 80; mask = "circle"; } )'

mapfile -t noop_files < <(ls "$corpus"/small/*.png | head -n "$noop_n")
if [ "$avatar_n" -gt 0 ]; then
    mapfile -t avatar_files < <(ls "$corpus"/images/* | grep -Ei '\.(jpe?g|png)$' | head -n "$avatar_n")
else
    mapfile -t avatar_files < <(ls "$corpus"/images/* | grep -Ei '\.(jpe?g|png)$')
fi

printf 'imgd cluster benchmark: %d cores (%s), PostgreSQL %s, %s size\n' "$cores" \
    "$(uname -m)" "$("$bindir/postgres" --version | awk '{ print $3 }')" \
    "$([ "$full" = 1 ] && echo full || echo quick)"
printf '\n(a) claim and complete, no-op render, %d workers per node (2 per core)\n' $((2 * cores))
printf '%-12s %5s %6s %8s %9s %5s\n' engine nodes jobs wall_s jobs/s dead
noop_skip=worker.render
for spec in "sqlite 1" "postgresql 1" "postgresql 2" "postgresql 3"; do
    set -- $spec
    read -r n w r dead < <(run_row "$1" "$2" $((2 * cores)) "$small" "${noop_files[@]}")
    printf '%-12s %5d %6d %8.2f %9.1f %5d\n' "$1" "$2" "$n" "$w" "$r" "$dead"
done
noop_skip=

printf '\n(b) avatar pipeline, %d images, one machine (the same %d cores)\n' "${#avatar_files[@]}" "$cores"
printf '%-12s %5s %8s %6s %8s %9s %5s\n' engine nodes workers images wall_s images/s dead
for spec in "sqlite 1 $cores" "postgresql 1 $cores" "postgresql 3 1"; do
    set -- $spec
    read -r n w r dead < <(run_row "$1" "$2" "$3" "$avatar" "${avatar_files[@]}")
    printf '%-12s %5d %8s %6d %8.2f %9.2f %5d\n' "$1" "$2" "$2x$3" "$n" "$w" "$r" "$dead"
done
