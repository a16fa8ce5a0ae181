#!/bin/bash
# SPDX-License-Identifier: MIT
# imgctl-compare.sh OLD NEW - runs two imgctl binaries on the same argument lists and compares
# what they print (stdout, stderr) and their exit status: every verb with valid, missing, extra
# and bad options and operands, the --help of each, with no daemon at the socket and with a fake
# daemon (python3) that answers every command with canned results (tables, errors, events).
# For a refactor of imgctl: build the old binary first (cp build/imgctl /tmp/imgctl-old).
# Prints each difference, then "N identical, M different"; exit status 1 when any differ.
# IMGCTL_COMPARE_SHOW=1 prints every output of OLD as well.
set -u
old=$(realpath "$1") new=$(realpath "$2")
work=$(mktemp -d /tmp/imgctl-compare.XXXXXX)
trap 'kill $fake_pid 2>/dev/null; rm -rf "$work"' EXIT
fake_pid=
cd "$work" || exit 1
unset IMGD_SOCKET

# A tree for verify: manifests good and bad (no job id, so no daemon is asked), files missing,
# altered, orphaned; a manifest of each malformed kind.
mkdir -p tree/sub out
printf 'abc' > tree/a_s.webp
printf 'xyz' > tree/b_s.webp
printf 'stray' > tree/sub/stray.txt
printf 'partial' > tree/.imgd-7-0-abcdef.tmp
sha_abc=$(printf abc | sha256sum | cut -d' ' -f1)
cat > tree/a.manifest.json <<EOF
{"version":1,"outputs":[{"file":"a_s.webp","bytes":3,"sha256":"$sha_abc"},
 {"file":"gone.webp","bytes":1,"sha256":"00"},{"file":"b_s.webp","bytes":3,"sha256":"11"}]}
EOF
cat > tree/sub/bad.manifest.json <<EOF
{"version":1,"outputs":[{"file":"../x"},{"file":"a/b"},{"file":"."},{"file":""},{},7,
 {"file":"q","file_hex":"7"},{"file":"q","file_hex":"zz"},{"file":"q","file_hex":"00"},
 {"file":"q","file_hex":"61"}]}
EOF
echo '{"outputs": 3}' > tree/sub/nolist.manifest.json
echo '{"a":1,"a":2}' > tree/sub/dup.manifest.json
echo 'not json' > tree/sub/text.manifest.json
ln -s a_s.webp tree/link.webp
cat > tree/sub/link.manifest.json <<EOF
{"job":0,"outputs":[{"file":"fifo","sha256":"x"}]}
EOF
mkfifo tree/sub/fifo
# With job ids, for the fake daemon's ledger.
mkdir -p ledger
printf 'abc' > ledger/p_s.webp
printf 'def' > ledger/q_s.webp
cat > ledger/p.manifest.json <<EOF
{"version":1,"job":1,"source_sha256":"src1","outputs":[{"file":"p_s.webp","bytes":3,"sha256":"$sha_abc"},
 {"file":"q_s.webp","bytes":3,"sha256":"$(printf def | sha256sum | cut -d' ' -f1)"}]}
EOF
cat > ledger/r.manifest.json <<EOF
{"version":1,"job":2,"source_sha256":"src2","outputs":[]}
EOF
cat > ledger/s.manifest.json <<EOF
{"version":1,"job":7,"source_sha256":"src7","outputs":[]}
EOF
cat > ledger/t.manifest.json <<EOF
{"version":1,"job":1,"source_sha256":"other","outputs":[{"file":"p_s.webp","bytes":3,"sha256":"$sha_abc"}]}
EOF
touch ledger/plain.txt
echo 'state_dir = "/nonexistent";' > bad.conf

cat > fake.py <<'EOF'
import json, os, socket, sys, threading
path = sys.argv[1]
W = [{"pid": 101, "state": "busy", "job": 12, "jobs_done": 40},
     {"pid": 102, "state": "idle", "job": 0, "jobs_done": 3}]
STATUS = {"state": "running", "version": "0.1.0", "pid": 42, "uptime_s": 93784,
          "config": "/etc/imgd/imgd.conf", "paused": True,
          "breaker": {"state": "open", "reason": "5 failures in a row"},
          "health": {"level": "reduced", "score": 61.4, "reason": "backlog\x1b[31m", "backlog": 3,
                     "drain_s": 125.2, "finished_per_s": 0.5, "error_rate": 0.125},
          "alerts": [{"alert": "backlog", "message": "backlog of 3 jobs \u00e9t\u00e9"}],
          "workers": {"total": 2, "busy": 1, "list": W},
          "jobs": {"queued": 0, "running": 0, "retry": 0, "done": 5, "dead": 1, "cancelled": 2, "held": 0},
          "watches": [{"path": "/srv/up/\u00e4vatars", "output": "/tmp/nonexistent-out", "pipeline": "avatar", "recursive": True},
                      {"path": "/srv/up/web", "output": "/tmp/nonexistent-out", "pipeline": "web", "recursive": False}]}
JOBS = [{"id": i, "state": s, "attempts": i % 3, "updated_us": 1764000000000000 + i * 3600000000,
         "source": src, "error": err}
        for i, (s, src, err) in enumerate([
            ("done", "/srv/up/a.jpg", None), ("dead", "/srv/up/\u6f22\u5b57.jpg", "decode failed: " + "x" * 80),
            ("retry", "/srv/up/b\x07.png", "worker crashed\nagain"), ("queued", "/srv/up/c.webp", "")], 1)]
def show(i):
    if i == 999:
        return None, "no such job: 999"
    if i == 2:
        return {"job": {"id": 2, "state": "dead", "sha256": "src2"}}, None
    if i == 7:
        return None, "no such job: 7"
    return {"job": {"id": i, "state": "done" if i != 3 else "retry", "source": "/srv/up/a.jpg", "watch": "/srv/up",
                    "pipeline": "avatar", "output_key": "/srv/media/a", "manifest": "/srv/media/a.manifest.json",
                    "sha256": "src1", "attempts": 2, "created_us": 1764000000000000, "updated_us": 1764000100000000,
                    "next_at_us": 1764000200000000, "error": "boom\x1b[2J",
                    "placeholder": {"blurhash": "LEHV6n", "dominant": "#aabbcc", "data_uri": "data:image/webp;base64,AA"},
                    "outputs": [{"variant": "s", "format": "webp", "width": 100, "height": 100, "bytes": 3, "path": "/x/p_s.webp", "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
                                {"variant": "m", "format": "jpeg", "width": 2000, "height": 1500, "bytes": 3456789, "path": "/x/q_s.webp", "sha256": "bad"}],
                    "errors": [{"attempt": 1, "at_us": 1764000050000000, "message": "timeout after 120 s"}]}}, None
def answer(req):
    cmd, i = req.get("cmd"), req.get("id")
    if cmd == "status": return STATUS, None
    if cmd == "jobs":
        if req.get("state") == "none": return {"jobs": [], "truncated": False}, None
        if req.get("state") == "bad": return None, "unknown state 'bad'"
        return {"jobs": JOBS, "truncated": req.get("limit") == 2, "echo": req}, None
    if cmd == "show": return show(i)
    if cmd == "retry":
        if req.get("dead"): return {"retried": 3, "remaining": 1}, None
        if i == 403: return None, "permission denied: 'retry' needs the operator role"
        return ({"retried": 1, "ids": [i]}, None) if i != 999 else (None, "no such job: 999")
    if cmd == "cancel": return ({"cancelled": i, "was": "queued"}, None) if i != 999 else (None, "job 999 is running")
    if cmd == "pause": return {"paused": True, "running": 2}, None
    if cmd == "resume": return {"paused": False, "running": 2}, None
    if cmd == "drain": return {"paused": True, "running": 0}, None
    if cmd == "enqueue":
        p = req.get("path", "")
        if p.endswith("fake.py"): return {"created": True, "id": 77, "source": p, "state": "queued"}, None
        if p.endswith("bad.conf"): return {"created": False, "id": 5, "source": p, "state": "done"}, None
        return {"created": False, "id": 0, "source": p}, None
    if cmd == "reload": return {"reloaded": True, "config": "/etc/imgd/imgd.conf", "watches": 2}, None
    if cmd == "metrics": return {"text": "# HELP imgd_up up\nimgd_up 1\x01\n"}, None
    if cmd == "events": return {"subscribed": True}, None
    return None, "unknown command"
def serve(c):
    f = c.makefile("rb")
    for line in f:
        req = json.loads(line)
        res, err = answer(req)
        out = {"v": 1, "ok": True, "result": res} if err is None else {"v": 1, "ok": False, "error": err}
        c.sendall((json.dumps(out) + "\n").encode())
        if req.get("cmd") == "events":
            for ev, job in (("queued", {"id": 1, "source": "/srv/a.jpg"}),
                            ("done", {"id": 1, "source": "/srv/a.jpg", "outputs": [{}, {}]}),
                            ("retry", {"id": 2, "source": "/srv/b\x1b.jpg", "error": "boom", "next_at_us": 1764000000000000}),
                            ("dead", {"id": 2, "source": "/srv/b.jpg", "error": "gave up"}),
                            ("cancelled", {"id": 3, "source": "/srv/c.jpg"})):
                c.sendall((json.dumps({"v": 1, "event": ev, "at_us": 1764000000000000, "job": job}) + "\n").encode())
            c.sendall(b'{"v":1,"ok":true,"result":{}}\n')
            break
    c.close()
s = socket.socket(socket.AF_UNIX)
s.bind(path); s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF

same=0 differ=0
# run SOCKET-ARGS... -- one argument list, compared.
compare() {
        local a b
        a=$(TZ=UTC "$old" "$@" 2>&1; echo "exit $?")
        b=$(TZ=UTC "$new" "$@" 2>&1; echo "exit $?")
        # top prints the time of day: the two runs may be a second apart.
        if [ "${TOP:-}" ]; then
                a=$(sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}/TIME/g' <<<"$a")
                b=$(sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}/TIME/g' <<<"$b")
        fi
        [ "${IMGCTL_COMPARE_SHOW:-}" ] && printf '=== imgctl %s\n%s\n' "$*" "$a"
        if [ "$a" == "$b" ]; then
                same=$((same + 1))
        else
                differ=$((differ + 1))
                printf '=== DIFFERENT: imgctl %s\n--- old\n%s\n--- new\n%s\n' "$*" "$a" "$b"
        fi
}

verbs="status jobs show wait retry cancel pause resume drain enqueue reload metrics events top verify"
# Options and operands tried with every verb, valid for some, wrong for others.
extras=(
        "" "--json" "--jso" "--j" "-j" "--json=1" "--help" "-h" "--he" "--h" "--hel=x" "-x" "-xy"
        "--bogus" "--bogus=1" "extra" "extra more" "-- --help" "--" "-" "42" "'#42'" "0" "-1" "abc"
        "42 43" "--dead" "--dead 42" "--all" "--all tree" "--follow" "-f" "-fh" "-hf" "-f -x"
        "--timeout" "--timeout 5" "--timeout=1.5" "--timeout x" "--timeout -1" "--timeout 1e10"
        "--timeout inf" "--timeout nan" "--timeout ''" "-t" "-t 2" "-t2" "-tx" "--iterations"
        "--iterations 0" "--iterations 1" "--iterations x" "-n 5" "-n" "-n0" "--state" "--state dead"
        "--state=" "--watch" "--watch tree" "--watch tree/" "--watch ./tree/." "--watch /" "--since"
        "--since 10m" "--since 1h30m" "--since 2026-11-23" "--since 2026-11-23T10:00Z" "--since x"
        "--since 1x" "--since 0" "--s" "--st x" "--limit" "--limit 0" "--limit 10001" "--limit 50"
        "--limit 5x" "--limit=3" "--li" "--l 5" "--json extra" "extra --json" "--json --json"
        "--all --json" "tree --json" "tree/a.manifest.json" "tree/a_s.webp" "nonexistent" "--all x y"
        "--dead --json" "42 --json" "--json 42" "'#'" "99999999999999999999" "fake.py" "-s x" "-c x"
        "--version" "--config x" "--connect-timeout 1"
)
for v in $verbs help; do
        for e in "${extras[@]}"; do
                eval "args=($e)"
                compare -s "$work/nosock" "$v" "${args[@]}"
        done
done
# help and the global options.
globals=("" "--help" "-h" "--version" "--vers" "--v" "-V" "-x" "--bogus" "--he" "help" "help help"
        "help status" "help nosuch" "help status jobs" "help --help" "help -h" "nosuch" "--" "-- status"
        "-s" "-c" "--socket" "--config" "--socket=" "-s x -c y status" "-c bad.conf status"
        "-c /nonexistent.conf status" "-c bad.conf status --bogus" "-c bad.conf status --help"
        "--connect-timeout" "--connect-timeout x status" "--connect-timeout 0 status"
        "--connect-timeout 1 status" "--connect-timeout 1h30 status" "--connect-timeout=-1 status"
        "-s $work/nosock -s $work/nosock status" "status -s x" "-sx status" "--socket=$work/nosock status"
        "--so $work/nosock status" "--co x status" "-h status" "status --help extra" "-s")
for args in "${globals[@]}"; do
        eval "a=($args)"
        compare "${a[@]}"
done
IMGD_SOCKET=$work/envsock compare status
IMGD_SOCKET= compare status
compare -s "$work/$(printf 'x%.0s' {1..120})" status

# The same with a daemon that answers (enqueue needs existing files; verify the fake ledger).
python3 fake.py "$work/fake.sock" > fake.out &
fake_pid=$!
for _ in $(seq 50); do grep -q ready fake.out 2>/dev/null && break; sleep 0.1; done
fake=(-s "$work/fake.sock")
answered=("status" "status --json" "jobs" "jobs --json" "jobs --state none" "jobs --state bad"
        "jobs --limit 2" "jobs --state dead --watch tree --since 2026-11-23 --limit 5 --json"
        "show 1" "show 3" "show '#1' --json" "show 999" "show 2" "wait" "wait --timeout 1"
        "retry 5" "retry 5 --json" "retry 999" "retry 403" "retry --dead" "retry --dead --json"
        "cancel 4" "cancel 4 --json" "cancel 999" "pause" "pause --json" "resume" "resume --json"
        "drain" "drain --json" "drain --timeout 1" "enqueue fake.py" "enqueue bad.conf"
        "enqueue tree/a_s.webp --json" "enqueue tree/a_s.webp" "enqueue nonexistent" "reload"
        "reload --json" "metrics" "metrics --json" "events" "events --json" "events --follow"
        "verify ledger" "verify ledger --json" "verify ledger/p.manifest.json" "verify ledger/t.manifest.json"
        "verify ledger/plain.txt" "verify tree" "verify tree --json" "verify --all" "verify" "verify --json"
        "verify tree/sub/bad.manifest.json" "verify tree/sub/link.manifest.json --json")
for args in "${answered[@]}"; do
        eval "a=($args)"
        compare "${fake[@]}" "${a[@]}"
done
TOP=1 compare "${fake[@]}" top --iterations 1
kill $fake_pid

echo "$same identical, $differ different"
[ "$differ" -eq 0 ]
