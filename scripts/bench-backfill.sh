#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The backfill benchmark of issue 17 (a script, not a test): a variant added to a pipeline
# whose sources are all done, rendered by imgd's reconciliation while uploads keep coming.
#
#   scripts/bench-backfill.sh [--sources N] [--live N] [--out DIR] [--build DIR]
#
# imgd (workers = nproc) takes in --sources (default 10,000) small PNGs (copies of the
# benchmark corpus' 64x64 images, scripts/bench.sh, under distinct names) with a pipeline of
# one 32x32 JPEG (degradation off: they all arrive at once); then a 48x48 WebP variant is
# added and imgd reloaded (degradation on, as by default). It reports the time
# from the reload until no reconciliation job is left (the pass and the backfill), the rate,
# and the drop-to-manifest latency of --live (default 20) uploads dropped one by one during
# the backfill, against the same uploads on the idle daemon afterwards (same configuration,
# same work per upload: both variants), and by how much the backfill raised it next to one
# upload's render time (claim to done on the idle daemon, from imgd's log); then what
# `imgctl plan` prints.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

sources=10000
live=20
out=$top/build/bench-backfill
build=${IMGD_BUILD:-$top/build}
while [ $# -gt 0 ]; do
    case $1 in
        --sources) sources=$2; shift ;;
        --live) live=$2; shift ;;
        --out) out=$2; shift ;;
        --build) build=$2; shift ;;
        -h|--help) sed -n '/^#   scripts/p' "$0" | sed 's/^# *//' >&2; exit 2 ;;
        *) echo "bench-backfill.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
case $build in /*) ;; *) build=$top/$build ;; esac
case $out in /*) ;; *) out=$top/$out ;; esac
corpus=${IMGD_BENCH_CORPUS:-$HOME/.cache/imgd-bench}/small
if [ ! -d "$corpus" ]; then
    echo "bench-backfill.sh: no $corpus: run scripts/bench.sh --pipelines small once" >&2
    exit 1
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target imgd imgd-worker imgctl >/dev/null
rm -rf "$out"
mkdir -p "$out"

python3 -u - "$build" "$out" "$corpus" "$sources" "$live" "$(nproc)" <<'PY'
import glob, json, os, re, shutil, statistics, subprocess, sys, threading, time

build, out, corpus, n_sources, n_live, ncpu = sys.argv[1:7]
n_sources, n_live, ncpu = int(n_sources), int(n_live), int(ncpu)
imgctl = os.path.join(build, "imgctl")
up, media, stage = (os.path.join(out, d) for d in ("up", "media", "stage"))
for d in (up, media, stage):
    os.makedirs(d)
conf = os.path.join(out, "imgd.conf")
sock = os.path.join(out, "imgd.sock")
THUMB = '{ name = "thumb"; width = 32; height = 32; fit = "cover"; format = "jpeg"; }'
X = '{ name = "x"; width = 48; height = 48; fit = "cover"; format = "webp"; }'

def write_conf(variants, degrade=True):
    with open(conf, "w") as f:
        f.write('state_dir = "%s/state";\nsocket = "%s";\nworkers = %d;\n' % (out, sock, ncpu))
        if not degrade:
            # The sources arrive all at once: a backlog of uploads that would degrade them.
            f.write('degradation = { enabled = false; };\n')
        f.write('watch = ( { path = "%s"; output = "%s"; pipeline = "p"; recursive = true; } );\n'
                % (up, media))
        f.write("pipelines = { p = ( %s ); };\n" % ", ".join(variants))

def ctl(*args):
    return subprocess.run([imgctl, "-s", sock] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)

def status():
    r = ctl("status", "--json")
    return json.loads(r.stdout)

files = sorted(glob.glob(os.path.join(corpus, "s*.png")))
write_conf([THUMB], degrade=False)
log = open(os.path.join(out, "imgd.log"), "w")
p = subprocess.Popen([os.path.join(build, "imgd"), "-c", conf], stderr=log)
try:
    while subprocess.run([imgctl, "-s", sock, "--connect-timeout", "10", "status"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 3:
        pass
    # The sources: distinct names, 1000 per folder, moved in at once.
    for i in range(n_sources):
        d = os.path.join(stage, "d%03d" % (i // 1000))
        if i % 1000 == 0:
            os.makedirs(d)
        shutil.copyfile(files[i % len(files)], os.path.join(d, "src%06d.png" % i))
    t0 = time.monotonic()
    for d in sorted(os.listdir(stage)):
        os.rename(os.path.join(stage, d), os.path.join(up, d))
    while status()["jobs"].get("done", 0) < n_sources:
        time.sleep(0.5)
    print("intake: %d sources done in %.1f s" % (n_sources, time.monotonic() - t0), flush=True)

    os.makedirs(os.path.join(up, "live"))
    def live_drop(tag, i):
        name = "%s%03d" % (tag, i)
        src = os.path.join(stage, name + ".png")
        shutil.copyfile(files[(7 * i + 3) % len(files)], src)
        manifest = os.path.join(media, "live", name + ".manifest.json")
        a = time.monotonic()
        os.rename(src, os.path.join(up, "live", name + ".png"))
        while not os.path.exists(manifest):
            time.sleep(0.001)
        return (time.monotonic() - a) * 1000

    write_conf([THUMB, X])
    t0 = time.monotonic()
    assert ctl("reload").returncode == 0
    during = []
    def live_loop():
        for i in range(n_live):
            during.append(live_drop("busy", i))
            time.sleep(0.5)
    th = threading.Thread(target=live_loop)
    th.start()
    samples = []
    while True:
        s = status().get("reconcile", {})
        samples.append((time.monotonic() - t0, s.get("remaining"), s.get("done")))
        if not s.get("scanning") and s.get("remaining", 1) == 0 and time.monotonic() - t0 > 1:
            break
        time.sleep(0.2)
    backfill_s = time.monotonic() - t0
    th.join()
    plan = ctl("plan").stdout
    idle = []
    for i in range(n_live):
        idle.append(live_drop("idle", i))
        time.sleep(0.3)
    done = status()["reconcile"]["done"]
    print("backfill: %d reconciliation jobs (one 48x48 WebP each) done %.1f s after the "
          "reload: %.0f sources/s, %d workers" % (done, backfill_s, done / backfill_s, ncpu))
    def st(xs):
        return "p50 %.0f ms, max %.0f ms" % (statistics.median(xs), max(xs))
    print("live upload, drop to manifest (both variants): during the backfill %s (%d uploads, "
          "the first %d s of it); idle %s" % (st(during), len(during),
                                              min(backfill_s, n_live * 0.5), st(idle)))
    print("  during, in drop order (ms): %s" % " ".join("%.0f" % x for x in during))
    # One job's render time: the idle uploads' claim to done, as imgd logs it.
    log.flush()
    took = [float(m.group(1)) for m in re.finditer(
        r"/live/idle\d+\.png: done, \d+ outputs in (\d+) ms", open(os.path.join(out, "imgd.log")).read())]
    if took:
        print("  latency raised by %.0f ms (p50 during - p50 idle); one upload's render time "
              "(claim to done, idle, p50): %.0f ms" % (statistics.median(during) -
                                                      statistics.median(idle),
                                                      statistics.median(took)))
    print("imgctl plan after the backfill:")
    print(plan.rstrip())
finally:
    p.terminate()
    p.wait()
PY
