#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# imgd under a real systemd (issue 14): builds imgd's Debian package, boots a minimal Debian
# 12 system with systemd-nspawn, installs the package in it and drives the hardened unit
# with systemctl, journalctl and imgctl. Each check prints "ok", "FAIL" or "SKIP" with what
# was observed; the exit status is 1 when any check failed.
#
#   scripts/systemd-test.sh [--root DIR] [--refresh-root] [--deb FILE] [--keep]
#
#   --root DIR       the cached Debian root (default build/nspawn-root): made with
#                    debootstrap when missing, then only read (each run boots an overlay
#                    of it, so every run starts from the same clean system)
#   --refresh-root   make the cached root again
#   --deb FILE       install this package instead of building one with scripts/package.sh
#   --keep           leave the run's tree (build/nspawn-run) for inspection
#
# Without debian/ in the tree, imgd is installed with `cmake --install` and a sysusers file
# instead, and the upgrade check is skipped.
#
# Needs root, and: debootstrap, systemd-container (installed when missing), the build
# dependencies (scripts/deps.sh --package), and Debian's mirror, for the first debootstrap.
# The machine needs no systemd of its own: the container's systemd is PID 1 of its own PID
# namespace, and commands run inside it with nsenter.
set -uo pipefail
cd "$(dirname "$0")/.."
top=$PWD
t_start=$(date +%s)

base=$top/build/nspawn-root
refresh=0
deb=
keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --root) base=$2; shift ;;
        --refresh-root) refresh=1 ;;
        --deb) deb=$(realpath "$2"); shift ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "systemd-test.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
base=$(realpath -m "$base")
run=$(dirname "$base")/nspawn-run
root=$run/root

die() { echo "systemd-test.sh: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, systemd-nspawn, mount)"

# ---- results ---------------------------------------------------------------------------
n_ok=0 n_fail=0 n_skip=0
ok() { n_ok=$((n_ok + 1)); printf 'ok    %s: %s\n' "$1" "$2"; }
fail() { n_fail=$((n_fail + 1)); printf 'FAIL  %s: %s\n' "$1" "$2"; }
skip() { n_skip=$((n_skip + 1)); printf 'SKIP: %s\n' "$1"; }
# check NAME OBSERVED CONDITION...: ok when the command CONDITION succeeds.
check() {
    local name=$1 seen=$2
    shift 2
    if "$@"; then ok "$name" "$seen"; else fail "$name" "$seen"; fi
}
step() { printf '== %s (%ds)\n' "$*" $(($(date +%s) - t_start)); }

# ---- prerequisites ---------------------------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if [ ${#need[@]} -gt 0 ]; then
    step "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
        die "cannot install ${need[*]}"
fi
mode=cmake
[ -f debian/control ] && mode=deb
[ -n "$deb" ] && mode=deb
if [ $mode = deb ] && [ -z "$deb" ]; then
    scripts/deps.sh --package || die "scripts/deps.sh --package failed"
else
    scripts/deps.sh || die "scripts/deps.sh failed"
fi

# ---- the package (or a cmake build) ----------------------------------------------------
# A package built from the same tree is reused: its key is what scripts/package.sh copies
# (tracked files as they are now, and untracked ones not ignored), this script aside.
tree_key() {
    git ls-files -z --cached --others --exclude-standard -- . ':!scripts/systemd-test.sh' |
        xargs -0 -r sha256sum 2>/dev/null | sha256sum | cut -d' ' -f1
}
debdir=$top/build/nspawn-deb
if [ $mode = deb ] && [ -z "$deb" ]; then
    key=$(tree_key)
    deb=$(ls "$debdir"/imgd_*.deb 2>/dev/null | head -n1)
    if [ -n "$deb" ] && [ "$(cat "$debdir/.tree-key" 2>/dev/null)" = "$key" ]; then
        step "package: $deb (built from this tree before)"
    else
        step "building the package (scripts/package.sh)"
        rm -rf "$debdir"
        mkdir -p "$debdir"
        scripts/package.sh "$debdir" >"$debdir/package.log" 2>&1
        rc=$?
        deb=$(ls "$debdir"/imgd_*.deb 2>/dev/null | head -n1)
        [ -n "$deb" ] || { tail -n 30 "$debdir/package.log" >&2; die "no package was built"; }
        [ $rc -eq 0 ] || echo "note: scripts/package.sh exited $rc (lintian): $debdir/package.log"
        echo "$key" >"$debdir/.tree-key"
    fi
fi
build=$top/build-nspawn
step "building imgd-mksample$([ $mode = cmake ] && echo ', imgd, imgctl, imgd-worker') in $build"
cmake -S . -B "$build" -DIMGD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_INSTALL_PREFIX=/usr >/dev/null || die "cmake configure failed"
cmake --build "$build" -j"$(nproc)" >"$build/build.log" 2>&1 ||
    { tail -n 30 "$build/build.log" >&2; die "build failed"; }

# ---- the cached root -------------------------------------------------------------------
# Everything the checks need is in it, so the booted system needs no network: imgd's
# runtime libraries, systemd, curl and jq for the checks, fonts for text watermarks.
include=systemd,systemd-sysv,dbus,libvips42,libsqlite3-0,libconfig9,libsystemd0,libjansson4
include=$include,libssl3,libmicrohttpd12,fonts-dejavu-core,adduser,curl,jq,ca-certificates,procps
mirror() {
    # The first Debian (not security) URI of apt's sources, else the default mirror.
    local u
    u=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
            /etc/apt/sources.list 2>/dev/null | grep -v security | grep -oE 'https?://[^ ]+/debian/?' |
            head -n1)
    echo "${u:-http://deb.debian.org/debian}"
}
if [ $refresh -eq 1 ] || [ "$(cat "$base/.imgd-root" 2>/dev/null)" != "$include" ]; then
    url=$(mirror)
    step "debootstrap bookworm from $url into $base (once; minutes)"
    rm -rf "$base" "$base.new"
    mkdir -p "$(dirname "$base")"
    if ! debootstrap --variant=minbase --include="$include" bookworm "$base.new" "$url" \
            >"$base.log" 2>&1; then
        tail -n 20 "$base.log" >&2
        die "debootstrap failed: $base.log"
    fi
    # No login prompt on the console; apt's timers would only compete with the checks.
    chroot "$base.new" systemctl mask console-getty.service apt-daily.timer \
           apt-daily-upgrade.timer e2scrub_all.timer >/dev/null 2>&1
    chroot "$base.new" apt-get clean
    echo "$include" >"$base.new/.imgd-root"
    mv "$base.new" "$base"
else
    step "cached root $base"
fi

# ---- a fresh system: an overlay of the cached root -------------------------------------
nspawn_pid=
leader=
overlay=0
cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        # SIGRTMIN+4 asks systemd to power off; nspawn exits when it has.
        [ -n "$leader" ] && kill -s RTMIN+4 "$leader" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$nspawn_pid" 2>/dev/null && kill -KILL "$nspawn_pid" 2>/dev/null
        wait "$nspawn_pid" 2>/dev/null
    fi
    [ $overlay -eq 1 ] && umount "$root" 2>/dev/null
    [ $keep -eq 0 ] && rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$run"
mkdir -p "$run/upper" "$run/work" "$root"
# Before the boot: the package's dependencies. Those the cached root lacks (a dependency
# added since it was made) are installed into it from the mirror, once.
if [ $mode = deb ]; then
    deps=$(dpkg-deb -f "$deb" Depends)
    if ! chroot "$base" apt-get satisfy -y -qq "$deps" >"$run/satisfy.log" 2>&1; then
        step "adding the package's dependencies to the cached root"
        chroot "$base" sh -c 'apt-get update -qq && apt-get satisfy -y -qq "$1" && apt-get clean' \
               sh "$deps" >>"$run/satisfy.log" 2>&1 || die "cannot install $deps: $run/satisfy.log"
    fi
fi
if mount -t overlay overlay -o "lowerdir=$base,upperdir=$run/upper,workdir=$run/work" "$root" \
        2>"$run/mount.err"; then
    overlay=1
else
    step "overlayfs failed ($(cat "$run/mount.err")): copying the root"
    cp -a "$base/." "$root/"
fi

# Runs a command in the container: all its namespaces, a clean environment.
X() {
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER= \
        SYSTEMD_COLORS=0 nsenter -t "$leader" -a "$@"
}
# As X, with a shell command line.
XS() { X sh -c "$1"; }
imgctl() { X imgctl "$@"; }
prop() { X systemctl show -p "$2" --value "$1"; }
# wait_for SECONDS COMMAND...: until COMMAND succeeds; 1 on time-out.
wait_for() {
    local end=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -ge $end ] && return 1
        sleep 0.2
    done
}
is_active() { [ "$(prop imgd ActiveState)" = active ]; }
# drop NAME...: www-data copies each sample into the upload folder under a hidden name
# and renames it, as an uploader does.
drop() {
    local f
    for f in "$@"; do
        X runuser -u www-data -- sh -c \
            "cp /var/tmp/imgd-samples/$f /srv/uploads/avatars/.$f.part &&
             mv /srv/uploads/avatars/.$f.part /srv/uploads/avatars/$f" || return 1
    done
}
jobs_json() { imgctl jobs --limit 1000 --json; }
status_field() { imgctl status --json | jq -r "$1"; }
running() { [ "$(status_field '.jobs.running // 0')" -ge "$1" ] 2>/dev/null; }
journal_since() { X journalctl --no-pager -q -o cat --since "@$1" "${@:2}"; }

if [ $mode = deb ]; then
    cp "$deb" "$root/var/tmp/"
else
    DESTDIR=$root cmake --install "$build" --prefix /usr >"$run/install.log" 2>&1 ||
        die "cmake --install failed: $run/install.log"
    printf '%s\n' 'u imgd - "imgd image pipeline daemon" /var/lib/imgd' 'g imgd-upload -' \
           'm imgd imgd-upload' >"$root/usr/lib/sysusers.d/imgd.conf"
fi

# Sample images, made on the host with imgd's own generator (once, next to the cached root)
# and bound read-only into the container: small ones, and large PNGs (no shrink-on-load)
# that keep both workers busy for a second or two each.
samples=$(dirname "$base")/nspawn-samples
if [ ! -f "$samples/.done" ]; then
    step "making sample images in $samples"
    rm -rf "$samples" && mkdir -p "$samples"
    for i in 1 2 3; do
        "$build/imgd-mksample" "$samples/small$i.jpg" 800 600 --seed $((100 + i)) >/dev/null
    done
    for i in $(seq 1 8); do
        "$build/imgd-mksample" "$samples/big$i.png" 5000 4000 --seed $((200 + i)) >/dev/null &
        [ $((i % 2)) -eq 0 ] && wait
    done
    wait
    chmod -R a+rX "$samples"
    touch "$samples/.done"
fi

step "booting the container (systemd-nspawn -b)"
systemd-nspawn -D "$root" -b --register=no --keep-unit --private-network -M imgd-test \
    --bind-ro="$samples:/var/tmp/imgd-samples" --console=read-only </dev/null >"$run/console.log" 2>&1 &
nspawn_pid=$!
# The leader is the container's init: the child of nspawn that runs systemd.
for _ in $(seq 150); do
    for p in $(pgrep -P "$nspawn_pid"); do
        [ "$(cat /proc/"$p"/comm 2>/dev/null)" = systemd ] && leader=$p
    done
    [ -n "$leader" ] && break
    kill -0 "$nspawn_pid" 2>/dev/null || break
    sleep 0.2
done
if [ -z "$leader" ]; then
    cat "$run/console.log" >&2
    die "the container did not boot (console above)"
fi
# systemctl answers once systemd listens on its private socket; then wait for the boot.
state=
for _ in $(seq 150); do
    state=$(X systemctl is-system-running --wait 2>&1) && break
    case $state in running|degraded|maintenance|stopping) break ;; esac
    sleep 0.2
done
step "booted: leader pid $leader, system $state"
X systemctl --failed --no-legend --plain | sed 's/^/  failed unit: /'

# ---- install -----------------------------------------------------------------------------
# The upload setup of README.md, "Uploads from a web server": the web server's user in
# imgd-upload, the upload folder group-writable and setgid to it.
upload_setup() {
    XS 'adduser --quiet www-data imgd-upload &&
        install -d -m 2775 -o imgd -g imgd-upload /srv/uploads /srv/uploads/avatars &&
        install -d -m 0755 -o imgd -g imgd /srv/media /srv/media/avatars'
}
if [ $mode = deb ]; then
    step "installing $(basename "$deb")"
    XS "DEBIAN_FRONTEND=noninteractive apt-get install -y -q /var/tmp/$(basename "$deb")" \
        </dev/null >"$run/install.log" 2>&1 || { tail -n 30 "$run/install.log"; die "apt-get install failed"; }
    # The package enables and starts imgd at once: say how that went, before the upload
    # folder of the shipped configuration exists.
    echo "note: after apt-get install: imgd $(prop imgd ActiveState) ($(prop imgd Result)," \
         "status $(prop imgd ExecMainStatus))$(X journalctl -q -o cat SYSLOG_IDENTIFIER=imgd -p err -n 1 | sed 's/^/: /')"
    upload_setup
    X systemctl restart imgd
else
    step "installing with cmake --install (no debian/ in this tree)"
    X systemd-sysusers
    upload_setup
    X systemctl daemon-reload
    X systemctl enable --now imgd 2>/dev/null
fi

# ---- checks ----------------------------------------------------------------------------
step "checks"

# The unit is up and told systemd so: Type=notify is "activating" until READY=1.
wait_for 30 is_active
st=$(prop imgd StatusText)
check "active, READY and STATUS=" \
      "$(prop imgd ActiveState)/$(prop imgd SubState), Type=$(prop imgd Type), StatusText=\"$st\"" \
      test "$(prop imgd ActiveState)/$(prop imgd SubState)" = active/running -a -n "$st"

# Hardening as systemd sees it.
score=$(X systemd-analyze security imgd.service --no-pager 2>&1 |
            sed -n 's/.*Overall exposure level for imgd.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security" "exposure ${score:-?} (at most 2.0 wanted)" \
      awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }'

# W^X in the service's mount namespace: each place it can write, written as root there,
# must refuse to run a program; the programs stay executable.
main=$(prop imgd MainPID)
wx=
wx_bad=0
for d in /tmp /var/tmp /var/lib/imgd /run/imgd /dev/shm /srv/uploads/avatars /srv/media/avatars; do
    r=$(X nsenter -t "$main" -m sh -c "f=$d/.wx-\$\$; cp /bin/true \$f 2>/dev/null || { echo ro; exit; };
            if \$f 2>/dev/null; then echo EXEC; else echo noexec; fi; rm -f \$f")
    wx="$wx $d=$r"
    [ "$r" = noexec ] || wx_bad=1
done
check "noexec where writable (systemd $(X systemctl --version | sed -n '1s/systemd \([0-9]*\).*/\1/p'))" \
      "${wx# }" test $wx_bad -eq 0

# Uploads by another user, published by the hardened unit.
drop small1.jpg small2.jpg small3.jpg
imgctl wait --timeout 120 >/dev/null
outs=$(X sh -c 'cd /srv/media/avatars && stat -c "%n %U %a" small*_*.webp 2>/dev/null')
n_outs=$(printf '%s\n' "$outs" | grep -c 'imgd 644$')
done_n=$(jobs_json | jq '[.jobs[] | select(.state == "done")] | length')
check "uploads by www-data published" \
      "sources $(X stat -c '%U:%G' /srv/uploads/avatars/small1.jpg), $done_n job(s) done, $n_outs/9 outputs imgd-owned 0644" \
      test "$done_n" = 3 -a "$n_outs" = 9

# systemctl stop, then restart, while workers are busy: no attempt is used.
stop_restart() { # VERB FILES...: drop, wait for 2 running jobs, systemctl VERB; prints the counts
    local verb=$1 t0 took r
    shift
    drop "$@"
    wait_for 60 running 2 || { echo "no 2 jobs running"; return; }
    r=$(status_field '.jobs.running')
    t0=$(date +%s%N)
    X systemctl "$verb" imgd
    took=$((($(date +%s%N) - t0) / 1000000))
    echo "$verb with $r running took ${took} ms, $(journal_since "$(($(date +%s) - 70))" -u imgd IMGD_EVENT=released | wc -l) released"
}
s1=$(stop_restart stop big1.png big2.png big3.png big4.png)
X systemctl start imgd
s2=$(stop_restart restart big5.png big6.png big7.png big8.png)
imgctl wait --timeout 300 >/dev/null
big=$(jobs_json | jq -c '[.jobs[] | select(.source | test("big"))]')
summary=$(echo "$big" | jq -r 'group_by(.state + " attempt " + (.attempts | tostring)) |
                               map("\(length) \(.[0].state) at attempt \(.[0].attempts)") | join(", ")')
history=$(for id in $(echo "$big" | jq '.[].id'); do imgctl show "$id" --json | jq '.job.errors // [] | length'; done |
              awk '{ s += $1 } END { print s + 0 }')
check "stop and restart with jobs running cost no attempt" \
      "$s1; $s2; then: $summary; $history error(s) in their histories" \
      test "$(echo "$big" | jq '[.[] | select(.state == "done" and .attempts == 1)] | length')" = 8 \
           -a "$history" = 0

# systemctl reload with a bad configuration: fails, says why in the journal, and the running
# configuration stays. Two kinds: a setting imgd does not know (imgctl, which ExecReload=
# runs, reads the file first), and a watched folder that is missing (imgd itself refuses).
XS 'cp /etc/imgd/imgd.conf /var/tmp/imgd.conf.good'
bad_reload() { # NAME SED-SCRIPT GREP-PATTERN
    local t0 rc why
    XS "sed -e '$2' /var/tmp/imgd.conf.good > /etc/imgd/imgd.conf"
    t0=$(date +%s)
    sleep 1
    X systemctl reload imgd >"$run/reload.out" 2>&1
    rc=$?
    why=$(journal_since "$t0" -u imgd | grep -m1 -e "$3")
    check "reload with $1 fails" \
          "exit $rc, journal: \"${why:-nothing}\", unit $(prop imgd ActiveState)" \
          test $rc -ne 0 -a -n "$why" -a "$(prop imgd ActiveState)" = active
}
bad_reload "an unknown setting" '$a bogus_setting = 1;' bogus_setting
bad_reload "a missing watched folder" 's|"/srv/uploads/avatars"|"/srv/uploads/missing"|' /srv/uploads/missing
XS 'cp /var/tmp/imgd.conf.good /etc/imgd/imgd.conf'
X systemctl reload imgd || fail "reload of the good configuration" "exit $?"
check "after the rejected reloads, the watch is kept" "$(status_field '.watches[].path')" \
      test "$(status_field '.watches[].path')" = /srv/uploads/avatars

# A bad configuration at start: a failed unit with status 78, no restart loop.
XS 'echo "bogus_setting = 1;" >> /etc/imgd/imgd.conf'
X systemctl restart imgd 2>/dev/null
rc=$?
sleep 7 # RestartSec=2s: a loop would have restarted it 3 times by now
seen="restart exit $rc, $(prop imgd ActiveState), Result=$(prop imgd Result), status $(prop imgd ExecMainStatus), NRestarts=$(prop imgd NRestarts)"
check "bad configuration at start: failed, no loop" "$seen" \
      test "$(prop imgd ActiveState)/$(prop imgd Result)/$(prop imgd ExecMainStatus)" = failed/exit-code/78 \
           -a "$(prop imgd NRestarts)" -le 1
XS 'cp /var/tmp/imgd.conf.good /etc/imgd/imgd.conf'
X systemctl reset-failed imgd
X systemctl start imgd

# A hung daemon: SIGSTOP stops the pings; WatchdogSec=30s, then a restart.
wait_for 30 is_active
main=$(prop imgd MainPID)
n0=$(prop imgd NRestarts)
t0=$(date +%s)
X kill -STOP "$main"
restarted() { local m; m=$(prop imgd MainPID); [ "$m" != 0 ] && [ "$m" != "$main" ] && is_active; }
wait_for 90 restarted
took=$(($(date +%s) - t0))
wd=$(journal_since "$t0" -u imgd | grep -m1 -i watchdog)
check "watchdog restarts a stopped daemon" \
      "pid $main -> $(prop imgd MainPID) after ${took} s, NRestarts $n0 -> $(prop imgd NRestarts), journal: \"${wd:-nothing}\"" \
      restarted

# Journal fields: a job's own lines, and the done lines by MESSAGE_ID.
done_id=$(sed -n 's/.*LOG_JOB_DONE.*"done", *"\([0-9a-f]\{32\}\)".*/\1/p' src/shared/log.c)
[ -n "$done_id" ] || done_id=73e4f80e147c457693a399f5f03c80cf
j1=$(X journalctl --no-pager -o json IMGD_JOB_ID=1)
j1_imgd=$(echo "$j1" | jq -r 'select(.SYSLOG_IDENTIFIER | test("^imgd")) | .MESSAGE' | grep -c .)
j1_other=$(echo "$j1" | jq -r 'select(.SYSLOG_IDENTIFIER | test("^imgd") | not) | .SYSLOG_IDENTIFIER' | grep -c .)
check "journalctl IMGD_JOB_ID=1" "$j1_imgd line(s) of imgd, $j1_other of others ($(echo "$j1" | jq -r .IMGD_EVENT | sort -u | tr '\n' ' '))" \
      test "$j1_imgd" -ge 2 -a "$j1_other" = 0
dn=$(X journalctl --no-pager -o json MESSAGE_ID="$done_id")
dn_done=$(echo "$dn" | jq -r 'select(.IMGD_EVENT == "done") | .IMGD_JOB_ID' | sort -u | grep -c .)
dn_other=$(echo "$dn" | jq -r 'select(.IMGD_EVENT != "done") | .MESSAGE' | grep -c .)
check "journalctl MESSAGE_ID=$done_id" "done lines of $dn_done job(s), $dn_other other line(s)" \
      test "$dn_done" -ge 11 -a "$dn_other" = 0

# An upgrade over itself keeps the operator's configuration.
if [ $mode = deb ]; then
    XS 'sed -i "s/^#workers = 2;/workers = 2;  # edited by systemd-test/" /etc/imgd/imgd.conf'
    sum0=$(X sha256sum /etc/imgd/imgd.conf | cut -c1-16)
    v0=$(X dpkg-query -W -f '${Version}' imgd)
    # The same package with a higher version: what dpkg sees in a real upgrade.
    rm -rf "$run/repack" && mkdir -p "$run/repack"
    dpkg-deb -R "$deb" "$run/repack/pkg"
    v1="$v0+nspawn1"
    sed -i "s/^Version: .*/Version: $v1/" "$run/repack/pkg/DEBIAN/control"
    dpkg-deb -b -Zxz "$run/repack/pkg" "$root/var/tmp/imgd-upgrade.deb" >/dev/null
    pid0=$(prop imgd MainPID)
    XS 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q /var/tmp/imgd-upgrade.deb' \
        </dev/null >"$run/upgrade.log" 2>&1
    rc=$?
    wait_for 30 is_active
    sum1=$(X sha256sum /etc/imgd/imgd.conf | cut -c1-16)
    left=$(X sh -c 'ls /etc/imgd/ | grep -v "^imgd.conf$" | tr "\n" " "')
    seen="apt-get exit $rc, $v0 -> $(X dpkg-query -W -f '${Version}' imgd), conf $sum0 -> $sum1"
    seen="$seen, /etc/imgd extra: ${left:-none}, unit $(prop imgd ActiveState) (pid $pid0 -> $(prop imgd MainPID))"
    check "upgrade over itself keeps the edited imgd.conf" "$seen" \
          test $rc = 0 -a "$sum0" = "$sum1" -a "$(X dpkg-query -W -f '${Version}' imgd)" = "$v1" \
               -a -z "$left" -a "$(prop imgd ActiveState)" = active
    X grep -q "edited by systemd-test" /etc/imgd/imgd.conf ||
        fail "edited line kept" "$(X grep -n workers /etc/imgd/imgd.conf)"
else
    skip "upgrade: no Debian package in this tree (installed with cmake --install)"
fi

# /metrics and /health through the socket-activated HTTP endpoint, enabled with README.md's
# command while imgd runs; then with imgd stopped and only systemd listening, the first
# connection starts imgd, which takes the socket.
if X test -f /lib/systemd/system/imgd-http.socket -o -f /usr/lib/systemd/system/imgd-http.socket; then
    cmd=$(sed -n 's/^sudo \(systemctl stop imgd && .*imgd-http.socket.*\)$/\1/p' README.md | sed 's/sudo //g')
    XS "$cmd" >"$run/socket.log" 2>&1
    rc=$?
    listen=$(prop imgd-http.socket Listen | head -n1)
    addr=${listen% *}
    case $addr in [0-9]*:*) ;; [0-9]*) addr=127.0.0.1:$addr ;; \[::\]:*) addr=127.0.0.1:${addr##*:} ;; esac
    m=$(X curl -s -m 30 "http://$addr/metrics")
    check "README's enable of imgd-http.socket with imgd running" \
          "'$cmd': exit $rc $(head -c 200 "$run/socket.log" | tr '\n' ' '), socket $(prop imgd-http.socket ActiveState), imgd $(prop imgd ActiveState), /metrics: $(echo "$m" | grep -c '^imgd_') imgd_ lines" \
          test -n "$cmd" -a $rc = 0 -a "$(prop imgd-http.socket ActiveState)" = active -a \
               "$(echo "$m" | grep -c '^imgd_build_info')" -ge 1
    X systemctl stop imgd
    h=$(X curl -s -m 30 -o /dev/null -w '%{http_code}' "http://$addr/health")
    state=$(prop imgd ActiveState)
    m=$(X curl -s -m 30 "http://$addr/metrics")
    check "/metrics and /health through imgd-http.socket ($listen), imgd stopped" \
          "socket $(prop imgd-http.socket ActiveState), GET /health with imgd stopped: HTTP $h, imgd then $state; /metrics: $(echo "$m" | grep -c '^imgd_') imgd_ lines, $(echo "$m" | grep -m1 '^imgd_build_info')" \
          test "$h" = 200 -a "$state" = active -a "$(echo "$m" | grep -c '^imgd_build_info')" -ge 1
else
    skip "no imgd-http.socket in this build"
fi

X systemctl --failed --no-legend --plain | sed 's/^/  failed unit: /'
took=$(($(date +%s) - t_start))
printf 'systemd-test: %d passed, %d failed, %d skipped\n' $n_ok $n_fail $n_skip
printf 'time: %d s (%dm%02ds)\n' "$took" $((took / 60)) $((took % 60))
[ $n_fail -eq 0 ]
