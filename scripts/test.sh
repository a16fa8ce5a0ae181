#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what is missing, builds imgd with warnings as errors, and runs every test with
# ctest; then builds again with AddressSanitizer and UndefinedBehaviorSanitizer and runs the
# tests once more. CI (.ci/run) calls exactly this.
#   scripts/test.sh            everything
#   scripts/test.sh --no-asan  skip the sanitizer pass
set -euo pipefail
cd "$(dirname "$0")/.."

asan=1
[[ "${1:-}" == "--no-asan" ]] && asan=0

scripts/deps.sh --tests
jobs=$(nproc)

echo "== build (warnings as errors) =="
cmake -S . -B build -DIMGD_TESTS=ON -DIMGD_FAULT_INJECTION=ON -DIMGD_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
echo "== tests =="
ctest --test-dir build --output-on-failure -j"$jobs"

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
