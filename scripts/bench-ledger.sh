#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The ledger-size side of issue 7's benchmark: imgd with a million finished jobs.
#
#   scripts/bench-ledger.sh [--jobs N] [--files N] [--out DIR] [--build DIR] [--keep]
#                           [--reuse]
#
# It starts imgd once on an empty tree so that imgd itself creates the ledger's schema, then
# fills the ledger with the sqlite3 CLI: --jobs (default 1,000,000) done jobs, each with its
# three avatar outputs, of which the newest --files (default 100,000) belong to small files
# that it creates in the watched tree, with their real size, mtime_ns and inode, so that the
# start-up scan finds every one of them already done (src/daemon/intake.c, ledger_known_stat()).
# Then it starts imgd on that ledger and measures (after a fill, whose writes imgd did not
# make, imgd checks the whole ledger at open; a --reuse run after a run that stopped cleanly
# measures an ordinary restart, with the schema-only check; the result names the check):
#   - the start: from exec to the "watching ... found at start" log line, and to the control
#     socket's first answer (the scan runs before the event loop, so the socket answers
#     after it);
#   - the supervisor's VmRSS and VmHWM (/proc/PID/status) after the start and after the
#     queries below;
#   - `imgctl status` and `imgctl jobs --limit 50` (20 runs each; the process start of imgctl
#     included), and the same requests sent straight to the socket (the daemon's own time);
#   - the reconciliation pass over every done job (issue 17): from the start to its "looked
#     at" log line, and what `imgctl plan` prints then. The fill records no recipes, so the
#     first start adopts one for each of the 3,000,000 outputs (what the first start after an
#     upgrade does); a --reuse run measures an ordinary pass, which only reads.
# Targets (issue 7): supervisor RSS <= 30 MB, status and jobs < 50 ms, scan < 10 s.
# The tree and ledger (about 1.5 GB at the defaults) go to --out (default build/bench-ledger)
# and are removed at the end unless --keep is given; --reuse measures again on what a --keep
# run left (the tree, the files and the ledger are not made again).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

jobs=1000000
nfiles=100000
out=$top/build/bench-ledger
build=${IMGD_BUILD:-$top/build}
keep=0
reuse=0
while [ $# -gt 0 ]; do
    case $1 in
        --jobs) jobs=$2; shift ;;
        --files) nfiles=$2; shift ;;
        --out) out=$2; shift ;;
        --build) build=$2; shift ;;
        --keep) keep=1 ;;
        --reuse) reuse=1; keep=1 ;;
        -h|--help) sed -n '/^#   scripts/p' "$0" | sed 's/^# *//' >&2; exit 2 ;;
        *) echo "bench-ledger.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
[ "$nfiles" -le "$jobs" ] || { echo "bench-ledger.sh: --files must not exceed --jobs" >&2; exit 2; }
case $build in /*) ;; *) build=$top/$build ;; esac
case $out in /*) ;; *) out=$top/$out ;; esac
log() { printf '== %s\n' "$*" >&2; }

for tool in sqlite3 python3; do
    if ! command -v "$tool" >/dev/null; then
        log "installing $tool"
        apt-get update -qq >/dev/null || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null
    fi
done
scripts/deps.sh
log "building into $build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target imgd imgd-worker imgctl >/dev/null

up=$out/up
media=$out/media
conf=$out/imgd.conf
if [ "$reuse" = 1 ] && [ -s "$out/state/imgd.db" ] && [ -s "$out/files.csv" ]; then
    log "reusing the ledger and files in $out"
    nfiles=$(wc -l < "$out/files.csv")
else
reuse=0
rm -rf "$out"
mkdir -p "$out/up" "$out/media" "$out/state"
{
    printf 'state_dir = "%s/state";\nsocket = "%s/imgd.sock";\nworkers = %d;\n' "$out" "$out" "$(nproc)"
    printf 'watch = ( { path = "%s"; output = "%s"; pipeline = "avatar"; recursive = true; } );\n' \
        "$up" "$media"
    sed -n '/^pipelines = {/,/^};/p' "$top/etc/imgd.conf"
} > "$conf"

log "creating the ledger's schema (imgd on an empty tree)"
"$build/imgd" -c "$conf" 2> "$out/imgd-first.log" &
pid=$!
# 3: no answer within 10 s; 1 is an answer with an alert active.
rc=0; "$build/imgctl" -s "$out/imgd.sock" --connect-timeout 10 status >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 3 ] || { log "imgd did not start; see $out/imgd-first.log"; exit 1; }
kill -TERM "$pid"
wait "$pid" || true

log "creating $nfiles files in $up"
python3 - "$up" "$nfiles" "$out/files.csv" <<'PY'
import os, sys
up, n, csvp = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(csvp, "w") as out:
    for i in range(n):
        d = os.path.join(up, "d%03d" % (i // 1000))
        if i % 1000 == 0:
            os.makedirs(d, exist_ok=True)
        p = os.path.join(d, "f%06d.jpg" % i)
        with open(p, "wb") as f:
            f.write(b"not decoded: its stat matches a done job\n")
        st = os.stat(p)
        out.write("%s,%d,%d,%d\n" % (p, st.st_size, st.st_mtime_ns, st.st_ino))
PY

log "filling the ledger: $jobs done jobs with 3 outputs each ($nfiles of them for those files)"
old=$(( jobs - nfiles ))
base=$(( $(date +%s) * 1000000 - jobs * 1000 - 60000000 ))
t0=$(date +%s.%N)
sqlite3 "$out/state/imgd.db" <<SQL
PRAGMA synchronous = OFF;
PRAGMA cache_size = -262144;
CREATE TEMP TABLE files (path TEXT, size INTEGER, mtime INTEGER, ino INTEGER);
.import --csv $out/files.csv files
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $old)
INSERT INTO jobs (id, watch, source_path, source_sha256, source_size, source_mtime_ns,
                  source_ino, output_key, pipeline, state, attempts, created_us, updated_us,
                  next_at_us, finished_us)
SELECT i, '$up', '$up/old/' || (i / 1000) || '/x' || i || '.jpg', printf('%064x', i),
       100000 + i % 5000, 1600000000000000000 + i, 0, '$media/old/' || (i / 1000) || '/x' || i,
       'avatar', 'done', 1, $base + i * 1000, $base + i * 1000 + 400000, $base + i * 1000,
       $base + i * 1000 + 400000
FROM n;
INSERT INTO jobs (id, watch, source_path, source_sha256, source_size, source_mtime_ns,
                  source_ino, output_key, pipeline, state, attempts, created_us, updated_us,
                  next_at_us, finished_us)
SELECT $old + rowid, '$up', path, printf('%064x', $old + rowid), size, mtime, ino,
       '$media' || substr(path, length('$up') + 1, length(path) - length('$up') - 4),
       'avatar', 'done', 1, $base + ($old + rowid) * 1000,
       $base + ($old + rowid) * 1000 + 400000, $base + ($old + rowid) * 1000,
       $base + ($old + rowid) * 1000 + 400000
FROM files ORDER BY rowid;
INSERT INTO outputs (job_id, variant, path, format, width, height, bytes, sha256)
SELECT j.id, v.name, j.output_key || '_' || v.name || '.webp', 'webp', v.size, v.size,
       v.size * 30, printf('%064x', j.id * 4 + v.k)
FROM jobs AS j, (SELECT 1 AS k, 'small' AS name, 100 AS size UNION ALL
                 SELECT 2, 'medium', 200 UNION ALL SELECT 3, 'large', 400) AS v;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
t1=$(date +%s.%N)
log "filled in $(echo "$t1 - $t0" | bc) s; ledger $(du -sh "$out/state" | cut -f1)," \
    "$(sqlite3 "$out/state/imgd.db" "SELECT count(*) FROM jobs") jobs," \
    "$(sqlite3 "$out/state/imgd.db" "SELECT count(*) FROM outputs") outputs"

fi

log "starting imgd on it"
python3 - "$build" "$conf" "$out/imgd.sock" "$nfiles" <<'PY' | tee "$out/result.txt"
import atexit, json, os, socket, statistics, subprocess, sys, threading, time

build, conf, sock, nfiles = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
imgctl = os.path.join(build, "imgctl")

def status_of(pid):
    r = {}
    for line in open("/proc/%d/status" % pid):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            r[k] = int(v.split()[0]) / 1024.0
    return r

t0 = time.monotonic()
p = subprocess.Popen([os.path.join(build, "imgd"), "-c", conf], stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE, text=True)
def stop():
    if p.poll() is None:
        p.terminate()
        p.wait()
atexit.register(stop)
found = {}
def read_log():
    with open(os.path.join(os.path.dirname(conf), "imgd.log"), "w") as logf:
        for line in p.stderr:
            logf.write(line)
            logf.flush()
            if "PRAGMA quick_check" in line and "check" not in found:
                found["check"] = line.strip()
            if "found at start" in line and "t" not in found:
                found["t"] = time.monotonic() - t0
                found["line"] = line.strip()
            if "reconciliation:" in line and "rt" not in found:
                found["rt"] = time.monotonic() - t0
                found["rline"] = line.strip()
threading.Thread(target=read_log, daemon=True).start()

def request(s, f, req):
    s.sendall((json.dumps(dict(v=1, **req)) + "\n").encode())
    return json.loads(f.readline())

answered = None
while time.monotonic() - t0 < 600:
    if p.poll() is not None:
        sys.exit("imgd exited with %d; see imgd.log" % p.returncode)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(600)
        s.connect(sock)
        f = s.makefile("r")
        st = request(s, f, {"cmd": "status"})
        answered = time.monotonic() - t0
        break
    except OSError:
        time.sleep(0.01)
if answered is None:
    sys.exit("the socket did not answer within 600 s")
time.sleep(0.2)
rss_start = status_of(p.pid)
jobs = st["result"]["jobs"]

def timed_cli(args, n=20):
    ts = []
    for _ in range(n):
        a = time.monotonic()
        subprocess.run([imgctl, "-s", sock] + args, stdout=subprocess.DEVNULL, check=True)
        ts.append((time.monotonic() - a) * 1000)
    return ts

def timed_sock(req, n=20):
    global s, f
    s.close()  # the daemon drops clients silent for 30 s: take a new connection
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    f = s.makefile("r")
    ts = []
    for _ in range(n):
        a = time.monotonic()
        r = request(s, f, req)
        ts.append((time.monotonic() - a) * 1000)
        assert r.get("ok"), r
    return ts

res = {
    "imgctl status": timed_cli(["status"]),
    "imgctl jobs --limit 50": timed_cli(["jobs", "--limit", "50"]),
    "imgctl jobs --limit 50 --json": timed_cli(["jobs", "--limit", "50", "--json"]),
    "imgctl jobs --state done --limit 50": timed_cli(["jobs", "--state", "done", "--limit", "50"]),
    "socket status": timed_sock({"cmd": "status"}),
    "socket jobs limit 50": timed_sock({"cmd": "jobs", "limit": 50}),
}
rss_after = status_of(p.pid)
s.close()
while "rt" not in found and time.monotonic() - t0 < 1800 and p.poll() is None:
    time.sleep(0.1)
a = time.monotonic()
plan = subprocess.run([imgctl, "-s", sock, "plan"], stdout=subprocess.PIPE, text=True).stdout
plan_ms = (time.monotonic() - a) * 1000
rss_pass = status_of(p.pid)
stop()

print("ledger: %s" % ", ".join("%s %d" % kv for kv in sorted(jobs.items())))
print("ledger check at open: %s" % found.get("check", "not logged"))
print("start-up: 'found at start' logged after %.2f s (%s); socket answered after %.2f s" % (
    found.get("t", float("nan")), found.get("line", "no such line"), answered))
print("supervisor RSS: %.1f MB after start (VmHWM %.1f MB); %.1f MB after the queries "
      "(VmHWM %.1f MB)" % (rss_start["VmRSS"], rss_start["VmHWM"], rss_after["VmRSS"],
                           rss_after["VmHWM"]))
for k, ts in res.items():
    print("%-38s p50 %7.1f ms   max %7.1f ms   (%d runs)" % (k, statistics.median(ts), max(ts),
                                                           len(ts)))
print("reconciliation pass: ended %.1f s after the start, %.1f s after the scan (%s); "
      "supervisor VmHWM %.1f MB after it" % (
    found.get("rt", float("nan")), found.get("rt", float("nan")) - found.get("t", 0),
    found.get("rline", "no such line"), rss_pass["VmHWM"]))
print("imgctl plan (%.0f ms):" % plan_ms)
print(plan.rstrip())
PY
if [ "$keep" = 0 ]; then
    rm -rf "$out/up" "$out/state" "$out/files.csv"
fi
