#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The demo: installs what is missing, builds imgd, starts it on the example configuration
# (etc/imgd.conf, with its /srv, /var/lib and /run paths moved under ./demo so no root-owned
# tree is touched), drops a few sample images into the upload folder, waits until they are
# processed, shows `imgctl status` and the published files, and stops the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

scripts/deps.sh
echo "== building =="
cmake -S . -B build -DIMGD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

demo=$top/demo
rm -rf "$demo"
mkdir -p "$demo/srv/uploads/avatars" "$demo/var/lib/imgd" "$demo/run/imgd"
sed -e "s|\"/srv/|\"$demo/srv/|g" -e "s|\"/var/lib/imgd\"|\"$demo/var/lib/imgd\"|" \
    -e "s|\"/run/imgd/|\"$demo/run/imgd/|" etc/imgd.conf > "$demo/imgd.conf"
echo "== configuration: $demo/imgd.conf (etc/imgd.conf with paths under ./demo) =="
build/imgd --check-config -c "$demo/imgd.conf"

echo "== starting imgd =="
build/imgd -c "$demo/imgd.conf" 2> "$demo/imgd.log" &
imgd_pid=$!
trap 'kill $imgd_pid 2>/dev/null || true' EXIT
# Exit status 3: no answer within 10 s; 0, or 1 for an alert, is an answer.
rc=0; build/imgctl -c "$demo/imgd.conf" --connect-timeout 10 status >/dev/null 2>&1 || rc=$?
if [ "$rc" -eq 3 ]; then
    echo "imgd did not start; see $demo/imgd.log" >&2
    exit 1
fi

echo "== dropping sample images into $demo/srv/uploads/avatars =="
samples=$demo/samples
mkdir -p "$samples"
build/imgd-mksample "$samples/alice.jpg" 3000 2000 --seed 1
build/imgd-mksample "$samples/bob.jpg" 1200 1600 --seed 2 --orientation 6
build/imgd-mksample "$samples/carol.png" 800 800 --seed 3 --alpha
build/imgd-mksample "$samples/dave.webp" 640 480 --seed 4
printf 'this is not an image\n' > "$samples/notes.jpg"
start=$(date +%s.%N)
cp "$samples/alice.jpg" "$demo/srv/uploads/avatars/"            # written in place
mkdir -p "$demo/srv/uploads/avatars/team"
mv "$samples/bob.jpg" "$demo/srv/uploads/avatars/team/bob.jpg"    # renamed in
cp "$samples/carol.png" "$samples/dave.webp" "$samples/notes.jpg" "$demo/srv/uploads/avatars/"

build/imgctl -c "$demo/imgd.conf" wait --timeout 60
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" 'BEGIN { printf "== all jobs finished %.2f s after the first drop ==\n", e - s }'

echo
build/imgctl -c "$demo/imgd.conf" status || echo "(imgctl status exited $?: an alert is active)"
echo
build/imgctl -c "$demo/imgd.conf" jobs
echo
echo "== published files =="
find "$demo/srv/media" -type f -printf '%p\t%s bytes\n' | sort
echo
echo "== stopping imgd =="
kill -TERM $imgd_pid
wait $imgd_pid || true
trap - EXIT
echo "daemon log: $demo/imgd.log"
