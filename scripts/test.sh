#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what is missing, checks the C sources' format (scripts/format.sh --check), builds
# imgd with warnings as errors, and runs every test with ctest; then builds again with
# AddressSanitizer and UndefinedBehaviorSanitizer and runs the tests once more; with --systemd
# (as root) it also checks the unit under a real systemd in a Debian 12 container
# (scripts/systemd-test.sh: 8-23 minutes cold, 1 to 3.5 with its root cached).
# CI (.ci/run) calls exactly this.
#   scripts/test.sh               everything
#   scripts/test.sh --no-asan     skip the sanitizer pass
#   scripts/test.sh --systemd     also run scripts/systemd-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

asan=1
systemd=0
for arg in "$@"; do
    case "$arg" in
    --no-asan) asan=0 ;;
    --systemd) systemd=1 ;;
    *) echo "test.sh: unknown option $arg (--no-asan, --systemd)" >&2; exit 2 ;;
    esac
done

scripts/deps.sh --tests
jobs=$(nproc)

echo "== format (scripts/format.sh --check) =="
scripts/format.sh --check

echo "== build (warnings as errors) =="
cmake -S . -B build -DIMGD_TESTS=ON -DIMGD_FAULT_INJECTION=ON -DIMGD_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
echo "== tests =="
ctest --test-dir build --output-on-failure -j"$jobs"

if [[ $systemd -eq 1 && $(id -u) -ne 0 ]]; then
    echo "== imgd under a real systemd: skipped, scripts/systemd-test.sh needs root =="
elif [[ $systemd -eq 1 ]]; then
    echo "== imgd under a real systemd (scripts/systemd-test.sh) =="
    scripts/systemd-test.sh
fi

if [[ $asan -eq 1 ]]; then
    echo "== build with AddressSanitizer + UndefinedBehaviorSanitizer =="
    cmake -S . -B build-asan -DIMGD_TESTS=ON -DIMGD_FAULT_INJECTION=ON -DIMGD_WERROR=ON -DCMAKE_BUILD_TYPE=Debug \
          -DSANITIZE=address,undefined >/dev/null
    cmake --build build-asan -j"$jobs"
    echo "== tests under sanitizers =="
    # libvips/GLib keep caches alive until exit; leaks are checked in imgd's own code.
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0 \
        ctest --test-dir build-asan --output-on-failure -j"$jobs"
fi
