#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The full-size crash battery (issue 3): builds imgd with its fault points and runs
# tests/integration/test-crash.c with IMGD_CRASH_BATTERY=full: 60 images, 120 rounds of SIGKILL to the
# daemon with worker kills in between, 60 rounds of it during a backfill of a variant added
# to 60 done sources (issue 17), 60 rounds of it while sources of a retracting watch are
# deleted, moved out and renamed (issue 17), the crash points, the power-cut trials and disk
# full.
# Prints the counts (kills, jobs, lost, corrupt, duplicate, leftover, stuck) and the time
# from restart to the socket answering. CI runs the quick size as part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh --tests
cmake -S . -B build -DIMGD_TESTS=ON -DIMGD_FAULT_INJECTION=ON -DIMGD_WERROR=ON \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
start=$(date +%s)
IMGD_CRASH_BATTERY=full build/tests/test-crash 2>&1 | grep -v '^imgd' || true
echo "crash battery finished in $(( $(date +%s) - start )) s"
