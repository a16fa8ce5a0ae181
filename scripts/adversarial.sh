#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The adversarial battery's burst case at full size (issue 13; the quick sizes are ctest's
# test-adversarial-uploads and, for --case sigstop, test-adversarial-stopped): --files small
# PNGs are moved into the watched folder at once, flat (one rename each) and then as --dirs
# new sub-folders (one rename of each folder), so that the inotify queue overflows and imgd
# must rescan. For each it prints the drain time (first move to the last job finished), the
# jobs per second, the worst `imgctl status` latency sampled during the drain, the
# supervisor's peak RSS (VmHWM), and the checks: one
# job per file, every job done at its first attempt, every output and manifest there,
# `imgctl verify` clean, no temporary file left.
#
# With --case sigstop the supervisor is stopped instead (SIGSTOP) for --stop seconds (40),
# past a job timeout of 10 s, with jobs in flight and the second half of --files (default
# 2000 for this case) arriving meanwhile, then continued (SIGCONT): it prints how long status
# took to answer after the continue, and checks that every job is done once at its first
# attempt and that nothing timed out or lost its lease (the supervisor's pause is not the
# workers'). --case all runs both.
#
#   scripts/adversarial.sh [--case burst|sigstop|all] [--files N] [--dirs N] [--stop S]
#                          [--workers N] [--build DIR] [--out DIR] [--keep]
#
# Defaults: --case burst, 50000 files, 200 folders, workers = nproc; the tree goes to --out
# (default build/adversarial) and is removed at the end unless --keep is given. Exit status 1
# when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

files=
dirs=200
case_=burst
stop_s=40
workers=$(nproc)
build=${IMGD_BUILD:-$top/build}
out=$top/build/adversarial
keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --case) case_=$2; shift ;;
        --stop) stop_s=$2; shift ;;
        --files) files=$2; shift ;;
        --dirs) dirs=$2; shift ;;
        --workers) workers=$2; shift ;;
        --build) build=$2; shift ;;
        --out) out=$2; shift ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '/^#   scripts/,/^#  *\[--workers/p' "$0" | sed 's/^# *//' >&2; exit 2 ;;
        *) echo "adversarial.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
case $case_ in burst|sigstop|all) ;; *) echo "adversarial.sh: unknown case '$case_'" >&2; exit 2 ;; esac
[ -n "$files" ] || { [ "$case_" = sigstop ] && files=2000 || files=50000; }
case $build in /*) ;; *) build=$top/$build ;; esac
case $out in /*) ;; *) out=$top/$out ;; esac
log() { printf '== %s\n' "$*" >&2; }

scripts/deps.sh
command -v sqlite3 >/dev/null || scripts/deps.sh --tests
log "building into $build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target imgd imgd-worker imgctl imgd-mksample >/dev/null

now_ms() { date +%s%3N; }
failed=0
check() { # check WHAT EXPECTED OBSERVED
    if [ "$2" = "$3" ]; then printf '   ok   %-34s %s\n' "$1" "$3"
    else printf '   FAIL %-34s expected %s, observed %s\n' "$1" "$2" "$3"; failed=1; fi
}

# run NAME: one daemon on a fresh tree; the files are staged by stage_NAME, moved in by
# move_NAME.
run() {
    local name=$1 root=$out/$1
    rm -rf "$root"
    mkdir -p "$root/uploads" "$root/media" "$root/state" "$root/staging"
    cat >"$root/imgd.conf" <<EOF
state_dir = "$root/state";
socket = "$root/imgd.sock";
workers = $workers;
watch = ( { path = "$root/uploads"; output = "$root/media"; pipeline = "p"; recursive = true; } );
pipelines = { p = ( { name = "s"; width = 32; height = 32; fit = "cover"; format = "webp"; } ); };
degradation = { enabled = false; };
EOF
    "stage_$name" "$root"
    "$build/imgd" -c "$root/imgd.conf" 2>"$root/imgd.log" &
    local pid=$!
    "$build/imgctl" -s "$root/imgd.sock" --connect-timeout 20s status >/dev/null || true

    local t0 worst=0 t1 t2 lat
    t0=$(now_ms)
    "move_$name" "$root"
    # Sample status latency until everything is done.
    while :; do
        t1=$(now_ms)
        if "$build/imgctl" -s "$root/imgd.sock" wait --timeout 1 >/dev/null 2>&1; then
            break
        fi
        t2=$(now_ms)
        "$build/imgctl" -s "$root/imgd.sock" status >/dev/null 2>&1 || true
        lat=$(( $(now_ms) - t2 ))
        [ "$lat" -gt "$worst" ] && worst=$lat
        [ $(( t1 - t0 )) -gt 7200000 ] && { log "gave up after 2 h"; break; }
    done
    local drain_ms=$(( $(now_ms) - t0 ))
    local hwm
    hwm=$(awk '/VmHWM/ {print $2, $3}' "/proc/$pid/status")
    local verify=0
    "$build/imgctl" -s "$root/imgd.sock" verify >"$root/verify.txt" 2>&1 || verify=$?
    kill -TERM "$pid"; wait "$pid" || true

    local db=$root/state/imgd.db
    printf '%s: %d files, drained in %.1f s (%.1f jobs/s), worst status %d ms, supervisor VmHWM %s\n' \
        "$name" "$files" "$(echo "$drain_ms / 1000" | bc -l)" \
        "$(echo "$files * 1000 / $drain_ms" | bc -l)" "$worst" "$hwm"
    local overflowed
    overflowed=$(grep -q 'inotify queue overflowed' "$root/imgd.log" && echo yes || echo no)
    if [ "$name" = flat ] && [ "$files" -gt 16384 ]; then
        check "inotify queue overflowed" yes "$overflowed"   # one event a file: past 16384
    else
        printf '   --   %-34s %s\n' "inotify queue overflowed" "$overflowed"
    fi
    check "jobs" "$files" "$(sqlite3 "$db" 'SELECT count(*) FROM jobs')"
    check "one job per file" "$files" "$(sqlite3 "$db" 'SELECT count(DISTINCT source_path) FROM jobs')"
    check "done at the first attempt" "$files" \
        "$(sqlite3 "$db" "SELECT count(*) FROM jobs WHERE state = 'done' AND attempts = 1")"
    check "outputs" "$files" "$(find "$root/media" -name '*_s.webp' | wc -l)"
    check "manifests" "$files" "$(find "$root/media" -name '*.manifest.json' | wc -l)"
    check "temporary files" 0 "$(find "$root/media" -name '.imgd-*' | wc -l)"
    check "imgctl verify exit status" 0 "$verify"
    [ $keep -eq 1 ] || rm -rf "$root"
}

# One small PNG, copied: each copy is its own source (by path).
sample() {
    [ -f "$out/sample.png" ] || { mkdir -p "$out"; "$build/imgd-mksample" "$out/sample.png" 64 48 >/dev/null; }
}

stage_flat() {
    sample
    mkdir -p "$1/staging/flat"
    for ((i = 0; i < files; i++)); do printf '%s/staging/flat/f%06d.png\n' "$1" "$i"; done |
        xargs -n 1000 sh -c 'for f; do cp "'"$out"'/sample.png" "$f"; done' sh
}
move_flat() { # one rename per file: one IN_MOVED_TO each, far past the queue's 16384
    find "$1/staging/flat" -name '*.png' -print0 | xargs -0 -n 1000 mv -t "$1/uploads"
}

stage_dirs() {
    sample
    for ((i = 0; i < files; i++)); do
        printf '%s/staging/dirs/d%03d/f%06d.png\n' "$1" $(( i % dirs )) "$i"
    done | xargs -n 1000 sh -c 'for f; do mkdir -p "${f%/*}"; cp "'"$out"'/sample.png" "$f"; done' sh
}
move_dirs() { # new folders: their files are seen by the walk of each folder moved in
    for d in "$1"/staging/dirs/d*; do mv "$d" "$1/uploads/"; done
}

# The supervisor stopped for stop_s seconds with jobs in flight and uploads arriving.
run_sigstop() {
    local root=$out/sigstop half=$(( files / 2 ))
    rm -rf "$root"
    mkdir -p "$root/uploads" "$root/media" "$root/state" "$root/staging/a" "$root/staging/b"
    cat >"$root/imgd.conf" <<EOF
state_dir = "$root/state";
socket = "$root/imgd.sock";
workers = $workers;
watch = ( { path = "$root/uploads"; output = "$root/media"; pipeline = "p"; recursive = true; } );
pipelines = { p = ( { name = "s"; width = 32; height = 32; fit = "cover"; format = "webp"; } ); };
limits = { job_timeout = 10; };
degradation = { enabled = false; };
EOF
    sample
    for ((i = 0; i < files; i++)); do
        printf '%s/staging/%s/f%06d.png\n' "$root" "$([ $i -lt $half ] && echo a || echo b)" "$i"
    done | xargs -n 1000 sh -c 'for f; do cp "'"$out"'/sample.png" "$f"; done' sh
    "$build/imgd" -c "$root/imgd.conf" 2>"$root/imgd.log" &
    local pid=$!
    "$build/imgctl" -s "$root/imgd.sock" --connect-timeout 20s status >/dev/null || true
    find "$root/staging/a" -name '*.png' -print0 | xargs -0 -n 1000 mv -t "$root/uploads"
    # Jobs in flight, then the stop; the second half arrives while it lasts.
    local running=0
    while [ "${running:-0}" -eq 0 ]; do
        sleep 0.05
        running=$(sqlite3 "$root/state/imgd.db" "SELECT count(*) FROM jobs WHERE state = 'running'" 2>/dev/null || echo 0)
    done
    kill -STOP "$pid"
    local t_stop
    t_stop=$(now_ms)
    find "$root/staging/b" -name '*.png' -print0 | xargs -0 -n 1000 mv -t "$root/uploads"
    local left=$(( stop_s * 1000 - ($(now_ms) - t_stop) ))
    [ "$left" -gt 0 ] && sleep "$(echo "$left / 1000" | bc -l)"
    kill -CONT "$pid"
    local t0 lat
    t0=$(now_ms)
    "$build/imgctl" -s "$root/imgd.sock" status >/dev/null 2>&1 || true
    lat=$(( $(now_ms) - t0 ))
    "$build/imgctl" -s "$root/imgd.sock" wait --timeout 3600 >/dev/null 2>&1 || true
    local drain_ms=$(( $(now_ms) - t0 ))
    local verify=0
    "$build/imgctl" -s "$root/imgd.sock" verify >"$root/verify.txt" 2>&1 || verify=$?
    kill -TERM "$pid"; wait "$pid" || true
    local db=$root/state/imgd.db
    printf 'sigstop: %d files (%d running at the stop), stopped %d s, status answered %d ms after SIGCONT, all done %.1f s after it\n' \
        "$files" "$running" "$stop_s" "$lat" "$(echo "$drain_ms / 1000" | bc -l)"
    check "status within 1 s of SIGCONT" yes "$([ "$lat" -le 1000 ] && echo yes || echo no)"
    check "jobs" "$files" "$(sqlite3 "$db" 'SELECT count(*) FROM jobs')"
    check "one job per file" "$files" "$(sqlite3 "$db" 'SELECT count(DISTINCT source_path) FROM jobs')"
    check "done at the first attempt" "$files" \
        "$(sqlite3 "$db" "SELECT count(*) FROM jobs WHERE state = 'done' AND attempts = 1")"
    check "timed out (log)" 0 "$(grep -c 'timed out after' "$root/imgd.log" || true)"
    check "lease expired (log)" 0 "$(grep -c 'lease expired' "$root/imgd.log" || true)"
    check "outputs" "$files" "$(find "$root/media" -name '*_s.webp' | wc -l)"
    check "temporary files" 0 "$(find "$root/media" -name '.imgd-*' | wc -l)"
    check "imgctl verify exit status" 0 "$verify"
    [ $keep -eq 1 ] || rm -rf "$root"
}

command -v bc >/dev/null || { apt-get install -y -qq bc >/dev/null 2>&1 || true; }
if [ "$case_" = burst ] || [ "$case_" = all ]; then
    log "flat: $files files moved in one by one"
    run flat
    log "dirs: $files files in $dirs new folders moved in"
    run dirs
fi
if [ "$case_" = sigstop ] || [ "$case_" = all ]; then
    log "sigstop: the supervisor stopped for $stop_s s with jobs in flight, $files files"
    run_sigstop
fi
exit $failed
