#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The soak of issue 7 (a script, not a test): imgd on the avatar pipeline of etc/imgd.conf
# processes --images distinct JPEGs dropped in batches, and the supervisor's and the
# workers' resident memory (VmRSS, /proc) is sampled after every batch. It prints the
# samples at every tenth of the run and the growth from the end of the warm-up (the first
# --warmup images) to the end; target: under 10% for the supervisor and for the workers.
#
#   scripts/soak.sh [--images N] [--warmup N] [--size WxH] [--workers N] [--max-jobs N]
#                   [--batch N] [--build DIR] [--out DIR] [--keep]
#
# Defaults: 10000 images of 1200x900 (made once from 20 images of build/imgd-mksample, each
# copy made distinct by a JPEG comment, so that no two have the same content), warm-up
# 1000, workers = nproc, batches of 200. --max-jobs sets limits.worker_max_jobs; the default
# 0 never replaces a worker, so that a leak in a worker shows instead of being recycled away
# (imgd's own default is 200). The tree goes to --out (default build/soak) and is removed at
# the end unless --keep is given.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

images=10000
warmup=1000
size=1200x900
workers=$(nproc)
max_jobs=0
batch=200
build=${IMGD_BUILD:-$top/build}
out=$top/build/soak
keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --images) images=$2; shift ;;
        --warmup) warmup=$2; shift ;;
        --size) size=$2; shift ;;
        --workers) workers=$2; shift ;;
        --max-jobs) max_jobs=$2; shift ;;
        --batch) batch=$2; shift ;;
        --build) build=$2; shift ;;
        --out) out=$2; shift ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '/^#   scripts/,/^#  *\[--batch/p' "$0" | sed 's/^# *//' >&2; exit 2 ;;
        *) echo "soak.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
[ "$warmup" -lt "$images" ] || { echo "soak.sh: --warmup must be below --images" >&2; exit 2; }
case $build in /*) ;; *) build=$top/$build ;; esac
case $out in /*) ;; *) out=$top/$out ;; esac
log() { printf '== %s\n' "$*" >&2; }

scripts/deps.sh
if ! command -v python3 >/dev/null; then
    log "installing python3"
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >/dev/null
fi
log "building into $build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target imgd imgd-worker imgctl imgd-mksample >/dev/null

rm -rf "$out"
mkdir -p "$out/up" "$out/media" "$out/state" "$out/stage" "$out/pool"
w=${size%x*}
h=${size#*x}
log "making 20 source images of ${w}x${h}"
for i in $(seq 1 20); do
    "$build/imgd-mksample" "$out/pool/p$i.jpg" "$w" "$h" --seed "$i" >/dev/null
done

{
    cat <<EOF
state_dir = "$out/state";
socket = "$out/imgd.sock";
workers = $workers;
limits = { worker_max_jobs = $max_jobs; };
watch = ( { path = "$out/up"; output = "$out/media"; pipeline = "avatar"; recursive = true; } );
EOF
    sed -n '/^pipelines = {/,/^};/p' "$top/etc/imgd.conf"
} > "$out/imgd.conf"

"$build/imgd" -c "$out/imgd.conf" 2> "$out/imgd.log" &
imgd_pid=$!
cleanup() {
    kill "$imgd_pid" 2>/dev/null || true
    wait "$imgd_pid" 2>/dev/null || true
    [ "$keep" -eq 1 ] || rm -rf "$out"
}
trap cleanup EXIT
# 3: no answer within 20 s; 1 is an answer with an alert active.
rc=0; "$build/imgctl" -s "$out/imgd.sock" --connect-timeout 20 status >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 3 ] || { log "imgd did not start; see $out/imgd.log"; exit 1; }

log "soak: $images images, warm-up $warmup, batches of $batch, $workers worker(s), worker_max_jobs $max_jobs"
python3 - "$build" "$out" "$imgd_pid" "$images" "$warmup" "$batch" <<'PY'
import glob, json, os, subprocess, sys, time

build, out, pid, images, warmup, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(int, sys.argv[4:])
pool = [open(p, "rb").read() for p in sorted(glob.glob(out + "/pool/*.jpg"))]

def rss_kb(p):
    try:
        for line in open("/proc/%d/status" % p):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

def children(p):
    kids = []
    for t in glob.glob("/proc/%d/task/*/children" % p):
        try:
            kids += [int(x) for x in open(t).read().split()]
        except OSError:
            pass
    return kids

def status():
    r = subprocess.run([build + "/imgctl", "-s", out + "/imgd.sock", "status", "--json"],
                       capture_output=True, text=True)
    return json.loads(r.stdout)

def distinct(i):
    """Copy i: a pool image with a JPEG comment (COM) naming it, right after SOI."""
    data = pool[i % len(pool)]
    text = ("imgd soak %d" % i).encode()
    com = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
    return data[:2] + com + data[2:]

t0 = time.time()
samples = []   # (done, seconds, supervisor kB, {worker pid: kB})
dropped = 0
while dropped < images:
    n = min(batch, images - dropped)
    for i in range(dropped, dropped + n):
        staged = "%s/stage/s%05d.jpg" % (out, i)
        with open(staged, "wb") as f:
            f.write(distinct(i))
        os.rename(staged, "%s/up/s%05d.jpg" % (out, i))
    dropped += n
    while True:
        st = status()
        jobs = st["jobs"]
        if jobs["queued"] + jobs["running"] + jobs["retry"] == 0 and \
           jobs["done"] + jobs["dead"] >= dropped:
            break
        time.sleep(0.2)
    workers = {k: rss_kb(k) for k in children(pid)}
    samples.append((jobs["done"], time.time() - t0, rss_kb(pid), workers, jobs["dead"]))

def mib(kb):
    return kb / 1024.0

print("%8s %8s %10s  %s" % ("done", "seconds", "supervisor", "workers (VmRSS MiB, by pid)"))
step = max(1, len(samples) // 10)
for k, s in enumerate(samples):
    if k % step == 0 or k == len(samples) - 1 or (s[0] >= warmup and samples[k - 1][0] < warmup):
        ws = " ".join("%d:%.1f" % (p, mib(v)) for p, v in sorted(s[3].items()))
        print("%8d %8.1f %8.1f MiB  %s" % (s[0], s[1], mib(s[2]), ws))

base = next(s for s in samples if s[0] >= warmup)
last = samples[-1]
def growth(a, b):
    return 100.0 * (b - a) / a if a else float("nan")
sup = growth(base[2], last[2])
# Workers: each worker alive at both points, and the largest of them.
same = [p for p in last[3] if p in base[3]]
wmax0, wmax1 = max(base[3].values() or [0]), max(last[3].values() or [0])
print()
print("images %d, done %d, dead %d, %.0f s (%.1f images/s)" %
      (images, last[0], last[4], last[1], last[0] / last[1] if last[1] else 0))
print("supervisor VmRSS after warm-up (%d done) %.1f MiB, at the end %.1f MiB: growth %+.1f%%" %
      (base[0], mib(base[2]), mib(last[2]), sup))
print("largest worker VmRSS after warm-up %.1f MiB, at the end %.1f MiB: growth %+.1f%%" %
      (mib(wmax0), mib(wmax1), growth(wmax0, wmax1)))
for p in same:
    print("  worker %d: %.1f -> %.1f MiB (%+.1f%%)" % (p, mib(base[3][p]), mib(last[3][p]),
                                                      growth(base[3][p], last[3][p])))
if not same:
    print("  (no worker lived from the warm-up to the end: they were replaced)")
PY
