#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The benchmark of issue 7 (a script, not a test): imgd end to end against the bare pipeline
# (build/imgd-bench-pipeline: imgd's own render code without daemon, ledger, verify or disk
# writes), the same bare pipeline writing each output durably (durable: a temporary file,
# fsync, rename, inside the timed work: the least imgd's guarantee costs), vipsthumbnail run
# once per variant, ImageMagick's convert at its best and sharp,
# every contender at parallelism = JOBS (default: nproc), all in one invocation so that the
# ratios hold on a noisy machine, for the avatar and web pipelines of issue 7, and the small
# pipeline of issue 16 (one 32x32 JPEG from each of 2,000 distinct 64x64 PNGs: small jobs,
# where the daemon's own cost per job shows; imgd, bare and durable, and for its scaling
# table imgd1, bare1 and noop, which are not in the default contenders), for which imgd's
# row also gives the supervisor's fsync and fdatasync calls per job (counted by perf stat on
# the syscall tracepoints, the supervisor alone) and its CPU time per job (and how much of it
# the kernel's: the system calls). IMGD_BENCH_PERF=1 also samples where the supervisor's CPU
# goes (perf record, call graphs, into <out>/<pipeline>/<contender>/perf.data; the sampling
# slows the supervisor: quote figures from runs without it). Then the
# drop-to-published latency of one 12-megapixel JPEG on an idle imgd against the bare
# pipeline's time for it, and (--profile) where the bare pipeline spends its time.
#
#   scripts/bench.sh [--quick] [--corpus DIR] [--out DIR] [--build DIR] [--jobs N]
#                    [--pipelines "avatar web small"] [--contenders "imgd bare durable
#                    vipsthumbnail imagemagick sharp" (and imgd1 bare1 noop)] [--rounds N]
#                    [--no-latency] [--profile] [--no-install]
#
# --rounds N runs every contender N times, in turns (the order reversed every round, so that
# a drift of the machine's speed falls on every contender alike), and reports the median of
# each figure and the spread of the per-round ratios; on a machine whose speed swings by 10%
# from one minute to the next, one round cannot resolve a 10% target. Default 1.
# --quick uses 12 images of the corpus instead of all of them. The corpus is built once in
# --corpus (default $IMGD_BENCH_CORPUS or ~/.cache/imgd-bench): the JPEG and PNG photographs
# of 2 to 15 megapixels shipped by Debian's wallpaper packages (installed with apt-get when
# missing), plus a few very large ones made with build/imgd-mksample and a 12-megapixel JPEG
# cut from a real photograph. sharp is installed there from npm (sharp@0.33, with its own
# libvips from the npm package @img/sharp-libvips-linux-x64).
#
# Results go to --out (default build/bench): a table on standard output and in report.txt,
# bench-results.csv, bench-results.png (when gnuplot is there), and per pipeline and
# contender the outputs, manifests and logs. For every contender the output dimensions and
# sizes are compared with imgd's, so no one wins by doing less.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

quick=0
corpus=${IMGD_BENCH_CORPUS:-$HOME/.cache/imgd-bench}
out=$top/build/bench
build=${IMGD_BUILD:-$top/build}
jobs=$(nproc)
pipelines="avatar web small"
rounds=1
contenders="imgd bare durable vipsthumbnail imagemagick sharp"
latency=1
profile=0
install=1

usage() {
    sed -n '/^#   scripts/,/^# --quick/p' "$0" | sed 's/^# \{0,1\}//' | head -n -1 >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1 ;;
        --corpus) corpus=$2; shift ;;
        --out) out=$2; shift ;;
        --build) build=$2; shift ;;
        --jobs) jobs=$2; shift ;;
        --pipelines) pipelines=$2; shift ;;
        --contenders) contenders=$2; shift ;;
        --rounds) rounds=$2; shift ;;
        --no-latency) latency=0 ;;
        --profile) profile=1 ;;
        --no-install) install=0 ;;
        -h|--help) usage ;;
        *) echo "bench.sh: unknown option '$1'" >&2; usage ;;
    esac
    shift
done
case $rounds in ''|*[!0-9]*|0) echo "bench.sh: --rounds wants a positive number, not '$rounds'" >&2; exit 2 ;; esac
case $build in /*) ;; *) build=$top/$build ;; esac
case $out in /*) ;; *) out=$top/$out ;; esac
mkdir -p "$corpus" "$out"
corpus=$(cd "$corpus" && pwd)
log() { printf '== %s\n' "$*" >&2; }
has() { [[ " $contenders " == *" $1 "* ]]; }

# --- what the benchmark needs ------------------------------------------------------------
wallpapers="plasma-workspace-wallpapers ukui-wallpapers mate-backgrounds"
if [ "$install" = 1 ]; then
    need=()
    for p in $wallpapers libvips-tools; do
        dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
    [ -x /usr/bin/convert ] || need+=(imagemagick)  # /usr/local/bin/convert may be a stand-in
    command -v gnuplot >/dev/null || need+=(gnuplot-nox)
    command -v node >/dev/null || need+=(nodejs npm)
    command -v sqlite3 >/dev/null || need+=(sqlite3)
    command -v python3 >/dev/null || need+=(python3)
    if [ ${#need[@]} -gt 0 ]; then
        log "installing ${need[*]}"
        apt-get update -qq >/dev/null || true
        # gnuplot is optional: without it, the rest is still installed.
        # shellcheck disable=SC2046  # package names, split on purpose
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${need[@]}" >/dev/null ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                $(printf '%s\n' "${need[@]}" | grep -v gnuplot) >/dev/null
    fi
    if has sharp && [ ! -d "$corpus/node/node_modules/sharp" ]; then
        log "installing sharp@0.33 from npm into $corpus/node"
        mkdir -p "$corpus/node"
        (cd "$corpus/node" && npm install --no-audit --no-fund --loglevel=error sharp@0.33 >&2) ||
            log "npm install sharp@0.33 failed: sharp is left out"
    fi
fi
if has imagemagick && [ ! -x /usr/bin/convert ]; then
    log "ImageMagick is not installed (/usr/bin/convert): left out"
    contenders=${contenders/imagemagick/}
fi
if has sharp && [ ! -d "$corpus/node/node_modules/sharp" ]; then
    log "sharp is not installed: left out"
    contenders=${contenders/sharp/}
fi
if has vipsthumbnail && ! command -v vipsthumbnail >/dev/null; then
    log "vipsthumbnail is not installed: left out"
    contenders=${contenders/vipsthumbnail/}
fi

scripts/deps.sh
log "building into $build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target imgd imgd-worker imgctl imgd-mksample \
    imgd-bench-pipeline >/dev/null

# --- the helper: socket client, /proc sampling, rusage, header parsing, report -------------
lib=$out/benchlib.py
cat > "$lib" <<'PY'
import json, os, socket, subprocess, sys, time, resource, struct, csv, glob, statistics

def sock_req(s, f, req):
    s.sendall((json.dumps(dict(v=1, **req)) + "\n").encode())
    line = f.readline()
    if not line:
        raise SystemExit("daemon closed the socket")
    return json.loads(line)

def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s, s.makefile("r")

def cmd_wait_events(path, n, timeout):
    """Subscribes to imgd's events, says "subscribed", then waits (blocked in a read, never
    polling: a poller would compete with imgd for the CPUs) until n jobs finished (done, dead
    or cancelled) and says "finished"."""
    n, finished = int(n), set()
    s, f = connect(path)
    s.settimeout(float(timeout))
    if not sock_req(s, f, {"cmd": "events"}).get("ok"):
        print("imgd refused the subscription", flush=True)
        return 1
    print("subscribed", flush=True)
    try:
        while len(finished) < n:
            line = f.readline()
            if not line:
                print("imgd closed the subscription after %d finished jobs" % len(finished))
                return 1
            ev = json.loads(line)
            if ev.get("event") in ("done", "dead", "cancelled"):
                finished.add(ev["job"]["id"])
    except socket.timeout:
        print("timed out after %s s waiting for %d finished jobs (%d so far)" % (
            timeout, n, len(finished)))
        return 1
    print("finished")
    return 0

def cmd_jobs(path, first, last):
    """id state created_us updated_us source for ids first..last (imgctl show's data)."""
    s, f = connect(path)
    for i in range(int(first), int(last) + 1):
        r = sock_req(s, f, {"cmd": "show", "id": i})
        if not r.get("ok"):
            continue
        j = r["result"]["job"]
        print("%d\t%s\t%d\t%d\t%s" % (j["id"], j["state"], j["created_us"], j["updated_us"],
                                      j["source"]))
    s.close()
    return 0

def proc_tree(pid):
    pids, todo = [], [int(pid)]
    while todo:
        p = todo.pop()
        pids.append(p)
        for t in glob.glob("/proc/%d/task/*/children" % p):
            try:
                todo += [int(x) for x in open(t).read().split()]
            except OSError:
                pass
    return pids

def cmd_cpu(pid):
    """CPU seconds (user + system) of pid and its descendants, the ones that ended too
    (workers replaced: the supervisor's cutime and cstime), their pids and VmHWM (kB)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, hwm = 0.0, []
    for p in proc_tree(pid):
        try:
            st = open("/proc/%d/stat" % p).read()
            fields = st[st.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            if p == int(pid):
                total += (int(fields[13]) + int(fields[14])) / tick
            for line in open("/proc/%d/status" % p):
                if line.startswith("VmHWM:"):
                    hwm.append("%d:%s" % (p, line.split()[1]))
        except (OSError, ValueError):
            pass
    print("cpu_s=%.3f hwm=%s" % (total, ",".join(hwm)))
    return 0

def cmd_rusage(*argv):
    """Runs argv; prints wall_s, cpu_s and maxrss_kb of it and everything it waited for."""
    t0 = time.monotonic()
    rc = subprocess.call(list(argv))
    wall = time.monotonic() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print("rc=%d wall_s=%.3f cpu_s=%.3f maxrss_kb=%d" % (rc, wall, ru.ru_utime + ru.ru_stime,
                                                          ru.ru_maxrss))
    return 0

# --- image headers: dimensions of JPEG, PNG and WebP files without any image library ------
def dims(path):
    with open(path, "rb") as fh:
        d = fh.read(1 << 16)
        if d[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", d[16:24])
        if d[:4] == b"RIFF" and d[8:12] == b"WEBP":
            kind = d[12:16]
            if kind == b"VP8X":
                w = 1 + int.from_bytes(d[24:27], "little")
                h = 1 + int.from_bytes(d[27:30], "little")
                return w, h
            if kind == b"VP8L":
                b = int.from_bytes(d[21:25], "little")
                return 1 + (b & 0x3FFF), 1 + ((b >> 14) & 0x3FFF)
            if kind == b"VP8 ":
                w, h = struct.unpack("<HH", d[26:30])
                return w & 0x3FFF, h & 0x3FFF
        if d[:2] == b"\xff\xd8":
            fh.seek(2)
            while True:
                m = fh.read(2)
                if len(m) < 2 or m[0] != 0xFF:
                    return None
                if m[1] in (0xD8, 0x01) or 0xD0 <= m[1] <= 0xD7:
                    continue
                n = struct.unpack(">H", fh.read(2))[0]
                if m[1] in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                            0xCE, 0xCF):
                    h, w = struct.unpack(">xHH", fh.read(5))
                    return w, h
                fh.seek(n - 2, 1)
    return None

def has_meta(path):
    """Whether an output carries EXIF or XMP (WebP chunks, JPEG APP1)."""
    with open(path, "rb") as fh:
        d = fh.read()
    if d[:4] == b"RIFF":
        i = 12
        while i + 8 <= len(d):
            if d[i:i + 4] in (b"EXIF", b"XMP "):
                return True
            i += 8 + int.from_bytes(d[i + 4:i + 8], "little") + (d[i + 4] & 1)
        return False
    return d[:2] == b"\xff\xd8" and (b"Exif\0\0" in d[:65536] or b"http://ns.adobe.com/xap" in d[:65536])

def stem(p):
    b = os.path.basename(p)
    return b.rsplit(".", 1)[0]

def outputs_from_dir(d, variants):
    """{(image stem, variant): (w, h, bytes)} from files named <stem>_<variant>.<ext>."""
    r = {}
    for p in glob.glob(os.path.join(d, "*")):
        name = os.path.basename(p)
        if name.startswith(".") or "." not in name:
            continue
        base = name.rsplit(".", 1)[0]
        for v in variants:
            if base.endswith("_" + v):
                wh = dims(p)
                if wh:
                    r[(base[:-len(v) - 1], v)] = (wh[0], wh[1], os.path.getsize(p), has_meta(p))
    return r

def outputs_from_manifest(path):
    r = {}
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if f[0] == "output":
            r[(stem(f[1]), f[2])] = (int(f[3]), int(f[4]), int(f[5]), False)
    return r

def kv(path):
    try:
        return dict(x.split("=", 1) for x in open(path).read().split() if "=" in x)
    except OSError:
        return {}

def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

VARIANTS = {"avatar": ["small", "medium", "large"], "web": ["1600", "800", "card"],
            "small": ["thumb"]}
NAMES = {"imgd": "imgd end to end", "bare": "bare pipeline",
         "durable": "bare, outputs fsynced", "imgd1": "imgd, 1 worker",
         "bare1": "bare, 1 process", "noop": "imgd, no-op render", "vipsthumbnail": "vipsthumbnail",
         "imagemagick": "ImageMagick", "sharp": "sharp"}

def rounds_of(out, pl, c):
    """Every round's figures of contender c (a list of dicts, oldest first)."""
    try:
        return [dict(x.split("=", 1) for x in line.split() if "=" in x)
                for line in open(os.path.join(out, pl, "rounds-%s.txt" % c)) if "=" in line]
    except OSError:
        return []

MEDIAN_KEYS = ("wall_s", "cpu_s", "p50_ms", "p99_ms", "supervisor_cpu_s", "supervisor_sys_s",
               "supervisor_syncs")

def median_result(rs):
    """One result from several rounds: the median of each timing, the largest peak RSS."""
    r = dict(rs[-1])
    for k in MEDIAN_KEYS:
        xs = [float(x[k]) for x in rs if k in x]
        if xs:
            r[k] = ("%.0f" if k.endswith("_ms") else "%.3f") % statistics.median(xs)
    for k in ("maxrss_kb", "supervisor_hwm_kb"):
        xs = [int(x[k]) for x in rs if k in x]
        if xs:
            r[k] = str(max(xs))
    r["images_per_s"] = "%.3f" % (int(r["images"]) / float(r["wall_s"]))
    return r

def result_of(out, pl, c, rs):
    """Contender c's figures: the median of its rounds rs, or its one result."""
    return median_result(rs) if len(rs) > 1 else kv(os.path.join(out, pl, c, "result.txt"))

def cmd_report(out, pipelines, contenders):
    rows, lines = [], []
    say = lambda s="": lines.append(s)
    for pl in pipelines.split():
        variants = VARIANTS.get(pl, [])
        res, rounds = {}, {}
        for c in contenders.split():
            rounds[c] = rounds_of(out, pl, c)
            r = result_of(out, pl, c, rounds[c])
            if r:
                res[c] = r
        if not res:
            continue
        n_rounds = max(len(x) for x in rounds.values())
        ref_ips = float(res["imgd"]["images_per_s"]) if "imgd" in res else None
        ref_cpi = (float(res["imgd"]["cpu_s"]) / max(1, int(res["imgd"]["images"]))
                   if "imgd" in res else None)
        say("pipeline %s (%s images, %s jobs%s)" % (
            pl, next(iter(res.values())).get("images"), next(iter(res.values())).get("jobs"),
            ", median of %d rounds" % n_rounds if n_rounds > 1 else ""))
        say("%-17s %6s %8s %8s %9s %9s %8s %8s %10s %10s" % ("contender", "images", "wall s",
            "images/s", "CPU-s/img", "peak RSS", "p50 ms", "p99 ms", "imgd/this", "by CPU"))
        for c, r in res.items():
            n = int(r["images"]) or 1
            ips, cpu = float(r["images_per_s"]), float(r["cpu_s"]) / n
            rss = int(r["maxrss_kb"]) / 1024.0
            ratio = ref_ips / ips if ref_ips and ips else None
            # The same ratio from CPU-seconds per image: what the throughputs would be with
            # every core busy, and much less skewed by other work on the machine.
            cratio = cpu / ref_cpi if ref_cpi and cpu else None
            p50 = r.get("p50_ms", "")
            p99 = r.get("p99_ms", "")
            say("%-17s %6s %8.2f %8.2f %9.3f %7.0f MB %8s %8s %10s %10s" % (
                NAMES.get(c, c), r["images"], float(r["wall_s"]), ips, cpu, rss, p50 or "-",
                p99 or "-", "%.2fx" % ratio if ratio else "-", "%.2fx" % cratio if cratio else "-"))
            rows.append([pl, c, r["images"], r.get("errors", "0"), r["wall_s"],
                         "%.3f" % ips, "%.4f" % cpu, "%.1f" % rss, p50, p99,
                         "%.3f" % ratio if ratio else "", "%.3f" % cratio if cratio else "",
                         r.get("note", "").replace("_", " ")])
        if n_rounds > 1 and "imgd" in res:
            say("  imgd/this per round, by wall time (by CPU): min..max")
            for c in res:
                if c == "imgd":
                    continue
                pairs = list(zip(rounds["imgd"], rounds[c]))
                w = [float(b["wall_s"]) / float(a["wall_s"]) for a, b in pairs]
                u = [float(b["cpu_s"]) / float(a["cpu_s"]) for a, b in pairs]
                say("    %-15s %.2f..%.2f (%.2f..%.2f): %s" % (
                    NAMES.get(c, c), min(w), max(w), min(u), max(u),
                    " ".join("%.2f" % x for x in w)))
        if "imgd" in res and "supervisor_syncs" in res["imgd"]:
            n = max(1, int(res["imgd"]["images"]))
            say("  imgd: supervisor fsync+fdatasync %.2f per job (%s in all), supervisor CPU "
                "%.3f ms per job (%.3f of it in the kernel)" % (
                    float(res["imgd"]["supervisor_syncs"]) / n, res["imgd"]["supervisor_syncs"],
                    float(res["imgd"]["supervisor_cpu_s"]) * 1000.0 / n,
                    float(res["imgd"].get("supervisor_sys_s", 0)) * 1000.0 / n))
        if "imgd" in res and "supervisor_hwm_kb" in res["imgd"]:
            say("  imgd: supervisor peak RSS %.1f MB, worker peak RSS %.1f MB (largest), "
                "CPU split supervisor %.1f s / workers %.1f s" % (
                    int(res["imgd"]["supervisor_hwm_kb"]) / 1024.0,
                    int(res["imgd"]["maxrss_kb"]) / 1024.0,
                    float(res["imgd"].get("supervisor_cpu_s", 0)),
                    float(res["imgd"]["cpu_s"]) - float(res["imgd"].get("supervisor_cpu_s", 0))))
        for c, r in res.items():
            if r.get("note"):
                say("  %s: %s" % (NAMES.get(c, c), r["note"].replace("_", " ")))
        # Same work? Dimensions and bytes of every output against imgd's.
        ref = None
        refdir = os.path.join(out, pl, "imgd", "tree", "out")
        if os.path.isdir(refdir):
            ref = outputs_from_dir(refdir, variants)
        if ref:
            say("  outputs against imgd's (size ratio this/imgd per variant: median [min..max];"
                " dimension mismatches; > 2x flagged)")
            for c in res:
                if c == "imgd":
                    continue
                man = os.path.join(out, pl, c, "manifest.tsv")
                odir = os.path.join(out, pl, c, "out")
                if not os.path.isdir(odir):  # imgd1, noop: an imgd tree
                    odir = os.path.join(out, pl, c, "tree", "out")
                if c in ("bare", "durable", "bare1") and os.path.exists(man):
                    got = outputs_from_manifest(man)
                else:
                    got = outputs_from_dir(odir, variants)
                parts, flags, mism, missing = [], 0, [], 0
                meta = sum(1 for g in got.values() if g[3])
                for v in variants:
                    rs = []
                    for (s, vv), (w, h, b, _) in ref.items():
                        if vv != v:
                            continue
                        g = got.get((s, v))
                        if not g:
                            missing += 1
                            continue
                        if (g[0], g[1]) != (w, h):
                            mism.append("%s_%s %dx%d vs %dx%d" % (s, v, g[0], g[1], w, h))
                        q = g[2] / b if b else 0
                        rs.append(q)
                        if q > 2 or q < 0.5:
                            flags += 1
                    if rs:
                        parts.append("%s %.2f [%.2f..%.2f]" % (v, statistics.median(rs),
                                                               min(rs), max(rs)))
                say("    %-15s %s; %d dimension mismatches%s%s%s" % (
                    NAMES.get(c, c), ", ".join(parts), len(mism),
                    "; %d outputs over 2x apart (FLAG)" % flags if flags else "",
                    "; %d missing" % missing if missing else "",
                    "; %d outputs keep EXIF/XMP (not stripped)" % meta if meta else ""))
                for m in mism[:3]:
                    say("        e.g. %s" % m)
        say()
    lat = kv(os.path.join(out, "latency", "result.txt"))
    if lat:
        say("single-image latency: %s (%s), %s drops on an idle imgd (first drop excluded)" % (
            lat["image"], lat["megapixels"] + " MP", lat["drops"]))
        say("%-8s %22s %18s %18s %18s %10s" % ("pipeline", "drop->published p50", "job p50",
            "bare p50 (1 thr)", "bare p50 (dflt)", "imgd/bare"))
        for pl in pipelines.split():
            if ("%s_drop_p50_ms" % pl) not in lat:
                continue
            d = float(lat["%s_drop_p50_ms" % pl])
            b1 = float(lat["%s_bare1_p50_ms" % pl])
            say("%-8s %19.0f ms %15.0f ms %15.0f ms %15.0f ms %9.2fx" % (
                pl, d, float(lat["%s_job_p50_ms" % pl]), b1,
                float(lat.get("%s_bare0_p50_ms" % pl, "nan")), d / b1))
            rows.append(["latency-" + pl, "imgd", lat["drops"], "0", "", "", "", "",
                         "%.1f" % d, lat.get("%s_drop_p99_ms" % pl, ""), "%.3f" % (d / b1), "",
                         "drop->published p50 vs bare p50 %.1f ms" % b1])
        say()
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(out, "report.txt"), "w") as fh:
        fh.write(text + "\n")
    with open(os.path.join(out, "bench-results.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["pipeline", "contender", "images", "errors", "wall_s", "images_per_s",
                    "cpu_s_per_image", "peak_rss_mb", "p50_ms", "p99_ms", "imgd_ratio",
                    "imgd_ratio_by_cpu", "note"])
        w.writerows(rows)
    with open(os.path.join(out, "chart.dat"), "w") as fh:
        cs = [c for c in contenders.split()]
        fh.write("pipeline " + " ".join('"%s"' % NAMES.get(c, c) for c in cs) + "\n")
        for pl in pipelines.split():
            vals = []
            for c in cs:
                r = result_of(out, pl, c, rounds_of(out, pl, c))
                vals.append(r.get("images_per_s", "0") if r else "0")
            fh.write("%s %s\n" % (pl, " ".join(vals)))
    return 0

def cmd_stats(path, col, scale):
    """p50 and p99 of column col (0-based) of a TSV, times scale."""
    xs = [float(l.split("\t")[int(col)]) * float(scale) for l in open(path) if l.strip()]
    print("n=%d p50=%.1f p99=%.1f" % (len(xs), pct(xs, 50), pct(xs, 99)))
    return 0

def cmd_need(pipeline, w, h):
    """The size (WxH) the largest variant needs from a w x h source, for jpeg:size."""
    w, h = int(w), int(h)
    if pipeline == "avatar":
        s = min(1.0, max(400 / w, 400 / h))
    elif pipeline == "small":
        s = min(1.0, max(32 / w, 32 / h))
    else:
        s = max(min(1.0, 1600 / w, 1600 / h), min(1.0, max(320 / w, 320 / h)))
    ceil = lambda x: int(-(-x // 1))
    print("%dx%d" % (ceil(w * s), ceil(h * s)))
    return 0

if __name__ == "__main__":
    sys.exit(globals()["cmd_" + sys.argv[1].replace("-", "_")](*sys.argv[2:]))
PY
py() { python3 "$lib" "$@"; }

# --- the corpus ----------------------------------------------------------------------------
images=$corpus/images
if [ ! -s "$corpus/corpus.tsv" ]; then
    log "building the corpus in $images"
    rm -rf "$images"
    mkdir -p "$images"
    tmp=$(mktemp)
    for p in $wallpapers; do
        dpkg -L "$p" 2>/dev/null | grep -iE '\.(jpe?g|png)$' || true
    done | while read -r f; do
        [ -f "$f" ] && readlink -f "$f"
    done | sort -u > "$tmp"
    while read -r f; do
        w=$(vipsheader -f width "$f" 2>/dev/null) || continue
        h=$(vipsheader -f height "$f" 2>/dev/null) || continue
        mp=$(( w * h ))
        [ "$mp" -ge 2000000 ] && [ "$mp" -le 15000000 ] || continue
        name=${f#/usr/share/}
        name=${name#wallpapers/}
        name=${name#backgrounds/}
        name=${name//contents\//}
        name=${name//\//-}
        name=$(printf '%s' "$name" | tr -c 'A-Za-z0-9._\n-' '_')
        ext=${name##*.}
        ext=$(printf '%s' "$ext" | tr 'A-Z' 'a-z')
        [ "$ext" = jpeg ] && ext=jpg
        name=${name%.*}.$ext
        cp "$f" "$images/$name"
    done < "$tmp" 2>/dev/null
    rm -f "$tmp"
    # Very large ones, and the 12-megapixel JPEG of the latency test, cut from a photograph.
    "$build/imgd-mksample" "$images/zz-generated-8000x6000.jpg" 8000 6000 --seed 11 --quality 88
    "$build/imgd-mksample" "$images/zz-generated-7200x4800.jpg" 7200 4800 --seed 12 --quality 88
    "$build/imgd-mksample" "$images/zz-generated-6000x4000.png" 6000 4000 --seed 13
    photo=$(ls -S "$images"/*.jpg | head -1)
    vips resize "$photo" "$corpus/big.v" 2 >/dev/null 2>&1 &&
        vips crop "$corpus/big.v" "$corpus/12mp.jpg[Q=90]" 0 0 4000 3000 &&
        rm -f "$corpus/big.v" ||
        "$build/imgd-mksample" "$corpus/12mp.jpg" 4000 3000 --seed 14
    for f in "$images"/*; do
        printf '%s\t%s\t%s\t%s\n' "$(basename "$f")" "$(vipsheader -f width "$f" 2>/dev/null)" \
            "$(vipsheader -f height "$f" 2>/dev/null)" "$(stat -c %s "$f")"
    done > "$corpus/corpus.tsv"
fi
# The small jobs of issue 16: 2,000 distinct 64x64 PNGs, made once.
small_dir=$corpus/small
if [ "$(find "$small_dir" -name 's*.png' 2>/dev/null | wc -l)" -ne 2000 ]; then
    log "building the small-job corpus in $small_dir"
    rm -rf "$small_dir"
    mkdir -p "$small_dir"
    "$build/imgd-mksample" "$small_dir/s%04d.png" 64 64 --count 2000 --seed 100
fi
if [ "$quick" = 1 ]; then
    # 12 images: 8 JPEGs and 3 PNGs spread over the sorted list, plus one generated giant.
    spread() { # K: K lines of standard input, evenly spaced
        awk -v k="$1" '{ l[NR] = $0 } END { for (i = 0; i < k && i < NR; i++) print l[int(i * NR / k) + 1] }'
    }
    mapfile -t all < <(cut -f1 "$corpus/corpus.tsv" | grep -v '^zz-')
    mapfile -t jp < <(printf '%s\n' "${all[@]}" | grep '\.jpg$' | spread 8)
    mapfile -t pn < <(printf '%s\n' "${all[@]}" | grep '\.png$' | spread 3)
    selection=("${jp[@]}" "${pn[@]}" zz-generated-8000x6000.jpg)
else
    mapfile -t selection < <(cut -f1 "$corpus/corpus.tsv")
fi
n=${#selection[@]}
files=()
for s in "${selection[@]}"; do files+=("$images/$s"); done
mp_total=$(for s in "${selection[@]}"; do grep -P "^\Q$s\E\t" "$corpus/corpus.tsv"; done |
    awk -F'\t' '{ t += $2 * $3 } END { printf "%.0f", t / 1e6 }')
log "corpus: $n images ($(printf '%s\n' "${selection[@]}" | grep -c '\.jpg$') JPEG," \
    "$(printf '%s\n' "${selection[@]}" | grep -c '\.png$') PNG, $mp_total megapixels in all)"

# --- the configuration: the benchmark's pipelines, one watch per pipeline -----------------
write_config() { # DIR PIPELINE...
    local d=$1; shift
    mkdir -p "$d"
    {
        printf 'state_dir = "%s/state";\nsocket = "%s/imgd.sock";\nworkers = %d;\n' \
            "$d" "$d" "${workers:-$jobs}"
        printf 'watch = (\n'
        local sep=""
        for p in "$@"; do
            printf '%s  { path = "%s/up-%s"; output = "%s/out-%s"; pipeline = "%s"; }\n' \
                "$sep" "$d" "$p" "$d" "$p" "$p"
            sep=","
            mkdir -p "$d/up-$p" "$d/out-$p" "$d/stage-$p"
        done
        printf ');\n'
        # The work of issue 7, the same for every contender: the avatar pipeline (as in
        # etc/imgd.conf) and the web pipeline it defines (etc/imgd.conf's "web" does more:
        # WebP copies, a watermark, a smart crop under max_bytes, placeholders).
        cat <<'EOF'
pipelines = {
    avatar = (
        { name = "small";  width = 100; height = 100; fit = "cover";
          format = "webp"; quality = 80; mask = "circle"; },
        { name = "medium"; width = 200; height = 200; fit = "cover";
          format = "webp"; quality = 80; mask = "circle"; },
        { name = "large";  width = 400; height = 400; fit = "cover";
          format = "webp"; quality = 80; mask = "circle"; }
    );
    web = (
        { name = "1600"; width = 1600; height = 1600; fit = "inside";
          format = "jpeg"; quality = 82; },
        { name = "800";  width = 800;  height = 800;  fit = "inside";
          format = "jpeg"; quality = 82; },
        { name = "card"; width = 320;  height = 320;  fit = "cover";
          format = "webp"; quality = 80; }
    );
    small = (
        { name = "thumb"; width = 32; height = 32; fit = "cover";
          format = "jpeg"; quality = 80; }
    );
};
EOF
    } > "$d/imgd.conf"
}

imgd_pid=
start_imgd() { # DIR
    "$build/imgd" -c "$1/imgd.conf" 2> "$1/imgd.log" &
    imgd_pid=$!
    # 3: no answer within 10 s; 1 is an answer with an alert active.
    local rc=0
    "$build/imgctl" -s "$1/imgd.sock" --connect-timeout 10 status >/dev/null 2>&1 || rc=$?
    [ "$rc" -ne 3 ] && return 0
    echo "imgd did not start; see $1/imgd.log" >&2
    exit 1
}
stop_imgd() {
    [ -n "$imgd_pid" ] || return 0
    kill -TERM "$imgd_pid" 2>/dev/null || true
    wait "$imgd_pid" 2>/dev/null || true
    imgd_pid=
}
trap stop_imgd EXIT

now_us() { date +%s%6N; }

# Follows imgd's events until N jobs finished: follow_start SOCKET N TIMEOUT returns once the
# follower is subscribed, follow_wait returns once they finished (and fails if they did not).
follow_start() {
    local ready=
    exec {follow_fd}< <(py wait-events "$1" "$2" "$3")
    read -r -u "$follow_fd" ready || true
    if [ "$ready" != subscribed ]; then
        echo "bench.sh: cannot follow imgd's events on $1: ${ready:-no answer}" >&2
        exit 1
    fi
}
follow_wait() {
    local said=
    read -r -u "$follow_fd" said || true
    exec {follow_fd}<&-
    if [ "$said" != finished ]; then
        echo "bench.sh: ${said:-the event follower died}" >&2
        exit 1
    fi
}

run_imgd() { # PIPELINE DIR
    local p=$1 d=$2
    write_config "$d/tree" "$p"
    local t=$d/tree
    cp "${files[@]}" "$t/stage-$p/"
    start_imgd "$t"
    sleep 1  # the workers start and settle
    local before t0 after
    before=$(py cpu "$imgd_pid")
    local sup0
    sup0=$(awk '{ print $14 + $15, $15 }' "/proc/$imgd_pid/stat")
    follow_start "$t/imgd.sock" "$n" 3600
    # The supervisor's fsync and fdatasync calls (perf stat -p --no-inherit counts that
    # process alone, not the workers it starts), from in-kernel counters: no cost to the run.
    local perf_pid=
    if perf stat -e syscalls:sys_enter_fsync true >/dev/null 2>&1; then
        perf stat --no-inherit -x, -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync \
            -p "$imgd_pid" -o "$d/syncs.csv" &
        perf_pid=$!
        sleep 0.5
    fi
    # IMGD_BENCH_PERF=1: where the supervisor's CPU goes, sampled with call graphs for the
    # run (perf record -p, the supervisor alone), into DIR/perf.data (perf report -i). The
    # sampling costs the supervisor CPU of its own: a profiled run's figures are not results.
    local rec_pid=
    if [ -n "${IMGD_BENCH_PERF:-}" ] &&
        perf record -q -o /dev/null --call-graph dwarf true >/dev/null 2>&1; then
        perf record -q -F 1999 --call-graph dwarf,16384 --no-inherit -p "$imgd_pid" -o "$d/perf.data" 2>/dev/null &
        rec_pid=$!
        sleep 0.5
    fi
    t0=$(now_us)
    find "$t/stage-$p" -mindepth 1 -maxdepth 1 -exec mv -t "$t/up-$p/" {} +
    follow_wait
    if [ -n "$rec_pid" ]; then
        kill -INT "$rec_pid" 2>/dev/null || true
        wait "$rec_pid" || true
    fi
    after=$(py cpu "$imgd_pid")
    local sup1 syncs=
    sup1=$(awk '{ print $14 + $15, $15 }' "/proc/$imgd_pid/stat")
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
        syncs=$(awk -F, '/sys_enter_f(data)?sync/ { t += $1 } END { print t + 0 }' "$d/syncs.csv")
    fi
    py jobs "$t/imgd.sock" 1 "$n" > "$d/jobs.tsv"
    local supervisor_hwm
    supervisor_hwm=$(grep VmHWM "/proc/$imgd_pid/status" | awk '{ print $2 }')
    stop_imgd
    mv "$t/out-$p" "$t/out"
    local ndone dead end cpu0 cpu1 maxrss lat
    ndone=$(awk -F'\t' '$2 == "done"' "$d/jobs.tsv" | wc -l)
    dead=$(awk -F'\t' '$2 != "done"' "$d/jobs.tsv" | wc -l)
    end=$(awk -F'\t' '$4 > m { m = $4 } END { print m }' "$d/jobs.tsv")
    cpu0=${before#cpu_s=}; cpu0=${cpu0%% *}
    cpu1=${after#cpu_s=}; cpu1=${cpu1%% *}
    # Largest VmHWM among the workers (every process of the tree but the supervisor).
    maxrss=$(printf '%s\n' "${after##*hwm=}" | tr ',' '\n' | grep -v "^$imgd_pid:" |
        cut -d: -f2 | sort -n | tail -1)
    awk -F'\t' '$2 == "done" { print ($4 - $3) / 1000 }' "$d/jobs.tsv" > "$d/latency_ms.txt"
    lat=$(py stats "$d/latency_ms.txt" 0 1)
    local tick
    tick=$(getconf CLK_TCK)
    awk -v n="$ndone" -v errs="$dead" -v j="$jobs" -v t0="$t0" -v end="$end" -v c0="$cpu0" \
        -v c1="$cpu1" -v rss="${maxrss:-0}" -v lat="$lat" -v sh="$supervisor_hwm" \
        -v s0="$sup0" -v s1="$sup1" -v tick="$tick" -v syncs="$syncs" 'BEGIN {
            wall = (end - t0) / 1e6
            split(lat, a, /[ =]/)
            printf "images=%d errors=%d jobs=%d wall_s=%.3f cpu_s=%.3f maxrss_kb=%d ", n, errs, j, wall, c1 - c0, rss
            printf "images_per_s=%.3f p50_ms=%.0f p99_ms=%.0f supervisor_hwm_kb=%d ", n / wall, a[4], a[6], sh
            split(s0, b, " "); split(s1, e, " ")
            printf "supervisor_cpu_s=%.3f supervisor_sys_s=%.3f ", (e[1] - b[1]) / tick, (e[2] - b[2]) / tick
            printf "note=latency_is_job_created->published_of_a_batch_drop_(queueing_included)"
            if (syncs != "") printf " supervisor_syncs=%d", syncs
            printf "\n"
        }' > "$d/result.txt"
}

run_bare() { # PIPELINE DIR
    "$build/imgd-bench-pipeline" -c "$conf_for_bare" -p "$1" -j "$jobs" -t 1 \
        -m "$2/manifest.tsv" "${files[@]}" > "$2/result.txt" 2> "$2/log.txt" || true
}

# The scaling table of issue 16 (small pipeline): imgd and the bare pipeline on one core, and
# imgd with a no-op render (imgd-worker's benchmark hook, in builds with the fault points:
# every job after a worker's first gets that job's outputs without decoding or rendering,
# still written, verified and synced) and twice as many workers as cores, so that the
# supervisor is what limits: the jobs a second one supervisor can feed.
run_imgd1() { workers=1 run_imgd "$@"; }
run_bare1() { # PIPELINE DIR
    "$build/imgd-bench-pipeline" -c "$conf_for_bare" -p "$1" -j 1 -t 1 \
        -m "$2/manifest.tsv" "${files[@]}" > "$2/result.txt" 2> "$2/log.txt" || true
}
run_noop() { # PIPELINE DIR
    if ! grep -q IMGD_FAULT_INJECTION "$build/CMakeCache.txt" 2>/dev/null ||
        ! grep -q 'IMGD_FAULT_INJECTION:BOOL=ON' "$build/CMakeCache.txt"; then
        log "no-op render skipped: $build is not built with -DIMGD_FAULT_INJECTION=ON"
        : > "$2/result.txt"
        return 0
    fi
    IMGD_FAULT_SKIP=worker.render workers=$((jobs * 2)) run_imgd "$@"
    sed -i 's/note=[^ ]*/note=no-op_render,_2_workers_per_core/' "$2/result.txt"
}

# The bare pipeline writing each output durably (a temporary file, fsync, rename) inside its
# timed work: the ceiling of anything that keeps imgd's first guarantee, before imgd's own
# verify, directory fsync and ledger.
run_durable() { # PIPELINE DIR
    mkdir -p "$2/out"
    "$build/imgd-bench-pipeline" -c "$conf_for_bare" -p "$1" -j "$jobs" -t 1 -s -o "$2/out" \
        -m "$2/manifest.tsv" "${files[@]}" > "$2/result.txt" 2> "$2/log.txt" || true
}

run_vipsthumbnail() { # PIPELINE DIR
    local p=$1 d=$2
    mkdir -p "$d/out"
    for f in "${files[@]}"; do
        case $p in
            avatar)
                for s in small:100 medium:200 large:400; do
                    printf '%s --size %sx%s --smartcrop centre -o %s/%%s_%s.webp[Q=80,strip]\n' \
                        "$f" "${s#*:}" "${s#*:}" "$d/out" "${s%%:*}"
                done ;;
            web)
                printf '%s --size 1600x1600> -o %s/%%s_1600.jpg[Q=82,optimize_coding,strip]\n' \
                    "$f" "$d/out"
                printf '%s --size 800x800> -o %s/%%s_800.jpg[Q=82,optimize_coding,strip]\n' \
                    "$f" "$d/out"
                printf '%s --size 320x320 --smartcrop centre -o %s/%%s_card.webp[Q=80,strip]\n' \
                    "$f" "$d/out" ;;
        esac
    done > "$d/tasks.txt"
    VIPS_CONCURRENCY=1 py rusage xargs -P "$jobs" -L 1 vipsthumbnail < "$d/tasks.txt" \
        > "$d/rusage.txt" 2> "$d/log.txt"
    local note="once_per_variant"
    [ "$p" = avatar ] && note="no_circle_mask_(vipsthumbnail_has_none):_less_work"
    awk -v n="$n" -v j="$jobs" -v note="$note" '{
        for (i = 1; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] }
        printf "images=%d errors=%d jobs=%d wall_s=%s cpu_s=%s maxrss_kb=%s images_per_s=%.3f note=%s\n",
            n, v["rc"] != 0, j, v["wall_s"], v["cpu_s"], v["maxrss_kb"], n / v["wall_s"], note
    }' "$d/rusage.txt" > "$d/result.txt"
}

run_imagemagick() { # PIPELINE DIR
    local p=$1 d=$2 f s w h need base
    mkdir -p "$d/out" "$out/masks"
    for s in 100 200 400; do
        [ -s "$out/masks/$s.png" ] || /usr/bin/convert -size "${s}x${s}" xc:black -fill white \
            -draw "circle $(( s / 2 )),$(( s / 2 )) $(( s / 2 )),0" "$out/masks/$s.png"
    done
    for f in "${files[@]}"; do
        base=$(basename "$f")
        read -r w h < <(grep -P "^\Q$base\E\t" "$corpus/corpus.tsv" | cut -f2,3)
        need=$(py need "$p" "$w" "$h")
        o=$d/out/${base%.*}
        case $p in
            avatar)
                printf -- '-define jpeg:size=%s %s -auto-orient -strip' "$need" "$f"
                for s in large:400 medium:200; do
                    printf -- ' ( +clone -thumbnail %sx%s^ -gravity center -crop %sx%s+0+0 +repage' \
                        "${s#*:}" "${s#*:}" "${s#*:}" "${s#*:}"
                    printf -- ' %s -alpha off -compose CopyOpacity -composite -quality 80' \
                        "$out/masks/${s#*:}.png"
                    printf -- ' -write %s_%s.webp +delete )' "$o" "${s%%:*}"
                done
                printf -- ' -thumbnail 100x100^ -gravity center -crop 100x100+0+0 +repage'
                printf -- ' %s -alpha off -compose CopyOpacity -composite -quality 80 %s_small.webp\n' \
                    "$out/masks/100.png" "$o" ;;
            web)
                printf -- '-define jpeg:size=%s %s -auto-orient -strip' "$need" "$f"
                printf -- ' -define jpeg:optimize-coding=true'
                for s in 1600 800; do
                    printf -- ' ( +clone -thumbnail %sx%s> -background white -alpha remove' "$s" "$s"
                    printf -- ' -quality 82 -write %s_%s.jpg +delete )' "$o" "$s"
                done
                printf -- ' -thumbnail 320x320^ -gravity center -crop 320x320+0+0 +repage'
                printf -- ' -quality 80 %s_card.webp\n' "$o" ;;
        esac
    done > "$d/tasks.txt"
    MAGICK_THREAD_LIMIT=1 py rusage xargs -P "$jobs" -L 1 /usr/bin/convert < "$d/tasks.txt" \
        > "$d/rusage.txt" 2> "$d/log.txt"
    awk -v n="$n" -v j="$jobs" '{
        for (i = 1; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] }
        printf "images=%d errors=%d jobs=%d wall_s=%s cpu_s=%s maxrss_kb=%s images_per_s=%.3f note=one_convert_per_image,_jpeg:size,_-thumbnail\n",
            n, v["rc"] != 0, j, v["wall_s"], v["cpu_s"], v["maxrss_kb"], n / v["wall_s"]
    }' "$d/rusage.txt" > "$d/result.txt"
}

run_sharp() { # PIPELINE DIR
    mkdir -p "$2/out"
    UV_THREADPOOL_SIZE=$jobs NODE_PATH=$corpus/node/node_modules \
        node "$top/scripts/bench-sharp.js" --pipeline "$1" --jobs "$jobs" --out "$2/out" \
        --manifest "$2/manifest.tsv" "${files[@]}" > "$2/result.txt" 2> "$2/log.txt" || true
    sed -i 's/$/ note=one_process,_clone()_per_variant,_own_libvips/' "$2/result.txt"
}

# --- run -----------------------------------------------------------------------------------
# Earlier results are moved aside and deleted at the end, not before a run: on an ext4
# without a journal, every file created within a minute of thousands being deleted makes the
# inode allocator skip the recently deleted ones (recently_deleted(), a buffer lookup each),
# which took 42% of imgd's supervisor CPU on the small pipeline here after an rm -rf.
trash=$out/.trash
rm -rf "$trash"
mkdir -p "$trash"
set_aside() { [ ! -e "$1" ] || mv "$1" "$(mktemp -d "$trash/XXXXXX")/"; }
trap 'stop_imgd; rm -rf "$trash"' EXIT
log "load before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews wall times)"
photos=("${files[@]}")
for p in $pipelines; do
    conf_for_bare=$out/$p/imgd.conf
    set_aside "${out:?}/$p"
    mkdir -p "$out/$p"
    write_config "$out/$p" "$p"
    order=$contenders
    files=("${photos[@]}")
    if [ "$p" = small ]; then
        # Issue 16's small jobs: imgd against its bare pipeline, which is what it is about.
        mapfile -t files < <(find "$small_dir" -name 's*.png' | sort)
        order=
        for c in $contenders; do
            case $c in imgd|bare|durable|imgd1|bare1|noop) order="$order $c" ;; esac
        done
    fi
    n=${#files[@]}
    for c in $contenders; do : > "$out/$p/rounds-$c.txt"; done
    for ((round = 1; round <= rounds; round++)); do
        for c in $order; do
            log "$p: $c$( [ "$rounds" = 1 ] || echo " (round $round of $rounds)")"
            set_aside "${out:?}/$p/$c"
            mkdir -p "$out/$p/$c"
            sync
            "run_$c" "$p" "$out/$p/$c"
            cat "$out/$p/$c/result.txt" >&2
            cat "$out/$p/$c/result.txt" >> "$out/$p/rounds-$c.txt"
        done
        order=$(printf '%s\n' $order | tac | tr '\n' ' ')
    done
done

if [ "$latency" = 1 ]; then
    d=$out/latency
    set_aside "$d"
    mkdir -p "$d"
    # The latency of one big photograph: the small pipeline has no part in it.
    lat_pipelines=$(printf '%s\n' $pipelines | grep -vx small | tr '\n' ' ')
    write_config "$d" $lat_pipelines
    big=$corpus/12mp.jpg
    drops=11
    start_imgd "$d"
    sleep 1
    total=0  # jobs so far: the ledger is new, so the next job's id is total + 1
    res="image=12mp.jpg megapixels=$(( $(vipsheader -f width "$big") * $(vipsheader -f height "$big") / 1000000 )) drops=$(( drops - 1 ))"
    for p in $lat_pipelines; do
        log "latency: $p, $drops drops of $big"
        : > "$d/$p.tsv"
        for i in $(seq "$drops"); do
            cp "$big" "$d/stage-$p/drop$i.jpg"
            sync
            sleep 0.5
            # Subscribed before the drop: nothing starts or polls while the job runs (a
            # Python interpreter started then competed with the worker for the 2 CPUs).
            follow_start "$d/imgd.sock" 1 120
            t0=$(now_us)
            mv "$d/stage-$p/drop$i.jpg" "$d/up-$p/drop$i.jpg"
            total=$(( total + 1 ))
            follow_wait
            py jobs "$d/imgd.sock" "$total" "$total" |
                awk -F'\t' -v t0="$t0" -v i="$i" '{ print i "\t" ($4 - t0) / 1000 "\t" ($4 - $3) / 1000 "\t" $2 }' \
                >> "$d/$p.tsv"
        done
        tail -n +2 "$d/$p.tsv" > "$d/$p.steady.tsv"
        drop=$(py stats "$d/$p.steady.tsv" 1 1)
        job=$(py stats "$d/$p.steady.tsv" 2 1)
        "$build/imgd-bench-pipeline" -c "$d/imgd.conf" -p "$p" -j 1 -t 1 -r "$drops" \
            -m "$d/bare1-$p.tsv" "$big" > "$d/bare1-$p.txt"
        "$build/imgd-bench-pipeline" -c "$d/imgd.conf" -p "$p" -j 1 -t 0 -r "$drops" \
            -m "$d/bare0-$p.tsv" "$big" > "$d/bare0-$p.txt"
        for t in 1 0; do
            awk -F'\t' '$1 == "image" { print $6 / 1000 }' "$d/bare$t-$p.tsv" | tail -n +2 \
                > "$d/bare$t-$p.ms"
        done
        b1=$(py stats "$d/bare1-$p.ms" 0 1)
        b0=$(py stats "$d/bare0-$p.ms" 0 1)
        v() { printf '%s' "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }
        res="$res ${p}_drop_p50_ms=$(v "$drop" p50) ${p}_drop_p99_ms=$(v "$drop" p99)"
        res="$res ${p}_job_p50_ms=$(v "$job" p50) ${p}_bare1_p50_ms=$(v "$b1" p50)"
        res="$res ${p}_bare0_p50_ms=$(v "$b0" p50)"
    done
    stop_imgd
    echo "$res" > "$d/result.txt"
fi
log "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

py report "$out" "$pipelines" "$contenders"

if command -v gnuplot >/dev/null && [ -s "$out/chart.dat" ]; then
    gnuplot <<EOF 2>/dev/null && log "chart: $out/bench-results.png" || true
set terminal pngcairo size 900,500
set output "$out/bench-results.png"
set title "images per second, $n images, parallelism $jobs (higher is better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key outside right top
set ylabel "images/s"
set grid ytics
plot for [i=2:$(( $(echo $contenders | wc -w) + 1 ))] "$out/chart.dat" using i:xtic(1) title columnhead
EOF
fi

if [ "$profile" = 1 ]; then
    set +o pipefail  # head closes the pipes of perf report early
    d=$out/profile
    mkdir -p "$d"
    # The corpus' own names are [A-Za-z0-9._-] only.
    # shellcheck disable=SC2010
    jpg=$(ls -S "$images"/*.jpg | grep -v zz- | head -1)
    # shellcheck disable=SC2010
    png=$(ls -S "$images"/*.png | grep -v zz- | head -1)
    for f in "$jpg" "$png"; do
        name=$(basename "$f")
        if perf stat -e cpu-clock true >/dev/null 2>&1; then
            log "profile (perf, cpu-clock): avatar, $name"
            perf record -q -e cpu-clock -g -o "$d/$name.perf" \
                "$build/imgd-bench-pipeline" -c "$out/avatar/imgd.conf" -p avatar -j 1 -t 1 \
                -r 5 "$f" >/dev/null 2>&1
            perf report -i "$d/$name.perf" --no-children --sort dso,symbol -g none 2>/dev/null |
                grep -v '^#' | grep -v '^$' | head -25 | tee "$d/$name.top.txt"
            perf report -i "$d/$name.perf" --no-children --sort dso -g none 2>/dev/null |
                grep -v '^#' | grep -v '^$' | head -10 | tee "$d/$name.dso.txt"
        elif command -v valgrind >/dev/null; then
            log "profile (callgrind): avatar, $name"
            valgrind --tool=callgrind --callgrind-out-file="$d/$name.callgrind" \
                "$build/imgd-bench-pipeline" -c "$out/avatar/imgd.conf" -p avatar -j 1 -t 1 \
                "$f" >/dev/null 2>&1
            callgrind_annotate "$d/$name.callgrind" | head -40 | tee "$d/$name.top.txt"
        fi
    done
fi
log "results: $out/report.txt, $out/bench-results.csv"
